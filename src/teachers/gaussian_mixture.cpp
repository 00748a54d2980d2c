#include "teachers/gaussian_mixture.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <numbers>
#include <limits>
#include <numeric>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_checks.h"

namespace distillery {

namespace {
const ConfigSchema& spec_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"dim", ConfigType::Int, "dimension of flat samples (give this or shape)"});
    s.add({"shape", ConfigType::IntList, "sample shape, e.g. [1, 28, 28] (give this or dim)"});
    s.add({"weights", ConfigType::FloatList, "mixture weights, positive; normalised to sum to 1", {}, true});
    s.add({"means", ConfigType::FloatMatrix, "component means, one row of length dim per component", {}, true});
    s.add({"stds", ConfigType::FloatList, "per-component isotropic standard deviations, positive", {}, true});
    s.add({"sigma_min", ConfigType::Float, "smallest σ samplers use by default", "0.002"});
    s.add({"sigma_max", ConfigType::Float, "largest σ samplers start from by default", "80"});
    s.add({"conditional", ConfigType::Bool, "class k is component k (labels select a component)", "false"});
    return s;
  }();
  return schema;
}

std::string numbers(const std::vector<double>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }
}  // namespace

GaussianMixtureSpec GaussianMixtureSpec::parse(const std::string& yaml_text, const std::string& source) {
  const auto config = Config::parse(spec_schema(), yaml_text, source);
  GaussianMixtureSpec spec;
  DISTILLERY_CHECK(config.has("dim") != config.has("shape"),
                   Error("a Gaussian-mixture spec needs exactly one of 'dim' and 'shape'").file(source).field("dim/shape"));
  spec.shape = config.has("shape") ? config.get_int_list("shape") : std::vector<int64_t>{config.get_int("dim")};
  DISTILLERY_CHECK(!spec.shape.empty() && std::all_of(spec.shape.begin(), spec.shape.end(), [](int64_t d) { return d > 0; }),
                   Error("sample shape must have positive sizes").file(source).field("dim/shape").got(shape_string(spec.shape)));
  spec.weights = config.get_float_list("weights");
  spec.means = config.get_float_matrix("means");
  spec.stds = config.get_float_list("stds");
  spec.sigma_min = config.get_float("sigma_min");
  spec.sigma_max = config.get_float("sigma_max");
  spec.conditional = config.get_bool("conditional");

  const size_t K = spec.weights.size();
  const int64_t D = spec.dim();
  DISTILLERY_CHECK(K > 0, Error("a Gaussian mixture needs at least one component").file(source).field("weights"));
  DISTILLERY_CHECK(spec.means.size() == K,
                   Error("'means' must have one row per component").file(source).field("means").expected(fmt::format("{} rows", K)).got(fmt::format("{} rows", spec.means.size())));
  DISTILLERY_CHECK(spec.stds.size() == K,
                   Error("'stds' must have one entry per component").file(source).field("stds").expected(fmt::format("{} values", K)).got(fmt::format("{} values", spec.stds.size())));
  for (size_t k = 0; k < K; ++k) {
    DISTILLERY_CHECK(static_cast<int64_t>(spec.means[k].size()) == D,
                     Error(fmt::format("mean of component {} has the wrong length", k)).file(source).field("means").expected(std::to_string(D)).got(std::to_string(spec.means[k].size())));
    DISTILLERY_CHECK(spec.weights[k] > 0 && std::isfinite(spec.weights[k]),
                     Error("mixture weights must be positive").file(source).field("weights").got(numbers(spec.weights)));
    DISTILLERY_CHECK(spec.stds[k] > 0 && std::isfinite(spec.stds[k]),
                     Error("component stds must be positive").file(source).field("stds").got(numbers(spec.stds)));
  }
  DISTILLERY_CHECK(spec.sigma_min > 0 && spec.sigma_max > spec.sigma_min,
                   Error("invalid σ range").file(source).expected("0 < sigma_min < sigma_max").got(fmt::format("{} .. {}", spec.sigma_min, spec.sigma_max)));
  const double total = std::accumulate(spec.weights.begin(), spec.weights.end(), 0.0);
  for (auto& w : spec.weights) w /= total;
  return spec;
}

GaussianMixtureSpec GaussianMixtureSpec::load(const std::filesystem::path& yaml_file) {
  std::ifstream in(yaml_file);
  if (!in) throw Error("cannot open Gaussian-mixture spec").file(yaml_file.string()).hint("gmm:FILE needs a YAML file with dim, weights, means, stds");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), yaml_file.string());
}

int64_t GaussianMixtureSpec::dim() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

GaussianMixtureDenoiser::GaussianMixtureDenoiser(GaussianMixtureSpec spec) : spec_(std::move(spec)) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  weights_ = torch::tensor(spec_.weights, f64);
  means_ = torch::empty({spec_.components(), spec_.dim()}, f64);
  for (int64_t k = 0; k < spec_.components(); ++k) means_[k] = torch::tensor(spec_.means[k], f64);
  variances_ = torch::tensor(spec_.stds, f64).square();
}

std::pair<at::Tensor, at::Tensor> GaussianMixtureDenoiser::draw_clean(int64_t num, uint64_t seed) const {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto components = torch::multinomial(weights_, num, /*replacement=*/true, generator);
  const auto noise = at::normal(0.0, 1.0, {num, spec_.dim()}, generator, torch::kFloat64);
  const auto x = means_.index_select(0, components) + variances_.index_select(0, components).sqrt().unsqueeze(1) * noise;
  std::vector<int64_t> shape = {num};
  shape.insert(shape.end(), spec_.shape.begin(), spec_.shape.end());
  return {x.to(torch::kFloat32).reshape(shape), components};
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
    const auto component = torch::arange(spec_.components(), torch::kInt64).unsqueeze(0);
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

at::Tensor GaussianMixtureDenoiser::mean() const { return torch::matmul(weights_, means_); }

at::Tensor GaussianMixtureDenoiser::covariance() const {
  const auto m = mean();
  const auto second_moment = torch::matmul(means_.t() * weights_, means_) +
                             torch::eye(spec_.dim(), torch::kFloat64) * (weights_ * variances_).sum();
  return second_moment - torch::outer(m, m);
}

std::string GaussianMixtureDenoiser::describe() const {
  std::vector<std::string> rows;
  for (const auto& row : spec_.means) rows.push_back(numbers(row));
  return fmt::format("gmm shape={} weights={} means=[{}] stds={} sigma=[{}, {}]{}", shape_string(spec_.shape), numbers(spec_.weights),
                     fmt::join(rows, ", "), numbers(spec_.stds), spec_.sigma_min, spec_.sigma_max, spec_.conditional ? " conditional" : "");
}

}  // namespace distillery
