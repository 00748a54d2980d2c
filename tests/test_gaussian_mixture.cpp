// The analytic teacher: its denoiser is exactly Tweedie's formula on the mixture's density.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/autograd.h>

#include "core/error.h"
#include "teachers/gaussian_mixture.h"
#include "test_support.h"

namespace distillery {
namespace {

using testing::kThreeModes2d;


const char* kImageShaped = R"(
shape: [1, 4, 4]
weights: [1, 3]
means: [[0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5],
        [-1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1]]
stds: [0.1, 0.25]
)";

// D(x; σ) = x + σ² ∇ log p_σ(x), the score taken by autograd from the mixture's log density.
at::Tensor tweedie(const GaussianMixtureDenoiser& gmm, at::Tensor x, const at::Tensor& sigma) {
  x = x.detach().requires_grad_(true);
  const auto score = torch::autograd::grad({gmm.log_density(x, sigma).sum()}, {x})[0];
  std::vector<int64_t> per_sample(static_cast<size_t>(x.dim()), 1);
  per_sample[0] = -1;
  return (x + sigma.square().view(per_sample) * score).detach();
}

TEST(GaussianMixture, DenoiserEqualsTweediesFormula) {
  torch::manual_seed(0);
  for (const char* yaml : {kThreeModes2d, kImageShaped}) {
    GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse(yaml, "spec.yaml"));
    std::vector<int64_t> shape = {6};
    for (auto d : gmm.sample_shape()) shape.push_back(d);
    for (double s : {0.002, 0.05, 0.5, 2.0, 20.0, 80.0}) {
      const auto sigma = torch::full({6}, s, torch::kFloat64);
      const auto x = torch::randn(shape, torch::kFloat64) * std::sqrt(1 + s * s);
      const auto expected = tweedie(gmm, x, sigma);
      const auto got = gmm.denoise(x, sigma, {});
      EXPECT_LT((got - expected).abs().max().item<double>(), 1e-5) << "σ = " << s;
    }
  }
}

TEST(GaussianMixture, LimitsOfTheDenoiser) {
  GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse(kThreeModes2d, "spec.yaml"));
  // Huge σ: the data are invisible, D(x) → the mixture mean. Tiny σ: D(x) → x.
  const auto x = torch::tensor({{3.0, -1.0}}, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(gmm.denoise(x, torch::tensor({1e6}, torch::kFloat64), {})[0], gmm.spec().mean(), 0, 1e-6));
  EXPECT_TRUE(torch::allclose(gmm.denoise(x, torch::tensor({1e-6}, torch::kFloat64), {}), x, 0, 1e-6));
  // float32 in, float32 out, same values to float32 precision.
  const auto f32 = gmm.denoise(x.to(torch::kFloat32), torch::tensor({0.7f}), {});
  EXPECT_EQ(f32.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(f32.to(torch::kFloat64), gmm.denoise(x, torch::tensor({0.7}, torch::kFloat64), {}), 1e-6, 1e-6));
}

TEST(GaussianMixture, ExactMoments) {
  GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse("dim: 1\nweights: [1, 3]\nmeans: [[-1], [1]]\nstds: [0.5, 0.5]\n", "m.yaml"));
  // mean = ¼·(−1) + ¾·1 = 0.5; variance = 0.25 + E[μ²] − 0.25 = 0.25 + 1 − 0.25.
  EXPECT_NEAR(gmm.spec().mean().item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(gmm.spec().covariance().item<double>(), 1.0, 1e-15);
}

std::string spec_error(const std::string& yaml) {
  try {
    GaussianMixtureSpec::parse(yaml, "bad.yaml");
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "bad.yaml");
    return e.what();
  }
  return "(accepted)";
}

TEST(GaussianMixture, SpecErrorsNameTheProblem) {
  EXPECT_NE(spec_error("dim: 2\nweights: [1]\nmean: [[0, 0]]\nstds: [1]").find("did you mean 'means'?"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nweights: [1]\nmeans: [[0, 0, 0]]\nstds: [1]").find("mean of component 0 has the wrong length"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nweights: [1, 1]\nmeans: [[0, 0]]\nstds: [1, 1]").find("'means' must have one row per component"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nweights: [1]\nmeans: [[0, 0]]\nstds: [0]").find("config key 'stds' is out of range\n  file: bad.yaml\n  field: stds\n  expected: a number > 0\n  got: 0"), std::string::npos);
  EXPECT_NE(spec_error("weights: [1]\nmeans: [[0, 0]]\nstds: [1]").find("exactly one of 'dim' and 'shape'"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nweights: [-1]\nmeans: [[0, 0]]\nstds: [1]").find("config key 'weights' is out of range"), std::string::npos);
  EXPECT_NE(spec_error("shape: [128, 128, 2]\nweights: [1]\nmeans: [[0]]\nstds: [1]").find("at most 16384 values"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nweights: [1]\nmeans: [[0, .nan]]\nstds: [1]").find("config key 'means' is out of range"), std::string::npos);
  EXPECT_NE(spec_error("dim: 2\nmeans: [[0, 0]]\nstds: [1]").find("missing required config key 'weights'"), std::string::npos);
  EXPECT_THROW(GaussianMixtureSpec::load("/nonexistent/gmm.yaml"), Error);
}

TEST(GaussianMixture, WrongInputShapeIsAnError) {
  GaussianMixtureDenoiser gmm(GaussianMixtureSpec::parse(kThreeModes2d, "spec.yaml"));
  testing::expect_error_mentioning<Error>([&] { gmm.denoise(torch::zeros({4, 3}), torch::ones({4}), {}); }, {"expected: [?, 2]", "got: [4, 3]"});
}

}  // namespace
}  // namespace distillery
