// Any byte string must either parse into records whose byte ranges lie inside the input, or be
// rejected with distillery::Error; anything else (a crash, a sanitizer report, another
// exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = distillery::SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz");
    uint64_t total = 0;
    for (const auto& record : file.tensors()) {
      const auto bytes = file.bytes(record);
      total += bytes.size();
      if (bytes.size() && (bytes.data()[0] | bytes.data()[bytes.size() - 1]) == 0x100) std::abort();
    }
    if (total > size) std::abort();
  } catch (const distillery::Error&) {
  }
  return 0;
}
