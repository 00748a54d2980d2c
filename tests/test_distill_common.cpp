// The parts distillation methods share (distill/common): σ draws against their closed forms
// and distributions, iCT's curriculum, the distances, the few-step generator's backward
// simulation against the chain written out step by step, the real-data stream, and the
// networks' feature taps with the discriminator heads that read them.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/nn/functional.h>

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
#include "distill/common/discriminator_heads.h"
#include "distill/common/distances.h"
#include "distill/common/sigma_sampling.h"
#include "eval/domain_classifier.h"
#include "models/edm_layers.h"
#include "models/mlp.h"
#include "models/network_denoiser.h"
#include "models/unet.h"
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

TEST(Distances, PerceptualDistanceIsLpipsFormOverTheClassifiersTaps) {
  const auto file = testing::kSourceDir / "assets/eval/fmnist-second-classifier.safetensors";
  const std::vector<std::string> taps = {"conv1", "conv3", "features"};
  const FeatureDistance distance(file, taps, torch::kCPU);
  torch::manual_seed(1);
  const auto target = torch::rand({3, 1, 28, 28}) * 2 - 1;
  const auto x = (target + 0.3 * torch::randn({3, 1, 28, 28})).clamp(-1, 1);
  EXPECT_EQ(distance(target, target).abs().max().item<double>(), 0.0);

  // Written out from the classifier's own taps: unit channel vectors by division by the norm.
  auto classifier = load_domain_classifier(file);
  torch::NoGradGuard no_grad;
  const auto fx = classifier->features_at(x, taps), fy = classifier->features_at(target, taps);
  auto expected = torch::zeros({3});
  for (const auto& tap : taps) {
    const auto unit = [](const at::Tensor& h) { return h / h.norm(2, 1, true).clamp_min(1e-30); };
    auto d = (unit(fx.at(tap)) - unit(fy.at(tap))).square().sum(1);
    expected += d.dim() > 1 ? d.flatten(1).mean(1) : d;
  }
  const auto got = distance(x, target);
  EXPECT_GT(expected.min().item<double>(), 0.01);
  EXPECT_LT(((got - expected).abs() / expected).max().item<double>(), 1e-5);

  // The same one-tap distance as a recipe names it.
  ConfigSchema schema;
  add_distance_fields(schema, "cd");
  const auto yaml = fmt::format("cd:\n  distance: perceptual\n  feature_taps: [conv3]\n  feature_classifier: {}\n", file.string());
  const auto single = distance_from(Config::parse(schema, yaml, "run.yaml"), "cd", {1, 28, 28}, torch::kCPU);
  auto d3 = (torch::nn::functional::normalize(fx.at("conv3"), torch::nn::functional::NormalizeFuncOptions().dim(1)) -
             torch::nn::functional::normalize(fy.at("conv3"), torch::nn::functional::NormalizeFuncOptions().dim(1)))
                .square().sum(1).flatten(1).mean(1);
  EXPECT_LT(((single(x, target) - d3).abs() / d3).max().item<double>(), 1e-5);
}

TEST(Distances, PerceptualDistanceGuidesTowardTheTargetAndRefusesUnknownTaps) {
  const auto file = testing::kSourceDir / "assets/eval/fmnist-second-classifier.safetensors";
  const FeatureDistance distance(file, {"conv1", "conv2", "conv3", "features"}, torch::kCPU);
  auto x = torch::full({2, 1, 28, 28}, -1.0);
  x.index_put_({torch::indexing::Slice(), 0, torch::indexing::Slice(10, 18), torch::indexing::Slice(10, 18)}, 0.8);
  x.requires_grad_(true);
  const auto target = torch::full({2, 1, 28, 28}, -1.0);
  const auto d = distance(x, target);
  d.sum().backward();
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  // A small step against the gradient brings the image closer to its target.
  torch::NoGradGuard no_grad;
  const auto stepped = x - 1e-3 * x.grad() / x.grad().flatten(1).norm(2, 1).view({2, 1, 1, 1});
  EXPECT_TRUE((distance(stepped, target) < d).all().item<bool>());

  testing::expect_error_mentioning<Error>([&] { (void)FeatureDistance(file, {"conv9"}, torch::kCPU); }, {"conv9", "conv1, conv2, conv3, features"});
  testing::expect_error_mentioning<Error>([&] { (void)FeatureDistance(file, {}, torch::kCPU); }, {"at least one feature tap"});
  ConfigSchema schema;
  add_distance_fields(schema, "cd");
  const auto yaml = fmt::format("cd:\n  distance: perceptual\n  feature_taps: [conv1, conv9]\n  feature_classifier: {}\n", file.string());
  testing::expect_error_mentioning<Error>([&] { distance_from(Config::parse(schema, yaml, "run.yaml"), "cd", {1, 28, 28}, torch::kCPU); },
                                          {"conv9", "cd.feature_taps", "run.yaml"});
  testing::expect_error_mentioning<Error>([&] { distance(x, torch::zeros({2, 1, 28, 27})); }, {"target"});
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
  // A student of some of the classes (multi-student distillation) cycles through those only.
  const FewStepGenerator some(network, sigmas, streams, {0, 2});
  EXPECT_TRUE(torch::equal(some.labels(first_positions(5)), torch::tensor(std::vector<int64_t>{0, 2, 0, 2, 0})));
  EXPECT_THROW(FewStepGenerator(network, sigmas, streams, {3}), Error);
}

namespace F = torch::nn::functional;

// D = c_skip·x + c_out·raw, EDM's preconditioning around a raw output computed by hand.
at::Tensor edm_denoised(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& raw) {
  const auto c = precondition(Parameterization::EDM, sigma);
  std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
  view[0] = -1;
  return c.c_skip.view(view) * x + c.c_out.view(view) * raw;
}

TEST(FeatureTaps, UNetTapsAreItsOwnPassFromInputConvolutionToLastBlock) {
  torch::manual_seed(2);
  UNetConfig config;
  config.resolution = 8;
  config.model_channels = 8;
  config.channel_mult = {1, 2};
  config.blocks_per_level = 1;
  config.attn_resolutions = {};
  config.channels_per_head = 8;
  config.dropout = 0;
  NetworkDenoiser network(config);
  network.module().eval();
  std::vector<std::string> names;
  for (const auto& tap : network.feature_taps()) names.push_back(tap.name);
  EXPECT_EQ(names, (std::vector<std::string>{"enc.0", "enc.1", "enc.2", "enc.3", "bottleneck", "dec.0", "dec.1", "dec.2", "dec.3", "dec.4"}));
  const auto x = torch::randn({3, 1, 8, 8}), sigma = torch::tensor({0.1f, 1.0f, 20.0f});
  torch::NoGradGuard no_grad;
  const auto all = network.features(x, sigma, {}, names);
  for (const auto& tap : network.feature_taps()) {
    std::vector<int64_t> shape = {3};
    shape.insert(shape.end(), tap.shape.begin(), tap.shape.end());
    EXPECT_EQ(all.at(tap.name).sizes(), c10::IntArrayRef(shape)) << tap.name;
  }
  EXPECT_EQ(all.at("bottleneck").sizes(), (c10::IntArrayRef{3, 16, 4, 4}));
  // The first tap is the input convolution of c_in·x; the last, through the output layers,
  // gives the denoiser's own result.
  std::map<std::string, at::Tensor> p;
  for (const auto& item : network.module().named_parameters()) p[item.key()] = item.value();
  const auto c_in = precondition(Parameterization::EDM, sigma).c_in.view({-1, 1, 1, 1});
  EXPECT_TRUE(torch::allclose(all.at("enc.0"), F::conv2d(c_in * x, p["conv_in.weight"], F::Conv2dFuncOptions().bias(p["conv_in.bias"]).padding(1)), 1e-5, 1e-6));
  const auto last = F::group_norm(all.at("dec.4"), F::GroupNormFuncOptions(norm_groups(8)).weight(p["norm_out.weight"]).bias(p["norm_out.bias"]));
  const auto raw = F::conv2d(torch::silu(last), p["conv_out.weight"], F::Conv2dFuncOptions().bias(p["conv_out.bias"]).padding(1));
  EXPECT_TRUE(torch::allclose(edm_denoised(x, sigma, raw), network.denoise(x, sigma, {}), 1e-5, 1e-6));
  // Asking for fewer taps gives the same features, from a pass that ends at the deepest one.
  EXPECT_TRUE(torch::equal(network.features(x, sigma, {}, {"enc.2"}).at("enc.2"), all.at("enc.2")));
  std::vector<std::string> visited;
  auto& unet = *network.shared_module()->as<UNetImpl>();
  unet.features(c_in * x, torch::zeros({3}), {}, {}, [&](const std::string& tap, const at::Tensor&) {
    visited.push_back(tap);
    return tap != "enc.1";
  });
  EXPECT_EQ(visited, (std::vector<std::string>{"enc.0", "enc.1"}));
  testing::expect_error_mentioning<Error>([&] { network.features(x, sigma, {}, {"middle"}); }, {"no feature tap 'middle'", "enc.0, enc.1"});
}

TEST(FeatureTaps, MlpLastTapThroughTheOutputLayerIsTheDenoiser) {
  torch::manual_seed(4);
  MLPConfig config;
  config.hidden = 16;
  config.layers = 2;
  NetworkDenoiser network(config);
  network.module().eval();
  ASSERT_EQ(network.feature_taps().size(), 3u);
  EXPECT_EQ(network.feature_taps().back().name, "layer.2");
  EXPECT_EQ(network.feature_taps().back().shape, (std::vector<int64_t>{16}));
  const auto x = torch::randn({5, 2}), sigma = torch::linspace(0.05, 10.0, 5);
  torch::NoGradGuard no_grad;
  const auto features = network.features(x, sigma, {}, {"layer.2", "layer.0"});
  ASSERT_EQ(features.size(), 2u);
  std::map<std::string, at::Tensor> p;
  for (const auto& item : network.module().named_parameters()) p[item.key()] = item.value();
  const auto raw = F::linear(torch::silu(features.at("layer.2")), p["output.weight"], p["output.bias"]);
  EXPECT_TRUE(torch::allclose(edm_denoised(x, sigma, raw), network.denoise(x, sigma, {}), 1e-5, 1e-6));
  // Each residual layer adds to the one before: layer.1 = layer.0 + W·silu(layer.0) + b.
  const auto first = network.features(x, sigma, {}, {"layer.1"}).at("layer.1");
  const auto expected = features.at("layer.0") + F::linear(torch::silu(features.at("layer.0")), p["hidden.0.weight"], p["hidden.0.bias"]);
  EXPECT_TRUE(torch::allclose(first, expected, 1e-5, 1e-6));
}

TEST(DiscriminatorHeads, OneLogitPerTapReadingThatTapOnly) {
  torch::manual_seed(1);
  const std::vector<FeatureTap> taps = {{"enc.1", {8, 8, 8}}, {"bottleneck", {16, 2, 2}}, {"layer.0", {5}}};
  DiscriminatorHeads heads(taps);
  EXPECT_EQ(heads->taps(), (std::vector<std::string>{"enc.1", "bottleneck", "layer.0"}));
  FeatureMap features = {{"enc.1", torch::randn({4, 8, 8, 8})}, {"bottleneck", torch::randn({4, 16, 2, 2}, torch::requires_grad())},
                         {"layer.0", torch::randn({4, 5})}, {"unused", torch::randn({4, 3})}};
  const auto logits = heads->forward(features);
  ASSERT_EQ(logits.sizes(), (c10::IntArrayRef{4, 3}));
  logits.sum().backward();
  EXPECT_GT(features.at("bottleneck").grad().abs().sum().item<double>(), 0.0);
  torch::NoGradGuard no_grad;
  auto changed = features;
  changed["bottleneck"] = features.at("bottleneck") + 1;
  const auto after = heads->forward(changed);
  EXPECT_TRUE(torch::equal(after.select(1, 0), logits.select(1, 0)));
  EXPECT_TRUE(torch::equal(after.select(1, 2), logits.select(1, 2)));
  EXPECT_FALSE(torch::allclose(after.select(1, 1), logits.select(1, 1)));
  // The heads' initial weights are a function of the seed: the same seed, the same heads.
  torch::manual_seed(1);
  DiscriminatorHeads again(taps);
  EXPECT_TRUE(torch::equal(again->forward(features), heads->forward(features)));
  features.erase("layer.0");
  EXPECT_THROW(heads->forward(features), Error);
  EXPECT_THROW(DiscriminatorHeads(std::vector<FeatureTap>{{"odd", {3, 4}}}), Error);
  EXPECT_THROW(DiscriminatorHeads(std::vector<FeatureTap>{}), Error);
}

TEST(DiscriminatorHeads, ClassProjectionAddsTheLabelsEmbeddingDotTheLastHiddenFeatures) {
  const std::vector<FeatureTap> taps = {{"enc.1", {8, 8, 8}}, {"layer.0", {5}}};
  torch::manual_seed(1);
  DiscriminatorHeads unconditional(taps);
  torch::manual_seed(1);
  DiscriminatorHeads conditional(taps, 3);
  EXPECT_EQ(conditional->num_classes(), 3);
  torch::manual_seed(2);
  const FeatureMap features = {{"enc.1", torch::randn({4, 8, 8, 8})}, {"layer.0", torch::randn({4, 5})}};
  const auto labels = torch::tensor({0, 2, 0, 2}, torch::kLong);
  // Zero embeddings at first: the same heads as the unconditional ones, bit for bit.
  EXPECT_TRUE(torch::equal(conditional->forward(features, labels), unconditional->forward(features)));
  EXPECT_THROW(conditional->forward(features), Error);

  auto parameters = conditional->named_parameters();
  {
    torch::NoGradGuard no_grad;
    parameters["class_0.weight"].normal_();
    parameters["class_1.weight"].normal_();
    parameters["class_0.weight"][0].zero_();
    parameters["class_1.weight"][0].zero_();
  }
  const auto logits = conditional->forward(features, labels);
  const auto plain = unconditional->forward(features).detach();
  // A row of the class whose embedding is zero keeps the unconditional logits.
  EXPECT_TRUE(torch::equal(logits[0].detach(), plain[0]));
  // The vector head by hand: hidden = silu(W0·f + b0), logit = W1·hidden + b1 + ⟨E[y], hidden⟩.
  const auto hidden = torch::silu(F::linear(features.at("layer.0"), parameters["1.0.weight"], parameters["1.0.bias"]));
  const auto expected = F::linear(hidden, parameters["1.2.weight"], parameters["1.2.bias"]).flatten() +
                        (hidden * parameters["class_1.weight"].index_select(0, labels)).sum(1);
  EXPECT_TRUE(torch::allclose(logits.select(1, 1), expected, 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(logits[1][0], plain[1][0]));
  // Each class's embedding learns from its own rows only: class 1 has none here.
  logits.sum().backward();
  const auto grad = parameters["class_0.weight"].grad();
  EXPECT_GT(grad[2].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(grad[1].abs().sum().item<double>(), 0.0);
}

// Noise-conditional heads add ⟨g(σ), h⟩ with g an MLP of σ's positional embedding; its last
// layer starts at zero, so they start as the plain heads, and with class heads too the two
// directions add.
TEST(DiscriminatorHeads, NoiseProjectionAddsTheNoiseLevelsEmbeddingDotTheLastHiddenFeatures) {
  const std::vector<FeatureTap> taps = {{"enc.1", {8, 8, 8}}, {"layer.0", {5}}};
  torch::manual_seed(1);
  DiscriminatorHeads plain(taps);
  torch::manual_seed(1);
  DiscriminatorHeads both(taps, 3, true);
  EXPECT_TRUE(both->noise_conditional());
  EXPECT_FALSE(plain->noise_conditional());
  torch::manual_seed(2);
  const FeatureMap features = {{"enc.1", torch::randn({4, 8, 8, 8})}, {"layer.0", torch::randn({4, 5})}};
  const auto labels = torch::tensor({0, 2, 0, 2}, torch::kLong);
  const auto sigma = torch::tensor({0.05, 0.5, 2.0, 80.0});
  EXPECT_TRUE(torch::equal(both->forward(features, labels, sigma), plain->forward(features)));
  testing::expect_error_mentioning<Error>([&] { both->forward(features, labels); }, {"σ each row was read at"});

  auto parameters = both->named_parameters();
  {
    torch::NoGradGuard no_grad;
    for (const auto& name : {"class_1.weight", "noise_1.2.weight", "noise_1.2.bias"}) parameters[name].normal_();
  }
  const auto logits = both->forward(features, labels, sigma);
  // The vector head by hand.
  const auto hidden = torch::silu(F::linear(features.at("layer.0"), parameters["1.0.weight"], parameters["1.0.bias"]));
  const auto embedded = positional_embedding(sigma.log() / 4, 32, false);
  const auto of_noise = F::linear(torch::silu(F::linear(embedded, parameters["noise_1.0.weight"], parameters["noise_1.0.bias"])),
                                  parameters["noise_1.2.weight"], parameters["noise_1.2.bias"]);
  const auto expected = F::linear(hidden, parameters["1.2.weight"], parameters["1.2.bias"]).flatten() +
                        (hidden * (parameters["class_1.weight"].index_select(0, labels) + of_noise)).sum(1);
  EXPECT_TRUE(torch::allclose(logits.select(1, 1), expected, 1e-5, 1e-6));
  // The same features and label at another σ get another logit.
  const auto other_sigma = torch::tensor({0.05, 0.5, 2.0, 0.05});
  const auto moved = both->forward(features, labels, other_sigma);
  EXPECT_TRUE(torch::equal(moved.slice(0, 0, 3), logits.slice(0, 0, 3)));
  EXPECT_GT((moved[3][1] - logits[3][1]).abs().item<double>(), 1e-3);
  // The first head's noise MLP is still zero at its last layer: its logits ignore σ.
  EXPECT_TRUE(torch::equal(moved.select(1, 0), logits.select(1, 0)));
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
  // Kept to classes 0 and 2: exactly the set's examples of those, each once per epoch.
  RealDataStream some(config, {2}, 3, noise_stream::dmd2_real_flip, torch::kCPU, {0, 2});
  const auto kept = all.labels.ne(1);
  ASSERT_EQ(some.size(), kept.sum().item<int64_t>());
  const auto [x, labels] = some.batch(0, first_positions(some.size()));
  EXPECT_TRUE(labels.ne(1).all().item<bool>());
  EXPECT_TRUE(torch::equal(std::get<0>(x.select(1, 0).sort(0)), std::get<0>(all.x0.index_select(0, kept.nonzero().squeeze(1)).select(1, 0).sort(0))));
}

}  // namespace
}  // namespace distillery
