// Any text, as a store's store.json or as its manifest.jsonl, must either give settings that
// are consistent (every stored step a grid index, every count bounded, the shard layout within
// reach) and entries that write back as the same line, or be rejected with distillery::Error
// (store.json) or listed as a problem (manifest lines); anything else (a crash, a sanitizer
// report, nlohmann's own exceptions) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/store_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto settings = distillery::StoreSettings::from_json(text, "fuzz");
    const auto sigmas = settings.stored_sigmas();
    if (sigmas.size() != settings.stored_steps.size() || settings.shard_count() < 1) std::abort();
    if (settings.shard_length(settings.shard_count() - 1) < 1) std::abort();
    if (distillery::StoreSettings::from_json(settings.to_json(), "fuzz").difference(settings)) std::abort();
  } catch (const distillery::Error&) {
  }
  std::vector<std::string> problems;
  for (const auto& entry : distillery::parse_manifest(text, &problems)) {
    const auto again = distillery::parse_manifest(distillery::manifest_line(entry));
    if (again.size() != 1 || again[0].file != entry.file || again[0].crc32 != entry.crc32 || again[0].bytes != entry.bytes) std::abort();
  }
  return 0;
}
