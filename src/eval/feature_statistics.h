// defines: FeatureStatistics, kFeatureNetworkKey
// Running mean and covariance of feature vectors in float64, merged batch by batch with Chan
// et al.'s pairwise update (no catastrophic cancellation from E[xxᵀ] − μμᵀ), so statistics of
// any number of images need memory for one batch and one d×d matrix. The covariance is the
// unbiased one (N − 1), as numpy's np.cov in pytorch-fid and EDM.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace distillery {

inline constexpr const char* kFeatureNetworkKey = "feature_network";

class FeatureStatistics {
 public:
  void add(const at::Tensor& features);  // [n, d]
  // How many feature vectors made these statistics; unknown (0) for a file without `count`.
  int64_t count() const { return count_; }
  bool count_known() const { return count_ > 0; }
  int64_t dims() const { return mean_.defined() ? mean_.size(0) : 0; }
  at::Tensor mean() const;               // [d] float64
  at::Tensor covariance() const;         // [d, d] float64

  // .npz with `mu` and `sigma` (pytorch-fid / EDM), plus `count` and, when given, the feature
  // network's fingerprint as bytes, `feature_network` (both ignored by them).
  void save(const std::filesystem::path& path, const std::string& feature_network = "") const;
  // Reads `mu` and `sigma` (and `count` when present: pytorch-fid's and EDM's files have none)
  // and refuses what no set of features has: a non-finite value, a covariance that is not
  // symmetric or has a negative eigenvalue (beyond rounding), a count below 2. `expected_dims`
  // > 0 checks the feature dimension; a non-empty `expected_network` the fingerprint, in files
  // that carry one.
  static FeatureStatistics load(const std::filesystem::path& path, int64_t expected_dims = 0, const std::string& expected_network = "");
  // count 0: unknown (the statistics cannot take more features).
  static FeatureStatistics from_moments(at::Tensor mean, at::Tensor covariance, int64_t count);

 private:
  int64_t count_ = 0;
  at::Tensor mean_, scatter_;  // Σ (x − μ)(x − μ)ᵀ
  at::Tensor covariance_;      // given by from_moments without a count
};

}  // namespace distillery
