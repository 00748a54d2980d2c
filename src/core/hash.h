// defines: fnv1a64, fnv1a64_hex
// A stable 64-bit content hash (FNV-1a) to identify what an artifact was made from; not
// cryptographic, and not meant to be.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace distillery {

constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (unsigned char c : bytes) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

std::string fnv1a64_hex(std::string_view bytes);

}  // namespace distillery
