// defines: fnv1a64, fnv1a64_hex, file_fingerprint
// A stable 64-bit content hash (FNV-1a) to identify what an artifact was made from; not
// cryptographic, and not meant to be.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace distillery {

constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (unsigned char c : bytes) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

std::string fnv1a64_hex(std::string_view bytes);

// fnv1a64_hex of a file's bytes; Error naming the file when it cannot be read.
std::string file_fingerprint(const std::filesystem::path& path);

}  // namespace distillery
