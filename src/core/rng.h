// defines: philox4x32_10, fill_normal, per_sample_normal
// Counter-based random numbers: the noise of sample `i` is a pure function of
// (seed, stream, i), so it never depends on batch size, thread count, process count or
// device. `stream` separates independent uses (initial noise, per-step sampler noise).
// Values are drawn on the host and copied to the device: the same bits on every device by
// construction (a device-side Philox would have to reproduce the host's log and cos exactly).
#pragma once

#include <c10/core/TensorOptions.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace at { class Tensor; }

namespace distillery {

// Philox4x32 with 10 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3").
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Standard normals for one sample (Box-Muller over Philox blocks), n values into out.
void fill_normal(uint64_t seed, uint64_t stream, uint64_t sample_index, double* out, size_t n);

// [indices.size(), *sample_shape] standard normal tensor with `options` (dtype and device);
// row r is sample indices[r].
at::Tensor per_sample_normal(uint64_t seed, uint64_t stream, const std::vector<int64_t>& indices,
                             const std::vector<int64_t>& sample_shape, const c10::TensorOptions& options);

// The streams the project uses, named so two uses never collide.
namespace noise_stream {
inline constexpr uint64_t initial = 0;       // a sampler's starting noise
inline constexpr uint64_t sampler_step = 1;  // + step index: stochastic samplers' fresh noise
}  // namespace noise_stream

}  // namespace distillery
