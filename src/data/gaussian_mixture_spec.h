// defines: GaussianMixtureSpec
// A mixture of isotropic Gaussians as data: its YAML spec, exact moments and exact draws. The
// analytic teacher (teachers/gaussian_mixture.h) is its exact denoiser; training data and
// in-loop evaluation use the draws and moments.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace distillery {

struct GaussianMixtureSpec {
  std::vector<int64_t> shape;             // sample shape; its product is the dimension D
  std::vector<double> weights;            // [K], normalised to sum to 1 on load
  std::vector<std::vector<double>> means; // [K][D]
  std::vector<double> stds;               // [K], isotropic per component
  double sigma_min = 0.002, sigma_max = 80.0;
  bool conditional = false;               // class k = component k; label −1 = the whole mixture

  // YAML: `dim` (or `shape`), `weights`, `means`, `stds`, optional `sigma_min`/`sigma_max`,
  // `conditional`.
  static GaussianMixtureSpec load(const std::filesystem::path& yaml_file);
  static GaussianMixtureSpec parse(const std::string& yaml_text, const std::string& source);
  int64_t dim() const;
  int64_t components() const { return static_cast<int64_t>(weights.size()); }

  at::Tensor means_tensor() const;  // [K, D] float64 on the CPU
  // The mixture's exact moments, float64 on the CPU: [D] and [D, D].
  at::Tensor mean() const;
  at::Tensor covariance() const;
  // `num` exact draws of clean data on the CPU, float32 [num, *shape], and their components
  // int64 [num]; a function of (spec, num, seed) only.
  std::pair<at::Tensor, at::Tensor> draw(int64_t num, uint64_t seed) const;
};

}  // namespace distillery
