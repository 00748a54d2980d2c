// defines: GaussianMixtureDenoiser
// The analytic teacher: the exact denoiser of a mixture of isotropic Gaussians. Under noise σ
// component k becomes N(μ_k, (s_k² + σ²)·I), so E[x0 | x] has a closed form: the
// responsibility-weighted posterior means. It makes sampler orders, trajectories and
// distillation quality measurable without training anything.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/gaussian_mixture_spec.h"
#include "models/denoiser.h"

namespace distillery {

class GaussianMixtureDenoiser final : public Denoiser {
 public:
  explicit GaussianMixtureDenoiser(GaussianMixtureSpec spec);

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  c10::Device device() const override { return weights_.device(); }
  void to(const c10::Device& device) override;
  std::vector<int64_t> sample_shape() const override { return spec_.shape; }
  int64_t num_classes() const override { return spec_.conditional ? spec_.components() : 0; }
  double sigma_min() const override { return spec_.sigma_min; }
  double sigma_max() const override { return spec_.sigma_max; }
  std::string describe() const override;

  // log p_σ(x | label) per sample, [N] float64, differentiable in x (Tweedie: D = x + σ²∇log p_σ);
  // labels undefined or −1: the whole mixture.
  at::Tensor log_density(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels = {}) const;
  // Exact moments of the clean data (σ = 0), float64: mean [D] and covariance [D, D].
  const GaussianMixtureSpec& spec() const { return spec_; }

 private:
  // Per-component log-likelihood terms [N, K] and the per-component variances [N, K]; a row
  // with label k ≥ 0 keeps only component k.
  std::pair<at::Tensor, at::Tensor> component_logits(const at::Tensor& x_flat, const at::Tensor& sigma, const at::Tensor& labels) const;

  GaussianMixtureSpec spec_;
  at::Tensor weights_, means_, variances_;  // float64: [K], [K, D], [K]
};

}  // namespace distillery
