// defines: PickleValue, PickleArray, parse_pickle
// A reader of Python pickles that holds data only: None, booleans, integers, floats, byte and
// text strings, lists, tuples, dicts and NumPy arrays (numpy.core.multiarray._reconstruct with
// its state, as NumPy pickles arrays at protocols 2 to 4). It runs nothing: every other global
// is refused, so a pickle that would call code is an error, not a call. It reads protocols 0-5
// as far as these values need (CIFAR-10's python batches were written with protocol 2).
// Parsing is for untrusted bytes (it is fuzzed); anything else is an Error naming `where`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace distillery {

struct PickleValue;
using PickleList = std::vector<std::shared_ptr<const PickleValue>>;

struct PickleArray {
  std::vector<int64_t> shape;
  std::string dtype;  // NumPy's type string: "u1", "<i8", "<f4", ...
  std::string data;   // the raw bytes, row-major (Fortran order is refused)
};

struct PickleValue {
  struct None {};
  // Dict keys are the keys' text (byte strings as they are), in the dict's order.
  using Dict = std::vector<std::pair<std::string, std::shared_ptr<const PickleValue>>>;
  struct Tuple {
    PickleList items;
  };
  struct Global {
    std::string name;  // "module.name" of an allowed global not yet called
  };
  struct Dtype {
    std::string type;
  };
  std::variant<None, bool, int64_t, double, std::string, PickleList, Tuple, Dict, PickleArray, Global, Dtype> value;

  // The dict entry `key`, or null.
  const PickleValue* find(std::string_view key) const;
};

// The object the pickle builds; its size is bounded by the input's (no opcode allocates more
// than a fixed multiple of the bytes it reads).
PickleValue parse_pickle(std::string_view bytes, const std::string& where);

}  // namespace distillery
