// The parts distillation methods share (distill/common): σ draws against their closed forms
// and distributions, iCT's curriculum, and the distances.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>

#include "core/error.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "samplers/schedule.h"
#include "test_support.h"

namespace distillery {
namespace {

std::vector<int64_t> first_positions(int64_t n) {
  std::vector<int64_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), 0);
  return positions;
}

TEST(SigmaSampling, KarrasGridDrawsStayOnTheGridWithinTheirRange) {
  const KarrasGridSampler grid(0.002, 80.0);
  ASSERT_EQ(grid.ascending().size(), 1000u);
  EXPECT_NEAR(grid.ascending().front(), 0.002, 1e-15);
  EXPECT_NEAR(grid.ascending().back(), 80.0, 1e-12);
  const auto sigma = grid.draw(3, 7, first_positions(20000), 0.02, 0.98, torch::kFloat64);
  const double low = grid.ascending()[19], high = grid.ascending()[979];  // ⌊0.02·999⌋, ⌊0.98·999⌋
  EXPECT_GE(sigma.min().item<double>(), low);
  EXPECT_LE(sigma.max().item<double>(), high);
  // Uniform over the 961 allowed points: the median index is near the middle one.
  const auto index = torch::searchsorted(torch::tensor(grid.ascending(), torch::kFloat64), sigma);
  EXPECT_NEAR(index.to(torch::kFloat64).median().item<double>(), 499, 15);
}

TEST(SigmaSampling, LognormalAndUniformTimeFollowTheirDistributions) {
  const int64_t n = 40000;
  const auto log_sigma = lognormal_sigmas(1, 2, first_positions(n), -1.1, 2.0, torch::kFloat64).log();
  // Standard errors of the mean and of the standard deviation: 2/√n and 2/√(2n).
  EXPECT_NEAR(log_sigma.mean().item<double>(), -1.1, 4 * 2.0 / std::sqrt(n));
  EXPECT_NEAR(log_sigma.std().item<double>(), 2.0, 4 * 2.0 / std::sqrt(2.0 * n));
  const auto sigma = uniform_time_sigmas(1, 3, first_positions(n), torch::kFloat64);
  const auto t = sigma / (1 + sigma);
  EXPECT_NEAR(t.mean().item<double>(), 0.5, 4 * std::sqrt(1.0 / 12 / n));
  EXPECT_GT(t.min().item<double>(), 0);
  EXPECT_LT(t.max().item<double>(), 1);
  // The same (seed, stream, position) is the same draw in any batch.
  EXPECT_TRUE(torch::equal(lognormal_sigmas(1, 2, {5, 6}, -1.1, 2.0, torch::kFloat64), lognormal_sigmas(1, 2, first_positions(7), -1.1, 2.0, torch::kFloat64).narrow(0, 5, 2)));
}

TEST(SigmaSampling, IctCurriculumIsItsClosedForm) {
  // K = 400,000 (iCT's CIFAR-10 run), s0 = 10, s1 = 1280: K' = ⌊400000 / (log2 128 + 1)⌋ = 50,000.
  for (const auto& [step, expected] : {std::pair{0, 11}, {49999, 11}, {50000, 21}, {100000, 41}, {150000, 81}, {300000, 641}, {350000, 1281},
                                       {399999, 1281}})
    EXPECT_EQ(ict_discretization_steps(step, 400000), expected) << "step " << step;
  EXPECT_EQ(ict_discretization_steps(7, 10, 10, 10), 11);  // s0 = s1: a fixed grid
  EXPECT_THROW(ict_discretization_steps(0, 0), Error);
}

TEST(SigmaSampling, DiscretizedLognormalMatchesTheErfFormAndItsDraws) {
  auto grid = make_sigmas({ScheduleKind::Karras, 0.002, 80.0, 7.0}, 10);
  grid.pop_back();
  const std::vector<double> ascending(grid.rbegin(), grid.rend());
  const DiscretizedLognormal discrete(ascending, -1.1, 2.0);
  const auto& p = discrete.probabilities();
  ASSERT_EQ(p.size(), ascending.size() - 1);
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) total += std::erf((std::log(ascending[i + 1]) + 1.1) / (std::sqrt(2.0) * 2.0)) - std::erf((std::log(ascending[i]) + 1.1) / (std::sqrt(2.0) * 2.0));
  for (size_t i = 0; i < p.size(); ++i) {
    const double closed = (std::erf((std::log(ascending[i + 1]) + 1.1) / (std::sqrt(2.0) * 2.0)) - std::erf((std::log(ascending[i]) + 1.1) / (std::sqrt(2.0) * 2.0))) / total;
    EXPECT_NEAR(p[i], closed, 1e-15) << i;
  }
  const int64_t n = 50000;
  std::vector<double> counts(p.size(), 0.0);
  for (const auto i : discrete.draw(4, 5, first_positions(n))) counts[static_cast<size_t>(i)] += 1.0 / static_cast<double>(n);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(counts[i], p[i], 4 * std::sqrt(p[i] * (1 - p[i]) / static_cast<double>(n)) + 1e-4) << i;
}

TEST(Distances, PseudoHuberIsQuadraticBelowCAndLinearAbove) {
  const auto x = torch::zeros({3, 4}, torch::kFloat64);
  auto y = torch::zeros({3, 4}, torch::kFloat64);
  y[1][0] = 1e-4;  // ‖Δ‖ ≪ c
  y[2][0] = 10.0;  // ‖Δ‖ ≫ c
  const double c = 0.1;
  const auto d = pseudo_huber_distance(x, y, c);
  EXPECT_EQ(d[0].item<double>(), 0.0);
  // √(Δ² + c²) − c = Δ²/(2c) − Δ⁴/(8c³) + …: quadratic, to the next term.
  EXPECT_NEAR(d[1].item<double>(), 1e-8 / (2 * c) - 1e-16 / (8 * c * c * c), 1e-16);
  EXPECT_NEAR(d[2].item<double>(), 10.0 - c, 1e-3);
  EXPECT_NEAR(squared_l2_distance(x, y)[2].item<double>(), 100.0 / 4, 1e-12);
  EXPECT_NEAR(ict_pseudo_huber_c(3 * 32 * 32), 0.00054 * std::sqrt(3072.0), 1e-15);
  // The gradient is finite where x = y (unlike the L2 norm's).
  auto z = torch::zeros({1, 4}, torch::kFloat64).requires_grad_(true);
  pseudo_huber_distance(z, torch::zeros({1, 4}, torch::kFloat64), c).sum().backward();
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>());
  EXPECT_THROW(pseudo_huber_distance(x, torch::zeros({3, 5}, torch::kFloat64), c), Error);
}

TEST(Distances, FeatureDistanceGoesThroughTheFrozenClassifier) {
  const FeatureDistance distance(testing::kSourceDir / "assets/eval/fmnist-classifier.safetensors", torch::kCPU);
  torch::manual_seed(0);
  const auto target = torch::rand({2, 1, 28, 28}) * 2 - 1;
  auto x = (target + 0.3 * torch::randn({2, 1, 28, 28})).clamp(-1, 1).requires_grad_(true);
  EXPECT_EQ(distance(target, target).abs().max().item<double>(), 0.0);
  const auto d = distance(x, target);
  EXPECT_GT(d.min().item<double>(), 0.0);
  d.sum().backward();
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace distillery
