// defines: SamplerObserver, Sampler, make_sampler, sampler_names, make_euler_sampler, make_heun_sampler
// Every solver has one signature: a denoiser, the state at sigmas[0], the σ grid and the
// labels in; the state at sigmas.back() out. An observer sees every state on the way, which
// is how trajectories are recorded.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/denoiser.h"

namespace distillery {

class SamplerObserver {
 public:
  virtual ~SamplerObserver() = default;
  // State i (0 = the initial noisy state, sigmas.size()−1 = the sample) at σ_i. `denoised` is
  // D(x_i; σ_i) when the solver evaluated it at exactly this state, else undefined.
  virtual void on_state(int64_t i, double sigma, const at::Tensor& x, const at::Tensor& denoised) = 0;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string_view name() const = 0;
  // Network evaluations for a grid of `steps` steps (σ grid of steps+1 values ending at 0).
  virtual int64_t nfe(int64_t steps) const = 0;
  virtual at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const at::Tensor& labels,
                         SamplerObserver* observer = nullptr) const = 0;
};

std::unique_ptr<Sampler> make_euler_sampler();
std::unique_ptr<Sampler> make_heun_sampler();

std::unique_ptr<Sampler> make_sampler(std::string_view name);  // Error lists the valid names
std::vector<std::string> sampler_names();

// Shared by the solvers: D(x; σ) with σ broadcast to [N] in x's dtype.
at::Tensor denoise_at(Denoiser& denoiser, const at::Tensor& x, double sigma, const at::Tensor& labels);

}  // namespace distillery
