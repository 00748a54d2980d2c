// Any byte string must either parse into a layout whose data lie exactly inside the input, or
// be rejected with distillery::Error; anything else (a crash, a sanitizer report, another
// exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto layout = distillery::parse_npy(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    size_t count = 1;
    for (const auto d : layout.shape) count *= static_cast<size_t>(d);
    if (layout.data_offset + layout.data_bytes != size || count * distillery::npy_item_size(layout.type) != layout.data_bytes) std::abort();
  } catch (const distillery::Error&) {
  }
  return 0;
}
