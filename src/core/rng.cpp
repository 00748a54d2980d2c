#include "core/rng.h"

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace distillery {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint64_t kMul0 = 0xD2511F53, kMul1 = 0xCD9E8D57;
  constexpr uint32_t kWeyl0 = 0x9E3779B9, kWeyl1 = 0xBB67AE85;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = kMul0 * ctr[0], p1 = kMul1 * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

void fill_normal(uint64_t seed, uint64_t stream, uint64_t sample_index, double* out, size_t n) {
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  // Strictly inside (0, 1) so log() is finite.
  auto uniform = [](uint32_t bits) { return (static_cast<double>(bits) + 0.5) * 0x1p-32; };
  for (size_t done = 0, block = 0; done < n; ++block) {
    DISTILLERY_CHECK(block <= UINT32_MAX, "per-sample noise request too large");
    const auto r = philox4x32_10({static_cast<uint32_t>(sample_index), static_cast<uint32_t>(sample_index >> 32),
                                  static_cast<uint32_t>(block), static_cast<uint32_t>(stream)},
                                 key);
    for (int pair = 0; pair < 2 && done < n; ++pair) {
      const double radius = std::sqrt(-2.0 * std::log(uniform(r[2 * pair])));
      const double angle = 2.0 * std::numbers::pi * uniform(r[2 * pair + 1]);
      out[done++] = radius * std::cos(angle);
      if (done < n) out[done++] = radius * std::sin(angle);
    }
  }
}

at::Tensor per_sample_normal(uint64_t seed, uint64_t stream, const std::vector<int64_t>& indices,
                             const std::vector<int64_t>& sample_shape, const c10::TensorOptions& options) {
  std::vector<int64_t> shape = {static_cast<int64_t>(indices.size())};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  auto values = torch::empty(shape, torch::kFloat64);
  const int64_t per_sample = indices.empty() ? 0 : values.numel() / static_cast<int64_t>(indices.size());
  double* data = values.data_ptr<double>();
  at::parallel_for(0, static_cast<int64_t>(indices.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      DISTILLERY_CHECK(indices[row] >= 0, "sample indices must be non-negative");
      fill_normal(seed, stream, static_cast<uint64_t>(indices[row]), data + row * per_sample,
                  static_cast<size_t>(per_sample));
    }
  });
  // Rounded on the host, so only the final dtype crosses to the device.
  return values.to(options.dtype().toScalarType()).to(options.device());
}

at::Tensor uniform_per_sample(uint64_t seed, uint64_t stream, const std::vector<int64_t>& positions) {
  const auto normal = per_sample_normal(seed, stream, positions, {}, torch::kFloat64);
  return (0.5 * torch::erfc(-normal / std::sqrt(2.0))).clamp(0.0, 1.0 - 1e-12);
}

}  // namespace distillery
