// defines: GuidedDenoiser
// Classifier-free guidance (Ho & Salimans 2022) as a denoiser, so it works with every solver:
// D_w(x; σ, c) = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)), with "no label" encoded as −1.
// Both branches run in one batch of 2N.
#pragma once

#include <functional>

#include "models/denoiser.h"

namespace distillery {

class GuidedDenoiser final : public Denoiser {
 public:
  GuidedDenoiser(Denoiser& conditional, double scale);

  at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) override;
  // The same guidance on a trajectory model's jump estimate.
  at::Tensor denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) override;
  c10::Device device() const override { return base_.device(); }
  void to(const c10::Device& device) override { base_.to(device); }
  std::vector<int64_t> sample_shape() const override { return base_.sample_shape(); }
  int64_t num_classes() const override { return base_.num_classes(); }
  double sigma_min() const override { return base_.sigma_min(); }
  double sigma_max() const override { return base_.sigma_max(); }
  std::string describe() const override;

 private:
  // Both branches of `evaluate` (conditional and with no label) in one batch of 2N, combined.
  at::Tensor guided(const at::Tensor& labels, const std::function<at::Tensor(const at::Tensor& both_labels)>& evaluate) const;

  Denoiser& base_;
  double scale_;
};

}  // namespace distillery
