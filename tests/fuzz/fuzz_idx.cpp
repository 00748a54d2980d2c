// Any byte string, read as an IDX image file and as an IDX label file, must either parse into a
// layout whose data fill the rest of the input exactly, or be rejected with distillery::Error;
// anything else (a crash, a sanitizer report, another exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "io/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const uint32_t magic : {distillery::kIdxUint8Images, distillery::kIdxUint8Labels}) {
    try {
      const auto layout = distillery::parse_idx(bytes, magic, "fuzz");
      size_t count = 1;
      for (const auto d : layout.dims) count *= static_cast<size_t>(d);
      if (layout.dims.size() != (magic & 0xff) || layout.data_offset + count != size) std::abort();
    } catch (const distillery::Error&) {
    }
  }
  return 0;
}
