// Preconditioning and σ schedules: every parameterisation's ideal network output yields the
// clean sample, and every grid has the documented endpoints and monotonicity.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "models/jvp.h"
#include "models/network_denoiser.h"
#include "models/precond.h"
#include "samplers/schedule.h"
#include "teachers/gaussian_mixture.h"
#include "test_support.h"

namespace distillery {
namespace {

TEST(Precondition, EdmCoefficientsMatchThePaper) {
  const auto sigma = torch::tensor({0.5, 2.0}, torch::kFloat64);
  const auto c = precondition(Parameterization::EDM, sigma, 0.5);
  // At σ = σ_data: c_skip = 1/2, c_out = σ_data/√2, c_in = 1/(σ_data·√2), c_noise = ln(σ)/4.
  EXPECT_NEAR(c.c_skip[0].item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(c.c_out[0].item<double>(), 0.5 / std::sqrt(2.0), 1e-15);
  EXPECT_NEAR(c.c_in[0].item<double>(), 1.0 / (0.5 * std::sqrt(2.0)), 1e-14);
  EXPECT_NEAR(c.c_noise[1].item<double>(), std::log(2.0) / 4, 1e-15);
  // Unit variance of the network's input and of its training target (EDM eq. 7–8).
  const double s = 2.0, sd = 0.5;
  EXPECT_NEAR(std::pow(c.c_in[1].item<double>(), 2) * (s * s + sd * sd), 1.0, 1e-14);
}

// Each family's ideal network: EDM its training target, VP the noise ε, VE −n, RF the velocity.
at::Tensor ideal_output(Parameterization p, const at::Tensor& x0, const at::Tensor& n, const at::Tensor& sigma) {
  const auto s = sigma.view({-1, 1});
  switch (p) {
    case Parameterization::EDM: {
      const auto c = precondition(p, sigma, 0.5);
      const auto x = x0 + s * n;
      return (x0 - c.c_skip.view({-1, 1}) * x) / c.c_out.view({-1, 1});
    }
    case Parameterization::VP:
    case Parameterization::DDPM: return n;
    case Parameterization::VE: return -n;
    case Parameterization::RectifiedFlow: return n - x0;
    case Parameterization::Consistency: {
      const auto c = precondition(p, sigma, 0.5, 0.002);
      return (x0 - c.c_skip.view({-1, 1}) * (x0 + s * n)) / c.c_out.view({-1, 1});
    }
    case Parameterization::TrigFlow: {
      // The TrigFlow velocity over σ_d: cos(t)·n − sin(t)·x0/σ_d, t = arctan(σ/σ_d).
      const auto t = (sigma / 0.5).atan().view({-1, 1});
      return t.cos() * n - t.sin() * x0 / 0.5;
    }
  }
  return {};
}

TEST(Precondition, EveryParameterizationRecoversTheCleanSample) {
  torch::manual_seed(0);
  const auto x0 = torch::randn({5, 4}, torch::kFloat64);
  const auto n = torch::randn({5, 4}, torch::kFloat64);
  // The consistency model's c_out vanishes at σ_min, where its ideal output is undefined.
  const auto sigma = torch::tensor({0.003, 0.1, 1.0, 10.0, 80.0}, torch::kFloat64);
  for (int i = 0; i < kParameterizationCount; ++i) {
    const auto p = static_cast<Parameterization>(i);
    SCOPED_TRACE(std::string(parameterization_name(p)));
    const auto F = ideal_output(p, x0, n, sigma);
    auto network = [&](const at::Tensor& x_in, const at::Tensor& c_noise, const at::Tensor&, const at::Tensor&) {
      // The network sees its own family's input scaling and noise label.
      const auto c = precondition(p, sigma, 0.5);
      EXPECT_TRUE(torch::allclose(x_in, c.c_in.view({-1, 1}) * (x0 + sigma.view({-1, 1}) * n)));
      EXPECT_TRUE(torch::allclose(c_noise, c.c_noise));
      return F;
    };
    PreconditionedDenoiser D(p, network, {.sample_shape = {4}});
    EXPECT_LT((D.denoise(x0 + sigma.view({-1, 1}) * n, sigma, {}) - x0).abs().max().item<double>(), 1e-10);
  }
}

// Consistency models (Song et al. 2023): c_skip(σ_min) = 1 and c_out(σ_min) = 0, so whatever
// the network outputs, D(x; σ_min) = x: the boundary condition holds by construction.
TEST(Precondition, TheConsistencyParameterizationIsTheIdentityAtSigmaMin) {
  torch::manual_seed(1);
  const auto x = torch::randn({3, 4}, torch::kFloat64);
  const auto wild = [](const at::Tensor& x_in, const at::Tensor&, const at::Tensor&, const at::Tensor&) { return 1e3 * x_in.sin() + 7.0; };
  PreconditionedDenoiser D(Parameterization::Consistency, wild, {.sample_shape = {4}, .sigma_min = 0.002});
  EXPECT_TRUE(torch::equal(D.denoise(x, torch::full({3}, 0.002, torch::kFloat64), {}), x));
  // Above σ_min the network does count, and far above it the coefficients approach EDM's.
  EXPECT_GT((D.denoise(x, torch::full({3}, 0.01, torch::kFloat64), {}) - x).abs().max().item<double>(), 1.0);
  const auto sigma = torch::full({1}, 80.0, torch::kFloat64);
  const auto cm = precondition(Parameterization::Consistency, sigma, 0.5, 0.002), edm = precondition(Parameterization::EDM, sigma, 0.5);
  EXPECT_NEAR(cm.c_out.item<double>(), edm.c_out.item<double>(), 1e-4);
  EXPECT_NEAR(cm.c_skip.item<double>(), edm.c_skip.item<double>(), 1e-6);
}

TEST(Precondition, TimeConversionsInvertEachOther) {
  for (double sigma : {0.002, 0.5, 1.0, 80.0}) {
    EXPECT_NEAR(sigma_from_rf_time(rf_time_from_sigma(sigma)), sigma, 1e-12 * sigma);
    EXPECT_NEAR(sigma_from_vp_time(vp_time_from_sigma(sigma)), sigma, 1e-10 * sigma);
    EXPECT_NEAR(sigma_from_trigflow_time(trigflow_time_from_sigma(sigma, 0.5), 0.5), sigma, 1e-12 * sigma);
  }
  // VP at t = 1 reaches σ ≈ 152 (the EDM paper's VP σ_max).
  EXPECT_NEAR(sigma_from_vp_time(1.0), std::sqrt(std::expm1(0.5 * 19.9 + 0.1)), 1e-9);
  EXPECT_EQ(parameterization_from_name("rectified-flow"), Parameterization::RectifiedFlow);
  EXPECT_THROW(parameterization_from_name("flow"), Error);
}

// DDPM's linear schedule as numpy builds it in DiT's diffusion code (β from 1e-4 to 0.02 over
// 1000 steps), and the timestep of σ: j at σ_j, linear in log σ between and beyond them.
TEST(Precondition, DdpmTimestepsFollowTheDiscreteLinearSchedule) {
  const auto& sigmas = ddpm_sigmas();
  ASSERT_EQ(sigmas.size(), static_cast<size_t>(kDdpmSteps));
  // √(1/ᾱ − 1), as DiT computes it, loses 1e-12 of σ_0 to cancellation.
  EXPECT_NEAR(sigmas[0], std::sqrt(1e-4 / (1 - 1e-4)), 1e-13);
  const double beta1 = 1e-4 + (0.02 - 1e-4) / 999;
  EXPECT_NEAR(sigmas[1], std::sqrt(1 / ((1 - 1e-4) * (1 - beta1)) - 1), 1e-13);
  EXPECT_NEAR(sigmas[999], 157.40728081040757, 1e-9);  // numpy's cumprod of the same βs
  const std::vector<int64_t> steps = {0, 1, 137, 500, 998, 999};
  std::vector<double> at_steps;
  for (auto j : steps) at_steps.push_back(sigmas[static_cast<size_t>(j)]);
  const auto expected = torch::tensor(steps, torch::kFloat64);
  const auto t64 = ddpm_timestep(torch::tensor(at_steps, torch::kFloat64));
  EXPECT_LT((t64 - expected).abs().max().item<double>(), 1e-9);
  // σ_j rounded to float32 still lands on j, to float32's resolution at 999.
  const auto t32 = ddpm_timestep(torch::tensor(at_steps, torch::kFloat64).to(torch::kFloat32));
  EXPECT_EQ(t32.scalar_type(), torch::kFloat32);
  EXPECT_LT((t32.to(torch::kFloat64) - expected).abs().max().item<double>(), 1e-4);
  const auto between = ddpm_timestep(torch::tensor({std::sqrt(sigmas[10] * sigmas[11]), 0.002, 200.0}, torch::kFloat64));
  EXPECT_NEAR(between[0].item<double>(), 10.5, 1e-9);
  EXPECT_LT(between[1].item<double>(), 0.0);
  EXPECT_GT(between[2].item<double>(), 999.0);
  EXPECT_EQ(parameterization_from_name("ddpm"), Parameterization::DDPM);
}

// The denoiser's tangent (models/jvp.h): autodiff equals the central finite difference, on the
// analytic mixture (float64) and on a UNet with attention (float32), whose second derivative
// exists only on the math attention path that denoiser_jvp takes.
TEST(Jvp, AutodiffTangentMatchesAFiniteDifference) {
  const auto relative = [](const at::Tensor& a, const at::Tensor& b) { return ((a - b).abs().max() / b.abs().max()).item<double>(); };
  GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse(testing::kThreeModes2d, "three_modes.yaml"));
  std::vector<int64_t> indices(8);
  std::iota(indices.begin(), indices.end(), 0);
  const auto x = 2.0 * per_sample_normal(1, 0, indices, {2}, torch::kFloat64);
  const auto sigma = torch::linspace(0.3, 3.0, 8, torch::kFloat64);
  const auto x_tangent = per_sample_normal(1, 1, indices, {2}, torch::kFloat64), sigma_tangent = per_sample_normal(1, 2, indices, {}, torch::kFloat64);
  const auto forward = denoiser_jvp(gmm, x, sigma, {}, x_tangent, sigma_tangent);
  const auto difference = denoiser_jvp(gmm, x, sigma, {}, x_tangent, sigma_tangent, JvpMode::FiniteDifference, 1e-5);
  EXPECT_TRUE(torch::equal(forward.denoised, gmm.denoise(x, sigma, {})));
  EXPECT_LT(relative(forward.tangent, difference.tangent), 1e-7);

  torch::manual_seed(2);
  NetworkDenoiser unet(UNetConfig{.model_channels = 8, .channel_mult = {1, 2}, .blocks_per_level = 1, .attn_resolutions = {14, 28},
                                  .channels_per_head = 8, .dropout = 0});
  unet.module().eval();
  const auto images = per_sample_normal(1, 3, {0, 1}, {1, 28, 28}, torch::kFloat32);
  const auto image_sigma = torch::tensor({0.5f, 2.0f});
  const auto image_tangent = per_sample_normal(1, 4, {0, 1}, {1, 28, 28}, torch::kFloat32);
  const auto sigma_direction = torch::tensor({0.3f, -0.2f});
  const auto unet_forward = denoiser_jvp(unet, images, image_sigma, {}, image_tangent, sigma_direction);
  const auto unet_difference = denoiser_jvp(unet, images, image_sigma, {}, image_tangent, sigma_direction, JvpMode::FiniteDifference, 1e-2);
  // float32 with h = 1e-2: the difference itself is good to about 1e-3 relative.
  const double error = relative(unet_forward.tangent, unet_difference.tangent);
  std::printf("UNet JVP: autodiff against the central difference: max relative difference %.2e\n", error);
  EXPECT_LT(error, 1e-2);
  EXPECT_GT(unet_forward.tangent.abs().max().item<double>(), 0);
}

TEST(Schedule, GridsHaveTheirEndpointsAndDecrease) {
  for (int k = 0; k < kScheduleCount; ++k) {
    const ScheduleSpec spec{static_cast<ScheduleKind>(k), 0.002, 80.0, 7.0};
    SCOPED_TRACE(std::string(schedule_name(spec.kind)));
    const auto sigmas = make_sigmas(spec, 18);
    ASSERT_EQ(sigmas.size(), 19u);
    // The DDPM grid spans its discrete table, whatever the spec's range.
    const bool ddpm = spec.kind == ScheduleKind::Ddpm;
    EXPECT_NEAR(sigmas.front(), ddpm ? ddpm_sigmas().back() : 80.0, 1e-12);
    EXPECT_NEAR(sigmas[17], ddpm ? ddpm_sigmas().front() : 0.002, 1e-15);
    EXPECT_EQ(sigmas.back(), 0.0);
    for (size_t i = 1; i < sigmas.size(); ++i) EXPECT_LT(sigmas[i], sigmas[i - 1]);
  }
}

TEST(Schedule, EachKindIsUniformInItsOwnVariable) {
  const auto karras = make_sigmas({ScheduleKind::Karras, 0.002, 80.0, 7.0}, 10);
  const auto loglinear = make_sigmas({ScheduleKind::LogLinear, 0.002, 80.0, 7.0}, 10);
  const auto uniform_t = make_sigmas({ScheduleKind::UniformT, 0.002, 80.0, 7.0}, 10);
  for (int i = 1; i < 9; ++i) {
    EXPECT_NEAR(std::pow(karras[i + 1], 1 / 7.0) - std::pow(karras[i], 1 / 7.0), std::pow(karras[i], 1 / 7.0) - std::pow(karras[i - 1], 1 / 7.0), 1e-12);
    EXPECT_NEAR(std::log(loglinear[i + 1]) - std::log(loglinear[i]), std::log(loglinear[i]) - std::log(loglinear[i - 1]), 1e-12);
    EXPECT_NEAR(rf_time_from_sigma(uniform_t[i + 1]) - rf_time_from_sigma(uniform_t[i]),
                rf_time_from_sigma(uniform_t[i]) - rf_time_from_sigma(uniform_t[i - 1]), 1e-12);
  }
  // EDM's 18-step default grid: the second σ is 57.586.
  EXPECT_NEAR(make_sigmas({}, 18)[1], 57.586, 0.001);
}

// Improved DDPM's respacing, as DiT samples: 7 steps take every 166.5th timestep, rounded half
// to even as Python's round does (166.5 to 166, 499.5 to 500, 832.5 to 832).
TEST(Schedule, TheDdpmScheduleRespacesTheDiscreteTimestepsAsImprovedDdpmDoes) {
  const auto grid = make_sigmas({ScheduleKind::Ddpm}, 7);
  const std::vector<size_t> timesteps = {999, 832, 666, 500, 333, 166, 0};
  ASSERT_EQ(grid.size(), timesteps.size() + 1);
  for (size_t i = 0; i < timesteps.size(); ++i) EXPECT_EQ(grid[i], ddpm_sigmas()[timesteps[i]]) << i;
  EXPECT_EQ(grid.back(), 0.0);
  const auto all = make_sigmas({ScheduleKind::Ddpm}, kDdpmSteps);
  EXPECT_TRUE(std::equal(ddpm_sigmas().rbegin(), ddpm_sigmas().rend(), all.begin()));
  EXPECT_THROW(make_sigmas({ScheduleKind::Ddpm}, 1), Error);
  EXPECT_THROW(make_sigmas({ScheduleKind::Ddpm}, kDdpmSteps + 1), Error);
}

TEST(Schedule, OneStepAndInvalidRequests) {
  EXPECT_EQ(make_sigmas({}, 1), (std::vector<double>{80.0, 0.0}));
  EXPECT_THROW(make_sigmas({}, 0), Error);
  EXPECT_THROW(make_sigmas({ScheduleKind::Karras, 1.0, 0.5, 7.0}, 4), Error);
  EXPECT_EQ(schedule_from_name("uniform-t"), ScheduleKind::UniformT);
  testing::expect_error_mentioning<Error>([] { schedule_from_name("cosine"); }, {"karras, uniform-t, loglinear"});
}

}  // namespace
}  // namespace distillery
