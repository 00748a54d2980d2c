// The parts distillation methods share (distill/common): σ draws against their closed forms
// and distributions, iCT's curriculum, the distances, the few-step generator's backward
// simulation against the chain written out step by step, and the real-data stream.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <numeric>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/training_data.h"
#include "distill/common/few_step_generator.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "models/mlp.h"
#include "models/network_denoiser.h"
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

TEST(FewStepGenerator, EachRowIsTheStudentsOwnChainStoppedAtItsStartStep) {
  torch::manual_seed(5);
  MLPConfig mlp;
  mlp.hidden = 32;
  mlp.layers = 2;
  mlp.num_classes = 3;
  NetworkDenoiser network(mlp);
  network.module().eval();  // no label dropout: every call sees the same labels
  const std::vector<double> sigmas = {80.0, 5.0, 0.5};
  const GeneratorStreams streams{noise_stream::dmd2_generator_noise, noise_stream::dmd2_student_step, noise_stream::dmd2_simulation};
  const FewStepGenerator generator(network, sigmas, streams);
  const auto positions = first_positions(48);
  torch::NoGradGuard no_grad;
  const auto [x, labels] = generator.generate(11, positions);
  ASSERT_EQ(x.sizes(), (c10::IntArrayRef{48, 2}));
  const auto start = (uniform_per_sample(11, streams.start_step, positions) * 3).floor().to(torch::kInt64);
  std::set<int64_t> starts;
  for (int64_t r = 0; r < 48; ++r) {
    EXPECT_EQ(labels[r].item<int64_t>(), r % 3);
    const std::vector<int64_t> row = {r};
    const auto label = labels.slice(0, r, r + 1);
    // The chain written out: noise at σ_0, then denoise and re-noise at each later σ.
    auto state = per_sample_normal(11, streams.noise, row, {2}, torch::kFloat32) * sigmas[0];
    const int64_t k = start[r].item<int64_t>();
    starts.insert(k);
    for (int64_t i = 1; i <= k; ++i)
      state = network.denoise(state, torch::full({1}, sigmas[static_cast<size_t>(i - 1)]), label) +
              sigmas[static_cast<size_t>(i)] * per_sample_normal(11, streams.simulation + static_cast<uint64_t>(i), row, {2}, torch::kFloat32);
    const auto expected = network.denoise(state, torch::full({1}, sigmas[static_cast<size_t>(k)]), label);
    EXPECT_TRUE(torch::allclose(x.slice(0, r, r + 1), expected, 1e-5, 1e-6)) << "row " << r << " starting at step " << k;
  }
  EXPECT_EQ(starts, (std::set<int64_t>{0, 1, 2}));
  EXPECT_THROW(FewStepGenerator(network, {5.0, 5.0}, streams), Error);
}

TEST(RealDataStream, EachEpochVisitsEveryExampleOnceAndRepeatsByPosition) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  ConfigSchema schema;
  add_training_data_fields(schema);
  schema.add({"train.seed", ConfigType::Int, "seed", "0"});
  const auto config = Config::parse(schema, fmt::format("data: {{dataset: gmm, path: \"{}\", size: 64}}\ntrain: {{seed: 3}}\n", (dir / "three_modes.yaml").string()), "test");
  RealDataStream stream(config, {2}, 3, noise_stream::dmd2_real_flip, torch::kCPU);
  ASSERT_EQ(stream.size(), 64);
  const auto [first, first_labels] = stream.batch(0, first_positions(64));
  const auto all = load_training_data(config, {2});
  // The first 64 positions are a permutation of the set, with the labels that go with it.
  const auto order = first.select(1, 0).argsort(), reference = all.x0.select(1, 0).argsort();
  EXPECT_TRUE(torch::equal(first.index_select(0, order), all.x0.index_select(0, reference)));
  EXPECT_TRUE(torch::equal(first_labels.index_select(0, order), all.labels.index_select(0, reference)));
  // A position gives the same example whichever batch asks for it.
  const auto [again, again_labels] = stream.batch(0, {70, 5});
  EXPECT_TRUE(torch::equal(again[1], first[5]));
  EXPECT_EQ(again_labels[1].item<int64_t>(), first_labels[5].item<int64_t>());
  EXPECT_THROW(RealDataStream(config, {3}, 3, noise_stream::dmd2_real_flip, torch::kCPU), Error);
  EXPECT_THROW(RealDataStream(config, {2}, 2, noise_stream::dmd2_real_flip, torch::kCPU), Error);
}

}  // namespace
}  // namespace distillery
