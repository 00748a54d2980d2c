#include "eval/feature_statistics.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include "core/error.h"
#include "eval/npz.h"

namespace distillery {

void FeatureStatistics::add(const at::Tensor& features) {
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
  DISTILLERY_CHECK(count_ > 0, Error("no features were added"));
  return mean_;
}

at::Tensor FeatureStatistics::covariance() const {
  DISTILLERY_CHECK(count_ > 1, Error("a covariance needs at least two feature vectors").got(std::to_string(count_)));
  return scatter_ / static_cast<double>(count_ - 1);
}

void FeatureStatistics::save(const std::filesystem::path& path) const {
  write_npz(path, {{"mu", mean()}, {"sigma", covariance()}, {"count", torch::tensor({count_}, torch::kInt64)}});
}

FeatureStatistics FeatureStatistics::from_moments(at::Tensor mean, at::Tensor covariance, int64_t count) {
  FeatureStatistics s;
  s.count_ = count;
  s.mean_ = mean.to(torch::kFloat64);
  s.scatter_ = covariance.to(torch::kFloat64) * static_cast<double>(std::max<int64_t>(count - 1, 1));
  return s;
}

FeatureStatistics FeatureStatistics::load(const std::filesystem::path& path, int64_t expected_dims) {
  const auto arrays = read_npz(path);
  for (const char* key : {"mu", "sigma"})
    DISTILLERY_CHECK(arrays.count(key), Error(fmt::format("statistics file has no '{}' array", key)).file(path.string()).expected("arrays mu [d] and sigma [d, d]"));
  const auto mu = arrays.at("mu"), sigma = arrays.at("sigma");
  DISTILLERY_CHECK(mu.dim() == 1 && sigma.dim() == 2 && sigma.size(0) == mu.size(0) && sigma.size(1) == mu.size(0),
                   Error("statistics arrays have inconsistent shapes").file(path.string()).expected("mu [d] and sigma [d, d]")
                       .got(fmt::format("mu [{}], sigma [{}]", fmt::join(mu.sizes(), ", "), fmt::join(sigma.sizes(), ", "))));
  DISTILLERY_CHECK(expected_dims <= 0 || mu.size(0) == expected_dims,
                   Error("statistics were computed with another feature network").file(path.string())
                       .expected(fmt::format("{}-dimensional features", expected_dims)).got(fmt::format("{}-dimensional", mu.size(0))));
  const int64_t count = arrays.count("count") ? arrays.at("count").reshape({-1})[0].item<int64_t>() : 0;
  return from_moments(mu, sigma, count);
}

}  // namespace distillery
