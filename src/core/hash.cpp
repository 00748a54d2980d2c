#include "core/hash.h"

#include <fmt/format.h>

namespace distillery {

std::string fnv1a64_hex(std::string_view bytes) { return fmt::format("{:016x}", fnv1a64(bytes)); }

}  // namespace distillery
