#include "data/gaussian_mixture_spec.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <fstream>
#include <numeric>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_checks.h"

namespace distillery {

namespace {
const ConfigSchema& spec_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"dim", ConfigType::Int, "dimension of flat samples (give this or shape)"}, NumberRange::between(1, 1 << 14));
    s.add({"shape", ConfigType::IntList, "sample shape, e.g. [1, 28, 28] (give this or dim)"}, NumberRange::between(1, 1 << 14));
    s.add({"weights", ConfigType::FloatList, "mixture weights, positive; normalised to sum to 1", {}, true}, NumberRange::above(0));
    s.add({"means", ConfigType::FloatMatrix, "component means, one row of length dim per component", {}, true});
    s.add({"stds", ConfigType::FloatList, "per-component isotropic standard deviations, positive", {}, true}, NumberRange::above(0));
    s.add({"sigma_min", ConfigType::Float, "smallest σ samplers use by default", "0.002"}, NumberRange::above(0));
    s.add({"sigma_max", ConfigType::Float, "largest σ samplers start from by default", "80"}, NumberRange::above(0));
    s.add({"conditional", ConfigType::Bool, "class k is component k (labels select a component)", "false"});
    return s;
  }();
  return schema;
}

}  // namespace

GaussianMixtureSpec GaussianMixtureSpec::parse(const std::string& yaml_text, const std::string& source) {
  const auto config = Config::parse(spec_schema(), yaml_text, source);
  GaussianMixtureSpec spec;
  DISTILLERY_CHECK(config.has("dim") != config.has("shape"),
                   Error("a Gaussian-mixture spec needs exactly one of 'dim' and 'shape'").file(source).field("dim/shape"));
  spec.shape = config.has("shape") ? config.get_int_list("shape") : std::vector<int64_t>{config.get_int("dim")};
  // The analytic covariance is dim × dim float64: 2 GiB at this bound.
  constexpr int64_t kMaxDim = int64_t{1} << 14;
  int64_t dim = 1;
  for (const auto size : spec.shape) dim = std::min(dim * size, kMaxDim + 1);
  DISTILLERY_CHECK(!spec.shape.empty() && dim <= kMaxDim,
                   Error("sample shape must have at least one dimension and at most 16384 values").file(source).field("dim/shape").got(shape_string(spec.shape)));
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
  }
  DISTILLERY_CHECK(spec.sigma_max > spec.sigma_min,
                   Error("invalid σ range").file(source).expected("sigma_min < sigma_max").got(fmt::format("{} .. {}", spec.sigma_min, spec.sigma_max)));
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

at::Tensor GaussianMixtureSpec::means_tensor() const {
  auto out = torch::empty({components(), dim()}, torch::kFloat64);
  for (int64_t k = 0; k < components(); ++k) out[k] = torch::tensor(means[static_cast<size_t>(k)], torch::kFloat64);
  return out;
}

at::Tensor GaussianMixtureSpec::mean() const { return torch::matmul(torch::tensor(weights, torch::kFloat64), means_tensor()); }

at::Tensor GaussianMixtureSpec::covariance() const {
  const auto w = torch::tensor(weights, torch::kFloat64), mu = means_tensor(), variances = torch::tensor(stds, torch::kFloat64).square();
  const auto m = mean();
  const auto second_moment = torch::matmul(mu.t() * w, mu) + torch::eye(dim(), torch::kFloat64) * (w * variances).sum();
  return second_moment - torch::outer(m, m);
}

std::pair<at::Tensor, at::Tensor> GaussianMixtureSpec::draw(int64_t num, uint64_t seed) const {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto components = torch::multinomial(torch::tensor(weights, torch::kFloat64), num, /*replacement=*/true, generator);
  const auto noise = at::normal(0.0, 1.0, {num, dim()}, generator, torch::kFloat64);
  const auto variances = torch::tensor(stds, torch::kFloat64).square();
  const auto x = means_tensor().index_select(0, components) + variances.index_select(0, components).sqrt().unsqueeze(1) * noise;
  std::vector<int64_t> sample_shape = {num};
  sample_shape.insert(sample_shape.end(), shape.begin(), shape.end());
  return {x.to(torch::kFloat32).reshape(sample_shape), components};
}

}  // namespace distillery
