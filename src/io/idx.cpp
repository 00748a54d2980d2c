#include "io/idx.h"

#include <fmt/format.h>

#include "core/error.h"

namespace distillery {

namespace {
// Larger than any real IDX file; bounds what a corrupt size field can make a reader allocate.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 32;

uint32_t be32(std::string_view b, size_t at) {
  const auto byte = [&](size_t i) { return uint32_t{static_cast<uint8_t>(b[at + i])}; };
  return byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
}
}  // namespace

IdxLayout parse_idx(std::string_view bytes, uint32_t magic, const std::string& where) {
  const size_t rank = magic & 0xff;
  DISTILLERY_CHECK(bytes.size() >= 4 + 4 * rank, Error("IDX file is truncated inside its header").file(where).got(fmt::format("{} bytes", bytes.size())));
  DISTILLERY_CHECK(be32(bytes, 0) == magic, Error("wrong IDX magic number")
                                                .file(where)
                                                .expected(fmt::format("0x{:08x} ({})", magic, rank == 3 ? "uint8 images" : "uint8 labels"))
                                                .got(fmt::format("0x{:08x}", be32(bytes, 0))));
  IdxLayout layout{{}, 4 + 4 * rank};
  uint64_t total = 1;
  for (size_t i = 0; i < rank; ++i) {
    layout.dims.push_back(be32(bytes, 4 + 4 * i));
    total *= static_cast<uint64_t>(layout.dims.back());  // ≤ 2^32 · (2^32 − 1): no overflow before the check
    DISTILLERY_CHECK(total <= kMaxIdxBytes, Error("IDX sizes are implausibly large").file(where));
  }
  const uint64_t expected = layout.data_offset + total;
  DISTILLERY_CHECK(bytes.size() == expected, Error(bytes.size() < expected ? "IDX file is truncated" : "IDX file has trailing bytes")
                                                 .file(where)
                                                 .expected(fmt::format("{} bytes", expected))
                                                 .got(fmt::format("{} bytes", bytes.size())));
  return layout;
}

}  // namespace distillery
