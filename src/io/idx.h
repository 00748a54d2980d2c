// defines: IdxLayout, parse_idx, kIdxUint8Images, kIdxUint8Labels
// The IDX format of (Fashion-)MNIST without tensors: a big-endian header (magic 0x000008TR, T the
// element type, R the rank, then R sizes) and the raw data after it. Parsing is for untrusted
// bytes (it is fuzzed); anything else is an Error naming `where` and what was expected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace distillery {

constexpr uint32_t kIdxUint8Images = 0x00000803, kIdxUint8Labels = 0x00000801;

struct IdxLayout {
  std::vector<int64_t> dims;
  size_t data_offset;  // where the uint8 data start; exactly product(dims) bytes follow
};

// The whole file's bytes, which must carry `magic` (its rank included) and be exactly as long as
// the header says.
IdxLayout parse_idx(std::string_view bytes, uint32_t magic, const std::string& where);

}  // namespace distillery
