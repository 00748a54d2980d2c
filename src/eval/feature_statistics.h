// defines: FeatureStatistics
// Running mean and covariance of feature vectors in float64, merged batch by batch with Chan
// et al.'s pairwise update (no catastrophic cancellation from E[xxᵀ] − μμᵀ), so statistics of
// any number of images need memory for one batch and one d×d matrix. The covariance is the
// unbiased one (N − 1), as numpy's np.cov in pytorch-fid and EDM.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>

namespace distillery {

class FeatureStatistics {
 public:
  void add(const at::Tensor& features);  // [n, d]
  int64_t count() const { return count_; }
  int64_t dims() const { return mean_.defined() ? mean_.size(0) : 0; }
  at::Tensor mean() const;               // [d] float64
  at::Tensor covariance() const;         // [d, d] float64

  // .npz with `mu` and `sigma` (pytorch-fid / EDM), plus `count` (ignored by them).
  void save(const std::filesystem::path& path) const;
  // Reads `mu` and `sigma`; `expected_dims` > 0 checks the feature dimension.
  static FeatureStatistics load(const std::filesystem::path& path, int64_t expected_dims = 0);
  static FeatureStatistics from_moments(at::Tensor mean, at::Tensor covariance, int64_t count);

 private:
  int64_t count_ = 0;
  at::Tensor mean_, scatter_;  // Σ (x − μ)(x − μ)ᵀ
};

}  // namespace distillery
