// Counter-based noise: sample i's noise is a function of (seed, stream, i) only.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <numeric>

#include "core/rng.h"

namespace distillery {
namespace {

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v(static_cast<size_t>(end - begin));
  std::iota(v.begin(), v.end(), begin);
  return v;
}

TEST(Rng, PhiloxMatchesPublishedKnownAnswers) {
  // Random123 kat_vectors for philox4x32_10.
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Rng, SampleNoiseIsIndependentOfBatchSize) {
  const std::vector<int64_t> shape = {3, 5, 7};
  const auto all = per_sample_normal(42, noise_stream::initial, range(0, 64), shape, torch::kFloat32);
  for (int64_t batch : {1, 7, 64}) {
    std::vector<at::Tensor> parts;
    for (int64_t start = 0; start < 64; start += batch)
      parts.push_back(per_sample_normal(42, noise_stream::initial, range(start, std::min<int64_t>(start + batch, 64)), shape, torch::kFloat32));
    EXPECT_TRUE(torch::equal(torch::cat(parts), all)) << "batch " << batch;
  }
  // Arbitrary order and gaps (another process's share) give the same rows.
  const auto picked = per_sample_normal(42, noise_stream::initial, {63, 5, 17}, shape, torch::kFloat32);
  EXPECT_TRUE(torch::equal(picked[0], all[63]));
  EXPECT_TRUE(torch::equal(picked[1], all[5]));
  EXPECT_TRUE(torch::equal(picked[2], all[17]));
}

TEST(Rng, NoiseIsIndependentOfThreadCount) {
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const auto one = per_sample_normal(7, noise_stream::initial, range(0, 32), {100}, torch::kFloat64);
  torch::set_num_threads(std::max(2, threads));
  const auto many = per_sample_normal(7, noise_stream::initial, range(0, 32), {100}, torch::kFloat64);
  torch::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, many));
}

TEST(Rng, SeedsAndStreamsDiffer) {
  const auto a = per_sample_normal(1, noise_stream::initial, {0}, {64}, torch::kFloat64);
  EXPECT_FALSE(torch::equal(a, per_sample_normal(2, noise_stream::initial, {0}, {64}, torch::kFloat64)));
  EXPECT_FALSE(torch::equal(a, per_sample_normal(1, noise_stream::sampler_step, {0}, {64}, torch::kFloat64)));
  EXPECT_FALSE(torch::equal(a, per_sample_normal(1, noise_stream::initial, {1}, {64}, torch::kFloat64)));
}

TEST(Rng, ValuesAreStandardNormal) {
  const auto x = per_sample_normal(3, noise_stream::initial, range(0, 200), {1000}, torch::kFloat64).flatten();
  const double n = static_cast<double>(x.numel());
  // 200,000 draws: the mean's standard error is 1/√n ≈ 0.0022, the variance's √(2/n) ≈ 0.0032.
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(x.var().item<double>(), 1.0, 5 * std::sqrt(2 / n));
  EXPECT_NEAR((x.pow(4)).mean().item<double>(), 3.0, 0.05);
  EXPECT_NEAR((x.abs() < 1.0).to(torch::kFloat64).mean().item<double>(), 0.682689, 0.005);
}

}  // namespace
}  // namespace distillery
