// defines: Denoiser
// The one interface every teacher and student implements (EDM formulation): given a noisy
// sample x = x0 + σ·n it returns the estimate of x0. The probability-flow ODE every sampler
// integrates is dx/dσ = (x − D(x; σ)) / σ.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace distillery {

class Denoiser {
 public:
  virtual ~Denoiser() = default;

  // x: [N, *sample_shape()] on device(); sigma: [N] in x's dtype; labels: [N] int64 class
  // indices, or an undefined tensor for unconditional use. Returns D(x; σ, labels) shaped like x.
  virtual at::Tensor denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) = 0;
  // The estimate of x0 for a jump from σ to sigma_target ([N], 0 ≤ σ_target ≤ σ) along the ODE:
  // x_target = (σ_target/σ)·x + (1 − σ_target/σ)·estimate, Kim et al. 2024's g(x, t, s). A network
  // with a target-time input (a trajectory model) learns it; every other denoiser gives D(x; σ),
  // which makes the jump an Euler (DDIM) step.
  virtual at::Tensor denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& /*sigma_target*/, const at::Tensor& labels) {
    return denoise(x, sigma, labels);
  }

  // Where it computes: its inputs must be there, and its outputs are.
  virtual c10::Device device() const = 0;
  // Moves its weights and constants there.
  virtual void to(const c10::Device& device) = 0;

  virtual std::vector<int64_t> sample_shape() const = 0;
  virtual int64_t num_classes() const { return 0; }  // 0: unconditional
  virtual double sigma_min() const { return 0.002; }
  virtual double sigma_max() const { return 80.0; }
  // A canonical description (architecture/spec and weights identity) recorded in artifacts.
  virtual std::string describe() const = 0;
};

}  // namespace distillery
