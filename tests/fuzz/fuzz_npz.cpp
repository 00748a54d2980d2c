// Any byte string must either unpack into members no larger than the archive's data can hold
// (deflate expands at most about 1032:1) whose .npy layouts lie inside them, or be rejected
// with distillery::Error; anything else (a crash, a sanitizer report, another exception type)
// is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "io/npy.h"
#include "io/npz_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto members = distillery::read_npz_members(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    for (const auto& [name, bytes] : members) {
      if (bytes.size() > size * 1032 + 1024) std::abort();
      const auto layout = distillery::parse_npy(bytes, name);
      if (layout.data_offset + layout.data_bytes != bytes.size()) std::abort();
    }
  } catch (const distillery::Error&) {
  }
  return 0;
}
