// defines: GaussianMixtureSpec, GaussianMixtureDenoiser
// The analytic teacher: the exact denoiser of a mixture of isotropic Gaussians. Under noise σ
// component k becomes N(μ_k, (s_k² + σ²)·I), so E[x0 | x] has a closed form: the
// responsibility-weighted posterior means. It makes sampler orders, trajectories and
// distillation quality measurable without training anything.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <vector>

#include "models/denoiser.h"

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
};

class GaussianMixtureDenoiser final : public Denoiser {
 public:
  explicit GaussianMixtureDenoiser(GaussianMixtureSpec spec);

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  std::vector<int64_t> sample_shape() const override { return spec_.shape; }
  int64_t num_classes() const override { return spec_.conditional ? spec_.components() : 0; }
  double sigma_min() const override { return spec_.sigma_min; }
  double sigma_max() const override { return spec_.sigma_max; }
  std::string describe() const override;

  // log p_σ(x | label) per sample, [N] float64, differentiable in x (Tweedie: D = x + σ²∇log p_σ);
  // labels undefined or −1: the whole mixture.
  at::Tensor log_density(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels = {}) const;
  // Exact moments of the clean data (σ = 0), float64: mean [D] and covariance [D, D].
  at::Tensor mean() const;
  at::Tensor covariance() const;
  // `num` exact draws of clean data, float32 [num, *shape], and their components int64 [num];
  // a function of (num, seed) alone.
  std::pair<at::Tensor, at::Tensor> draw_clean(int64_t num, uint64_t seed) const;
  const GaussianMixtureSpec& spec() const { return spec_; }

 private:
  // Per-component log-likelihood terms [N, K] and the per-component variances [N, K]; a row
  // with label k ≥ 0 keeps only component k.
  std::pair<at::Tensor, at::Tensor> component_logits(const at::Tensor& x_flat, const at::Tensor& sigma, const at::Tensor& labels) const;

  GaussianMixtureSpec spec_;
  at::Tensor weights_, means_, variances_;  // float64: [K], [K, D], [K]
};

}  // namespace distillery
