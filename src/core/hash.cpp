#include "core/hash.h"

#include <fmt/format.h>

#include <fstream>
#include <iterator>

#include "core/error.h"

namespace distillery {

std::string fnv1a64_hex(std::string_view bytes) { return fmt::format("{:016x}", fnv1a64(bytes)); }

std::string file_fingerprint(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DISTILLERY_CHECK(in, Error("cannot read file").file(path.string()));
  return fnv1a64_hex(std::string((std::istreambuf_iterator<char>(in)), {}));
}

}  // namespace distillery
