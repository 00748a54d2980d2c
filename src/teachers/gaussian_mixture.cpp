#include "teachers/gaussian_mixture.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "core/error.h"
#include "core/tensor_checks.h"

namespace distillery {

GaussianMixtureDenoiser::GaussianMixtureDenoiser(GaussianMixtureSpec spec) : spec_(std::move(spec)) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  weights_ = torch::tensor(spec_.weights, f64);
  means_ = spec_.means_tensor();
  variances_ = torch::tensor(spec_.stds, f64).square();
}

void GaussianMixtureDenoiser::to(const c10::Device& device) {
  weights_ = weights_.to(device);
  means_ = means_.to(device);
  variances_ = variances_.to(device);
}

std::pair<at::Tensor, at::Tensor> GaussianMixtureDenoiser::component_logits(const at::Tensor& x_flat, const at::Tensor& sigma,
                                                                             const at::Tensor& labels) const {
  const double D = static_cast<double>(spec_.dim());
  const auto v = variances_.unsqueeze(0) + sigma.to(torch::kFloat64).square().unsqueeze(1);  // [N, K]
  const auto sq_dist = (x_flat.unsqueeze(1) - means_.unsqueeze(0)).square().sum(-1);         // [N, K]
  auto logits = weights_.log().unsqueeze(0) - 0.5 * D * (2.0 * std::numbers::pi * v).log() - sq_dist / (2.0 * v);
  if (labels.defined() && spec_.conditional) {
    check_shape(labels, {x_flat.size(0)}, "labels for the Gaussian-mixture denoiser");
    DISTILLERY_CHECK(labels.max().item<int64_t>() < spec_.components() && labels.min().item<int64_t>() >= -1,
                     Error("Gaussian-mixture labels must be −1 or a component index").expected(fmt::format("−1..{}", spec_.components() - 1)));
    const auto component = torch::arange(spec_.components(), labels.options()).unsqueeze(0);
    const auto excluded = labels.unsqueeze(1).ge(0) & labels.unsqueeze(1).ne(component);
    logits = logits.masked_fill(excluded, -std::numeric_limits<double>::infinity());
  }
  return {logits, v};
}

at::Tensor GaussianMixtureDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  std::vector<int64_t> expected = {kAnySize};
  expected.insert(expected.end(), spec_.shape.begin(), spec_.shape.end());
  check_shape(x, expected, "input to the Gaussian-mixture denoiser");
  check_shape(sigma, {x.size(0)}, "σ for the Gaussian-mixture denoiser");
  // float64 throughout: responsibilities of far-apart modes underflow in float32.
  const auto x_flat = x.to(torch::kFloat64).reshape({x.size(0), -1});
  const auto [logits, v] = component_logits(x_flat, sigma, labels);
  const auto r = torch::softmax(logits, 1);
  const auto sigma2 = sigma.to(torch::kFloat64).square().unsqueeze(1);
  // Σ_k r_k [μ_k + s_k²/v_k (x − μ_k)] = (Σ_k r_k s_k²/v_k)·x + Σ_k (r_k σ²/v_k)·μ_k
  const auto keep = (r * variances_.unsqueeze(0) / v).sum(1, true);
  const auto posterior = keep * x_flat + torch::matmul(r * sigma2 / v, means_);
  return posterior.reshape(x.sizes()).to(x.scalar_type());
}

at::Tensor GaussianMixtureDenoiser::log_density(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) const {
  return torch::logsumexp(component_logits(x.reshape({x.size(0), -1}).to(torch::kFloat64), sigma, labels).first, 1);
}

std::string GaussianMixtureDenoiser::describe() const {
  std::vector<std::string> rows;
  for (const auto& row : spec_.means) rows.push_back(fmt::format("[{}]", fmt::join(row, ", ")));
  return fmt::format("gmm shape={} weights=[{}] means=[{}] stds=[{}] sigma=[{}, {}]{}", shape_string(spec_.shape), fmt::join(spec_.weights, ", "),
                     fmt::join(rows, ", "), fmt::join(spec_.stds, ", "), spec_.sigma_min, spec_.sigma_max, spec_.conditional ? " conditional" : "");
}

}  // namespace distillery
