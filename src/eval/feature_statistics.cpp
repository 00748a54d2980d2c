#include "eval/feature_statistics.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <algorithm>
#include <map>

#include "core/error.h"
#include "eval/npz.h"

namespace distillery {

void FeatureStatistics::add(const at::Tensor& features) {
  DISTILLERY_CHECK(!covariance_.defined(), Error("statistics read without a count cannot take more features"));
  DISTILLERY_CHECK(features.dim() == 2 && features.size(0) > 0, Error("features must be a non-empty [n, d] matrix"));
  DISTILLERY_CHECK(!mean_.defined() || features.size(1) == mean_.size(0),
                   Error("feature dimension changed between batches").expected(std::to_string(dims())).got(std::to_string(features.size(1))));
  const auto x = features.to(torch::kCPU, torch::kFloat64);
  const int64_t n = x.size(0);
  const auto batch_mean = x.mean(0);
  const auto centred = x - batch_mean;
  const auto batch_scatter = centred.t().matmul(centred);
  if (count_ == 0) {
    mean_ = batch_mean;
    scatter_ = batch_scatter;
  } else {
    const double total = static_cast<double>(count_ + n);
    const auto delta = batch_mean - mean_;
    mean_ = mean_ + delta * (static_cast<double>(n) / total);
    scatter_ = scatter_ + batch_scatter + torch::outer(delta, delta) * (static_cast<double>(count_) * static_cast<double>(n) / total);
  }
  count_ += n;
}

at::Tensor FeatureStatistics::mean() const {
  DISTILLERY_CHECK(count_ > 0 || covariance_.defined(), Error("no features were added"));
  return mean_;
}

at::Tensor FeatureStatistics::covariance() const {
  if (covariance_.defined()) return covariance_;
  DISTILLERY_CHECK(count_ > 1, Error("a covariance needs at least two feature vectors").got(std::to_string(count_)));
  return scatter_ / static_cast<double>(count_ - 1);
}

void FeatureStatistics::save(const std::filesystem::path& path, const std::string& feature_network) const {
  std::map<std::string, at::Tensor> arrays = {{"mu", mean()}, {"sigma", covariance()}, {"count", torch::tensor({count_}, torch::kInt64)}};
  if (!feature_network.empty())
    arrays[kFeatureNetworkKey] = torch::from_blob(const_cast<char*>(feature_network.data()), {static_cast<int64_t>(feature_network.size())}, torch::kUInt8).clone();
  write_npz(path, arrays);
}

FeatureStatistics FeatureStatistics::from_moments(at::Tensor mean, at::Tensor covariance, int64_t count) {
  FeatureStatistics s;
  s.count_ = count;
  s.mean_ = mean.to(torch::kFloat64);
  if (count > 0)
    s.scatter_ = covariance.to(torch::kFloat64) * static_cast<double>(std::max<int64_t>(count - 1, 1));
  else
    s.covariance_ = covariance.to(torch::kFloat64);
  return s;
}

FeatureStatistics FeatureStatistics::load(const std::filesystem::path& path, int64_t expected_dims, const std::string& expected_network) {
  const auto arrays = read_npz(path);
  if (const auto stored = arrays.find(kFeatureNetworkKey); stored != arrays.end()) {
    const auto& bytes = stored->second;
    DISTILLERY_CHECK(bytes.scalar_type() == torch::kUInt8 && bytes.dim() == 1,
                     Error(fmt::format("'{}' must be the feature network's fingerprint as bytes", kFeatureNetworkKey)).file(path.string())
                         .got(fmt::format("{} [{}]", c10::toString(bytes.scalar_type()), fmt::join(bytes.sizes(), ", "))));
    const std::string fingerprint(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
    // Two classifiers of one width give statistics of one shape; only the fingerprint tells them apart.
    DISTILLERY_CHECK(expected_network.empty() || fingerprint == expected_network,
                     Error("statistics were computed with another feature network").file(path.string())
                         .expected("features of the network with fingerprint " + expected_network).got("fingerprint " + fingerprint)
                         .hint("compute the reference with the same --classifier (eval stats)"));
  }
  for (const char* key : {"mu", "sigma"})
    DISTILLERY_CHECK(arrays.count(key), Error(fmt::format("statistics file has no '{}' array", key)).file(path.string()).expected("arrays mu [d] and sigma [d, d]"));
  const auto mu = arrays.at("mu"), sigma = arrays.at("sigma");
  DISTILLERY_CHECK(mu.dim() == 1 && sigma.dim() == 2 && sigma.size(0) == mu.size(0) && sigma.size(1) == mu.size(0),
                   Error("statistics arrays have inconsistent shapes").file(path.string()).expected("mu [d] and sigma [d, d]")
                       .got(fmt::format("mu [{}], sigma [{}]", fmt::join(mu.sizes(), ", "), fmt::join(sigma.sizes(), ", "))));
  DISTILLERY_CHECK(expected_dims <= 0 || mu.size(0) == expected_dims,
                   Error("statistics were computed with another feature network").file(path.string())
                       .expected(fmt::format("{}-dimensional features", expected_dims)).got(fmt::format("{}-dimensional", mu.size(0))));
  for (const auto& [key, array] : {std::pair{"mu", mu}, {"sigma", sigma}}) {
    DISTILLERY_CHECK(array.is_floating_point(), Error(fmt::format("statistics array '{}' is not floating point", key)).file(path.string())
                                                    .expected("float64 or float32").got(std::string(c10::toString(array.scalar_type()))));
    DISTILLERY_CHECK(torch::isfinite(array).all().item<bool>(),
                     Error(fmt::format("statistics array '{}' holds a non-finite value", key)).file(path.string()).expected("finite numbers"));
  }
  const auto covariance = sigma.to(torch::kFloat64);
  // What rounding leaves in a covariance computed in float64: far below these bounds.
  const double scale = std::max(1.0, covariance.abs().max().item<double>());
  const double asymmetry = (covariance - covariance.t()).abs().max().item<double>();
  DISTILLERY_CHECK(asymmetry <= 1e-6 * scale, Error("'sigma' is not a covariance: it is not symmetric").file(path.string())
                                                  .expected("sigma = sigmaᵀ").got(fmt::format("entries differing by up to {:.3g} (largest entry {:.3g})", asymmetry, scale)));
  const double lowest = at::linalg_eigvalsh(0.5 * (covariance + covariance.t())).min().item<double>();
  DISTILLERY_CHECK(lowest >= -1e-6 * scale, Error("'sigma' is not a covariance: it has a negative eigenvalue").file(path.string())
                                                .expected("a positive semi-definite matrix").got(fmt::format("smallest eigenvalue {:.3g} (largest entry {:.3g})", lowest, scale)));
  int64_t count = 0;
  if (arrays.count("count")) {
    const auto& stored = arrays.at("count");
    DISTILLERY_CHECK(stored.scalar_type() == torch::kInt64 && stored.numel() == 1 && stored.item<int64_t>() >= 2,
                     Error("'count' must be one int64 of at least 2, the number of feature vectors").file(path.string())
                         .got(stored.numel() == 1 ? std::to_string(stored.to(torch::kFloat64).item<double>()) : fmt::format("{} values", stored.numel())));
    count = stored.item<int64_t>();
  }
  return from_moments(mu, covariance, count);
}

}  // namespace distillery
