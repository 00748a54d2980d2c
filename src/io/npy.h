// defines: NpyType, NpyLayout, parse_npy, npy_preamble, npy_item_size
// numpy's .npy format without tensors: the preamble (magic "\x93NUMPY", version 1–3, header
// length, a Python-literal dict with 'descr', 'fortran_order' and 'shape') and the size of the
// raw C-order data after it. Parsing is for untrusted bytes (it is fuzzed); anything outside
// the supported subset is an Error naming `where` and what was expected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace distillery {

// The dtypes read and written: little-endian float64, float32, int64, and uint8.
enum class NpyType { Float64, Float32, Int64, UInt8 };
size_t npy_item_size(NpyType type);

struct NpyLayout {
  NpyType type;
  std::vector<int64_t> shape;
  size_t data_offset;  // where the data start
  size_t data_bytes;   // product(shape) · item size: exactly what follows the preamble
};

// A whole .npy member: the preamble must be valid and the data exactly as long as the shape says.
NpyLayout parse_npy(std::string_view member, const std::string& where);

// A version 1.0 preamble for data of this type and shape, padded as numpy pads it (to a
// multiple of 64 bytes, ending in '\n').
std::string npy_preamble(NpyType type, const std::vector<int64_t>& shape);

}  // namespace distillery
