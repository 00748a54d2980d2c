// Solvers against the analytic teacher: observed convergence orders against an independent
// high-accuracy solution of the same probability-flow ODE, exact NFE counts, batch-size
// independence, and sample moments against the mixture's exact moments.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "models/guidance.h"
#include "samplers/sampler.h"
#include "samplers/sampling.h"
#include "teachers/gaussian_mixture.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::kThreeModes2d;


GaussianMixtureDenoiser three_modes() { return GaussianMixtureDenoiser(GaussianMixtureSpec::parse(kThreeModes2d, "three_modes.yaml")); }

// Classical RK4 in the Karras grid's own variable u ∈ [0, 1], where σ(u) = (a + u(b − a))^ρ:
// dx/du = (x − D(x; σ)) / σ · dσ/du is smooth in u, so 2,000 steps leave an error far below
// what the tested solvers make. Returns the state at σ_min.
at::Tensor reference_solution(Denoiser& D, at::Tensor x, double sigma_min, double sigma_max, double rho, int steps) {
  const double a = std::pow(sigma_max, 1 / rho), b = std::pow(sigma_min, 1 / rho);
  auto f = [&](const at::Tensor& state, double u) {
    const double base = a + u * (b - a);
    const double sigma = std::pow(base, rho), dsigma_du = rho * std::pow(base, rho - 1) * (b - a);
    return (state - D.denoise(state, torch::full({state.size(0)}, sigma, state.options()), {})) / sigma * dsigma_du;
  };
  const double h = 1.0 / steps;
  for (int i = 0; i < steps; ++i) {
    const double u = i * h;
    const auto k1 = f(x, u), k2 = f(x + 0.5 * h * k1, u + 0.5 * h), k3 = f(x + 0.5 * h * k2, u + 0.5 * h), k4 = f(x + h * k3, u + h);
    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4);
  }
  return x;
}

// Records the state at one grid index.
struct StateAt final : SamplerObserver {
  int64_t index;
  at::Tensor state;
  explicit StateAt(int64_t i) : index(i) {}
  void on_state(int64_t i, double, const at::Tensor& x, const at::Tensor&) override {
    if (i == index) state = x.clone();
  }
};

double rms_error_at_sigma_min(const std::string& solver, Denoiser& D, const at::Tensor& x_init, const at::Tensor& reference, int steps) {
  const auto sigmas = make_sigmas({ScheduleKind::Karras, 0.002, 80.0, 7.0}, steps);
  StateAt at_sigma_min(steps - 1);
  make_sampler(solver)->run(D, x_init, sigmas, {}, &at_sigma_min);
  return (at_sigma_min.state - reference).square().sum(1).mean().sqrt().item<double>();
}

TEST(Samplers, ObservedOrdersOfEulerHeunAndDpmSolver) {
  auto gmm = three_modes();
  std::vector<int64_t> indices(64);
  std::iota(indices.begin(), indices.end(), 0);
  const auto x_init = 80.0 * per_sample_normal(0, noise_stream::initial, indices, {2}, torch::kFloat64);
  const auto reference = reference_solution(gmm, x_init, 0.002, 80.0, 7.0, 2000);
  for (const auto& [solver, expected_order] : {std::pair{"euler", 1.0}, std::pair{"heun", 2.0}, std::pair{"dpmpp-2m", 2.0}}) {
    std::vector<double> errors;
    for (int steps : {64, 128, 256}) errors.push_back(rms_error_at_sigma_min(solver, gmm, x_init, reference, steps));
    for (size_t i = 0; i + 1 < errors.size(); ++i) {
      const double order = std::log2(errors[i] / errors[i + 1]);
      std::printf("%s: RMS error %.3e -> %.3e, observed order %.3f\n", solver, errors[i], errors[i + 1], order);
      EXPECT_NEAR(order, expected_order, 0.3) << solver << ": errors " << errors[i] << " -> " << errors[i + 1];
    }
  }
}

// Counts network evaluations per sample.
struct CountingDenoiser final : Denoiser {
  Denoiser& inner;
  int64_t calls = 0;
  explicit CountingDenoiser(Denoiser& d) : inner(d) {}
  at::Tensor denoise(const at::Tensor& x, const at::Tensor& s, const at::Tensor& l) override {
    ++calls;
    return inner.denoise(x, s, l);
  }
  c10::Device device() const override { return inner.device(); }
  void to(const c10::Device& device) override { inner.to(device); }
  std::vector<int64_t> sample_shape() const override { return inner.sample_shape(); }
  std::string describe() const override { return inner.describe(); }
};

TEST(Samplers, NfeAndObserverSeeEveryState) {
  auto gmm = three_modes();
  for (const auto& name : sampler_names()) {
    for (int steps : {1, 2, 18}) {
      CountingDenoiser counting(gmm);
      struct Recorder final : SamplerObserver {
        std::vector<int64_t> seen;
        int64_t with_denoised = 0;
        void on_state(int64_t i, double, const at::Tensor&, const at::Tensor& d) override {
          seen.push_back(i);
          with_denoised += d.defined();
        }
      } recorder;
      const auto sampler = make_sampler(name);
      // Sample indices for the solvers that draw fresh noise (multistep).
      const SampleContext context{{}, 0, {0, 1, 2}};
      sampler->run(counting, torch::randn({3, 2}) * 80, make_sigmas({}, steps), context, &recorder);
      EXPECT_EQ(counting.calls, sampler->nfe(steps)) << name << " " << steps;
      std::vector<int64_t> all(static_cast<size_t>(steps) + 1);
      std::iota(all.begin(), all.end(), 0);
      EXPECT_EQ(recorder.seen, all) << name;
      EXPECT_EQ(recorder.with_denoised, steps) << name;
    }
  }
}

TEST(Samplers, UnknownNameListsTheValidOnes) {
  testing::expect_error_mentioning<Error>([] { make_sampler("dpm"); }, {"euler, heun, dpmpp-2m, ddim, edm-stochastic"});
}

TEST(Samplers, ResultsDoNotDependOnBatchSize) {
  auto gmm = three_modes();
  SampleRequest request;
  request.num = 10;
  request.steps = 6;
  request.batch = 10;
  const auto whole = draw_samples(gmm, request);
  request.batch = 3;
  const auto split = draw_samples(gmm, request);
  EXPECT_TRUE(torch::equal(whole.noise, split.noise));
  EXPECT_TRUE(torch::allclose(whole.samples, split.samples, 0, 1e-6));
  request.first_index = 4;
  request.num = 2;
  EXPECT_TRUE(torch::equal(draw_samples(gmm, request).noise, whole.noise.narrow(0, 4, 2)));
}

// Mean and covariance of Heun samples against the exact moments, within 4 standard errors
// estimated from the samples themselves.
void expect_moments_match(GaussianMixtureDenoiser& gmm, int64_t n, const std::string& sampler = "heun", SamplerOptions options = {}) {
  SampleRequest request;
  request.sampler = sampler;
  request.options = options;
  request.num = n;
  request.steps = 64;
  request.float64 = true;
  request.batch = 1024;
  const auto x = draw_samples(gmm, request).samples.reshape({n, -1});
  const auto mean = x.mean(0);
  const auto centred = x - mean;
  const auto cov = centred.t().matmul(centred) / (n - 1);
  const auto mean_se = (centred.var(0) / n).sqrt();
  const auto products = centred.unsqueeze(2) * centred.unsqueeze(1);  // [n, D, D]
  const auto cov_se = (products.var(0) / n).sqrt();
  const auto mean_z = ((mean - gmm.spec().mean()).abs() / mean_se).max().item<double>();
  const auto cov_z = ((cov - gmm.spec().covariance()).abs() / cov_se).max().item<double>();
  EXPECT_LT(mean_z, 4.0) << "sample mean " << mean << " exact " << gmm.spec().mean();
  EXPECT_LT(cov_z, 4.0) << "sample covariance " << cov << " exact " << gmm.spec().covariance();
}

at::Tensor initial_state(int64_t n, uint64_t seed = 0) {
  std::vector<int64_t> indices(static_cast<size_t>(n));
  std::iota(indices.begin(), indices.end(), 0);
  return 80.0 * per_sample_normal(seed, noise_stream::initial, indices, {2}, torch::kFloat64);
}

TEST(Samplers, DdimWithEtaZeroIsEulerInSigmaSpace) {
  auto gmm = three_modes();
  const auto x = initial_state(32);
  for (int steps : {1, 5, 40}) {
    const auto sigmas = make_sigmas({}, steps);
    const auto ddim = make_sampler("ddim")->run(gmm, x, sigmas, {});
    const auto euler = make_sampler("euler")->run(gmm, x, sigmas, {});
    EXPECT_LT((ddim - euler).abs().max().item<double>(), 1e-10) << steps << " steps";
  }
}

// γ-sampling's jump of a denoiser without a target time is an Euler step, so with γ = 0 the
// multistep sampler is the Euler solver; with γ = 1 each step is D re-noised to the next σ
// (Song et al.'s multistep consistency sampling), and between them the re-noising shrinks.
TEST(Samplers, GammaSamplingRunsFromEulerAtZeroToConsistencySamplingAtOne) {
  auto gmm = three_modes();
  const auto x = initial_state(32);
  const auto sigmas = make_sigmas({}, 5);
  std::vector<int64_t> indices(32);
  std::iota(indices.begin(), indices.end(), 0);
  const SampleContext context{{}, 3, indices};
  const auto deterministic = make_sampler("multistep", {.gamma = 0})->run(gmm, x, sigmas, context);
  EXPECT_LT((deterministic - make_sampler("euler")->run(gmm, x, sigmas, context)).abs().max().item<double>(), 1e-12);

  // One γ = 1 step by hand: D at σ_0, plus σ_1 times the step's fresh noise.
  const auto first = make_sampler("multistep")->run(gmm, x, {sigmas[0], sigmas[1]}, context);
  const auto by_hand = denoise_at(gmm, x, sigmas[0], {}) + sigmas[1] * context.fresh_noise(0, x);
  EXPECT_LT((first - by_hand).abs().max().item<double>(), 1e-12);
  // γ = 0.6: the jump lands at 0.8·σ_1 with noise 0.6·σ_1 added.
  const auto partial = make_sampler("multistep", {.gamma = 0.6})->run(gmm, x, {sigmas[0], sigmas[1]}, context);
  const double kept = 0.8 * sigmas[1] / sigmas[0];
  const auto partial_by_hand = kept * x + (1 - kept) * denoise_at(gmm, x, sigmas[0], {}) + 0.6 * sigmas[1] * context.fresh_noise(0, x);
  EXPECT_LT((partial - partial_by_hand).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(make_sampler("multistep", {.gamma = 1.5}), Error);
}

TEST(Samplers, StochasticSamplerWithoutChurnIsHeunAndWithChurnIsBatchIndependent) {
  auto gmm = three_modes();
  const auto x = initial_state(12);
  const auto sigmas = make_sigmas({}, 18);
  const SampleContext context{{}, 7, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}};
  EXPECT_TRUE(torch::equal(make_sampler("edm-stochastic")->run(gmm, x, sigmas, context), make_sampler("heun")->run(gmm, x, sigmas, context)));

  const SamplerOptions churn{.s_churn = 40, .s_tmin = 0.05, .s_tmax = 50, .s_noise = 1.003};
  const auto sampler = make_sampler("edm-stochastic", churn);
  const auto whole = sampler->run(gmm, x, sigmas, context);
  EXPECT_FALSE(torch::allclose(whole, make_sampler("heun")->run(gmm, x, sigmas, context))) << "churn changes the result";
  const SampleContext first{{}, 7, {0, 1, 2, 3, 4}}, rest{{}, 7, {5, 6, 7, 8, 9, 10, 11}};
  const auto split = torch::cat({sampler->run(gmm, x.narrow(0, 0, 5), sigmas, first), sampler->run(gmm, x.narrow(0, 5, 7), sigmas, rest)});
  EXPECT_LT((split - whole).abs().max().item<double>(), 1e-12);
}

TEST(Samplers, ClassifierFreeGuidance) {
  GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse(std::string(kThreeModes2d) + "conditional: true\n", "conditional.yaml"));
  const auto x = torch::randn({6, 2}, torch::kFloat64) * 2;
  const auto sigma = torch::full({6}, 1.5, torch::kFloat64);
  const auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kInt64);
  const auto conditional = gmm.denoise(x, sigma, labels);
  const auto unconditional = gmm.denoise(x, sigma, torch::full({6}, -1, torch::kInt64));
  EXPECT_LT((GuidedDenoiser(gmm, 1.0).denoise(x, sigma, labels) - conditional).abs().max().item<double>(), 1e-12);
  EXPECT_LT((GuidedDenoiser(gmm, 0.0).denoise(x, sigma, labels) - unconditional).abs().max().item<double>(), 1e-12);
  const auto w3 = GuidedDenoiser(gmm, 3.0).denoise(x, sigma, labels);
  EXPECT_LT((w3 - (unconditional + 3.0 * (conditional - unconditional))).abs().max().item<double>(), 1e-12);
  // Label k selects component k: the posterior mean of one Gaussian, μ_k + s_k²/(s_k² + σ²)(x − μ_k).
  const auto mu0 = torch::tensor({-2.0, 0.0}, torch::kFloat64);
  EXPECT_LT((conditional[0] - (mu0 + 0.09 / (0.09 + 2.25) * (x[0] - mu0))).abs().max().item<double>(), 1e-12);
  auto unconditional_gmm = three_modes();
  EXPECT_THROW(GuidedDenoiser(unconditional_gmm, 2.0), Error);
}

TEST(Samplers, SampleMomentsMatchTheMixture) {
  auto two_d = three_modes();
  expect_moments_match(two_d, 4000);
  GaussianMixtureDenoiser one_d(GaussianMixtureSpec::parse("dim: 1\nweights: [0.7, 0.3]\nmeans: [[-1.0], [2.0]]\nstds: [0.4, 0.6]\n", "1d.yaml"));
  expect_moments_match(one_d, 4000);
  expect_moments_match(two_d, 4000, "dpmpp-2m");
  expect_moments_match(two_d, 4000, "edm-stochastic", {.s_churn = 20, .s_tmin = 0.01, .s_tmax = 50, .s_noise = 1.0});
}

// Records every state and D of a run.
struct AllStates final : SamplerObserver {
  std::vector<at::Tensor> states, denoised;
  void on_state(int64_t, double, const at::Tensor& x, const at::Tensor& d) override {
    states.push_back(x.clone());
    denoised.push_back(d.defined() ? d.clone() : at::Tensor());
  }
};

// A whole run is the per-row step with every row alike: walking the grid with step() gives the
// batched solver's states bit for bit (float32, as students are sampled).
TEST(Samplers, PerRowStepWithSharedSigmasEqualsTheBatchedSolverBitForBit) {
  auto gmm = three_modes();
  std::vector<int64_t> indices(16);
  std::iota(indices.begin(), indices.end(), 0);
  const auto sigmas = make_sigmas({ScheduleKind::Karras, 0.002, 80.0, 7.0}, 6);
  const auto x_init = 80.0 * per_sample_normal(3, noise_stream::initial, indices, {2}, torch::kFloat32);
  const auto n = indices.size();
  for (const char* solver : {"euler", "heun", "ddim", "dpmpp-2m"}) {
    const auto sampler = make_sampler(solver);
    AllStates batched;
    sampler->run(gmm, x_init, sigmas, {}, &batched);
    auto x = x_init;
    at::Tensor previous;
    for (size_t i = 0; i + 1 < sigmas.size(); ++i) {
      const RowStep rows{std::vector<double>(n, sigmas[i]), std::vector<double>(n, sigmas[i + 1]), std::vector<double>(n, i > 0 ? sigmas[i - 1] : 0.0),
                         previous};
      const auto result = sampler->step(gmm, x, rows, {});
      x = result.x;
      previous = result.denoised;
      ASSERT_TRUE(torch::equal(x, batched.states[i + 1])) << solver << " step " << i << ": max difference "
                                                          << (x - batched.states[i + 1]).abs().max().item<double>();
    }
  }
}

// Rows with their own (σ_from, σ_to), some into σ = 0, equal each row stepped alone.
TEST(Samplers, PerRowStepTakesEachRowBetweenItsOwnSigmas) {
  auto gmm = three_modes();
  const std::vector<int64_t> indices = {0, 1, 2, 3, 4};
  const std::vector<double> from = {80.0, 5.0, 1.0, 0.3, 2.0}, to = {40.0, 0.0, 0.5, 0.0, 1.5};
  const auto x = per_sample_normal(5, noise_stream::initial, indices, {2}, torch::kFloat64) * per_row(from, torch::empty({5, 2}, torch::kFloat64));
  for (const char* solver : {"euler", "heun", "ddim", "dpmpp-2m"}) {
    const auto sampler = make_sampler(solver);
    const auto together = sampler->step(gmm, x, {from, to}, {}).x;
    for (size_t r = 0; r < from.size(); ++r) {
      const auto row = x.narrow(0, static_cast<int64_t>(r), 1);
      const auto alone = make_sampler(solver)->run(gmm, row, {from[r], to[r]}, {});
      EXPECT_LT((together.narrow(0, static_cast<int64_t>(r), 1) - alone).abs().max().item<double>(), 1e-12) << solver << " row " << r;
    }
  }
  EXPECT_THROW(make_sampler("multistep")->step(gmm, x, {from, to}, {}), Error);
  EXPECT_THROW(make_sampler("euler")->step(gmm, x, {from, {1.0}}, {}), Error);
}

}  // namespace
}  // namespace distillery
