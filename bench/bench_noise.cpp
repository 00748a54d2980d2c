// Where the counter-based noise should be drawn: on the host (core/rng.cpp: Philox4x32-10 and
// Box-Muller in glibc's double math, rounded, copied to the device) or on the device itself
// with the same Philox arithmetic in tensor operations. Both are timed side by side on the
// runtime's device (CUDA when present, else the CPU), and the counters say how many of the
// device draw's float32 values differ from the host's: the host draw is what every device
// must reproduce bit for bit.
#include <benchmark/benchmark.h>
#include <torch/types.h>
#include <torch/cuda.h>

#include <numbers>
#include <numeric>

#include "core/rng.h"

namespace distillery {
namespace {

constexpr int64_t kRows = 256, kValuesPerRow = 1024;  // a batch of 256 samples of 1×32×32
constexpr uint64_t kSeed = 0;

c10::Device bench_device() { return torch::cuda::is_available() ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU); }

std::vector<int64_t> first_indices(int64_t n) {
  std::vector<int64_t> indices(static_cast<size_t>(n));
  std::iota(indices.begin(), indices.end(), 0);
  return indices;
}

// Philox4x32-10 over int64 tensors holding 32-bit words: a 32×32-bit product fits 64 bits
// modulo 2^64 (two's complement wraps alike on every device), its halves are the mulhilo pair.
at::Tensor philox_words(const at::Tensor& rows, int64_t blocks, uint64_t stream, uint64_t seed) {
  const auto options = rows.options();
  const int64_t mask = 0xFFFFFFFF;
  const auto block = torch::arange(blocks, options).unsqueeze(0).expand({rows.size(0), blocks});
  const auto row = rows.unsqueeze(1).expand({rows.size(0), blocks});
  at::Tensor c0 = row.bitwise_and(mask), c1 = row.bitwise_right_shift(32).bitwise_and(mask), c2 = block.clone(),
             c3 = torch::full_like(block, static_cast<int64_t>(stream & mask));
  int64_t k0 = static_cast<int64_t>(seed & mask), k1 = static_cast<int64_t>((seed >> 32) & mask);
  for (int round = 0; round < 10; ++round) {
    const auto p0 = c0 * int64_t{0xD2511F53}, p1 = c2 * int64_t{0xCD9E8D57};
    const auto hi0 = p0.bitwise_right_shift(32).bitwise_and(mask), hi1 = p1.bitwise_right_shift(32).bitwise_and(mask);
    auto n0 = hi1.bitwise_xor(c1).bitwise_xor(k0), n1 = p1.bitwise_and(mask), n2 = hi0.bitwise_xor(c3).bitwise_xor(k1), n3 = p0.bitwise_and(mask);
    c0 = std::move(n0), c1 = std::move(n1), c2 = std::move(n2), c3 = std::move(n3);
    k0 = (k0 + 0x9E3779B9) & mask;
    k1 = (k1 + 0xBB67AE85) & mask;
  }
  return torch::stack({c0, c1, c2, c3}, 2);  // [rows, blocks, 4]
}

// The host draw's values (core/rng.cpp's layout: each block gives r0·cos, r0·sin, r1·cos, r1·sin)
// computed on `device` in float64 tensor operations.
at::Tensor device_side_normal(const std::vector<int64_t>& indices, int64_t per_row, uint64_t stream, const c10::Device& device) {
  const auto rows = torch::tensor(indices, torch::TensorOptions(torch::kInt64)).to(device);
  const auto words = philox_words(rows, (per_row + 3) / 4, stream, kSeed).to(torch::kFloat64);
  const auto uniform = (words + 0.5) * 0x1p-32;
  const auto u = uniform.view({rows.size(0), -1, 2, 2});  // [rows, blocks, pair, (radius word, angle word)]
  const auto r = (-2.0 * u.select(3, 0).log()).sqrt(), angle = 2.0 * std::numbers::pi * u.select(3, 1);
  return torch::stack({r * angle.cos(), r * angle.sin()}, 3).reshape({rows.size(0), -1}).narrow(1, 0, per_row);
}

void BM_HostNoiseCopiedToDevice(benchmark::State& state) {
  const auto device = bench_device();
  const auto indices = first_indices(kRows);
  for (auto _ : state) {
    auto noise = per_sample_normal(kSeed, noise_stream::initial, indices, {1, 32, 32}, torch::TensorOptions(torch::kFloat32).device(device));
    if (device.is_cuda()) torch::cuda::synchronize();
    benchmark::DoNotOptimize(noise.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * kRows * kValuesPerRow);
  state.SetLabel(device.str());
}
BENCHMARK(BM_HostNoiseCopiedToDevice)->Unit(benchmark::kMillisecond);

void BM_DeviceSideNoise(benchmark::State& state) {
  const auto device = bench_device();
  const auto indices = first_indices(kRows);
  for (auto _ : state) {
    auto noise = device_side_normal(indices, kValuesPerRow, noise_stream::initial, device).to(torch::kFloat32);
    if (device.is_cuda()) torch::cuda::synchronize();
    benchmark::DoNotOptimize(noise.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * kRows * kValuesPerRow);
  // Agreement with the host draw over 4M values: the Philox words must agree exactly; the
  // normals differ where the device's log, cos and sin round otherwise than glibc's.
  const auto many = first_indices(4096);
  const auto host = per_sample_normal(kSeed, noise_stream::initial, many, {kValuesPerRow}, torch::kFloat64);
  const auto there = device_side_normal(many, kValuesPerRow, noise_stream::initial, device).cpu();
  state.counters["values"] = static_cast<double>(host.numel());
  state.counters["float64_differ"] = host.ne(there).sum().item<double>();
  state.counters["float32_differ"] = host.to(torch::kFloat32).ne(there.to(torch::kFloat32)).sum().item<double>();
  state.counters["max_abs_diff"] = (host - there).abs().max().item<double>();
  state.SetLabel(device.str());
}
BENCHMARK(BM_DeviceSideNoise)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace distillery
