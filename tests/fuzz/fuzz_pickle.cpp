// Any byte string, read as a data pickle, must either give a value whose arrays hold exactly the
// bytes their shape and type declare, or be rejected with distillery::Error; anything else (a
// crash, a leak, a sanitizer report, another exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "core/error.h"
#include "io/pickle.h"

namespace {

void check(const distillery::PickleValue& value, size_t input_size) {
  using distillery::PickleValue;
  if (const auto* array = std::get_if<distillery::PickleArray>(&value.value)) {
    size_t bytes = static_cast<size_t>(array->dtype.back() - '0');
    for (const auto d : array->shape) bytes *= static_cast<size_t>(d);
    if (bytes != array->data.size() || array->data.size() > input_size) std::abort();
  }
  const auto children = [&](const distillery::PickleList& items) {
    for (const auto& item : items) check(*item, input_size);
  };
  if (const auto* list = std::get_if<distillery::PickleList>(&value.value)) children(*list);
  if (const auto* tuple = std::get_if<PickleValue::Tuple>(&value.value)) children(tuple->items);
  if (const auto* dict = std::get_if<PickleValue::Dict>(&value.value))
    for (const auto& [key, item] : *dict) check(*item, input_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    check(distillery::parse_pickle(bytes, "fuzz"), size);
  } catch (const distillery::Error&) {
  }
  return 0;
}
