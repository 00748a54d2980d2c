// defines: SamplerObserver, SampleContext, SamplerOptions, Sampler, make_sampler, sampler_names,
//          make_euler_sampler, make_heun_sampler, make_dpmpp_2m_sampler, make_ddim_sampler,
//          make_edm_stochastic_sampler, make_multistep_sampler, denoise_at, OneEvaluationPerStepSampler,
//          RowStep, StepResult, per_row, denoise_rows, jump
// Every solver has one signature: a denoiser, the state at sigmas[0], the σ grid and the
// context (labels, per-sample noise) in; the state at sigmas.back() out. An observer sees
// every state on the way, which is how trajectories are recorded. The ODE solvers also take
// one step per row, each row between its own two σ (consistency distillation, CTM and
// progressive distillation targets); a whole run is that step with every row alike.
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

// What a solver needs besides the state: class labels and, for stochastic solvers, where
// fresh noise comes from.
struct SampleContext {
  at::Tensor labels;             // [N] int64, or undefined for unconditional models
  uint64_t seed = 0;
  std::vector<int64_t> indices;  // the sample index of each batch row
  // Unit normal noise shaped like `like` for solver step `step`; row r depends only on
  // (seed, step, indices[r]), so stochastic sampling does not depend on the batch size.
  at::Tensor fresh_noise(int64_t step, const at::Tensor& like) const;
};

// One solver step per row: row r goes from sigma_from[r] to sigma_to[r] (which may be 0).
// Multistep solvers (DPM-Solver++(2M)) also take each row's previous step: sigma_previous[r]
// and its D in denoised_previous (sigma_previous empty or 0 for a row: a first step).
struct RowStep {
  std::vector<double> sigma_from, sigma_to;
  std::vector<double> sigma_previous = {};
  at::Tensor denoised_previous = {};
};

struct StepResult {
  at::Tensor x;         // the state at sigma_to
  at::Tensor denoised;  // D(x; sigma_from), the step's first evaluation
};

// The EDM stochastic sampler's churn (Karras et al. 2022, Algorithm 2); other solvers ignore it.
struct SamplerOptions {
  double s_churn = 0.0;       // total noise added, spread over the steps
  double s_tmin = 0.0;        // churn only for σ in [s_tmin, s_tmax]
  double s_tmax = 1e30;
  double s_noise = 1.0;       // scale of the added noise (slightly > 1 counters over-denoising)
  // γ-sampling of the multistep sampler (Kim et al. 2024): each step jumps to √(1−γ²)·σ_next and
  // adds fresh noise of σ γ·σ_next. 1: consistency models' multistep sampling; 0: deterministic.
  double gamma = 1.0;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string_view name() const = 0;
  // Network evaluations for a grid of `steps` steps (σ grid of steps+1 values ending at 0).
  virtual int64_t nfe(int64_t steps) const = 0;
  virtual at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                         SamplerObserver* observer = nullptr) const = 0;
  // One step per row. Solvers without a per-row rule (the stochastic and multistep samplers,
  // which draw fresh noise per solver step) raise Error.
  virtual StepResult step(Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const;
};

// Solvers that evaluate the denoiser once per step, at the current state: they differ only in
// how they move x from σ_i to σ_{i+1}, which `advance` says.
class OneEvaluationPerStepSampler : public Sampler {
 public:
  int64_t nfe(int64_t steps) const final { return steps; }
  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer = nullptr) const final;
  StepResult step(Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const override;

 protected:
  struct Step {
    int64_t i;             // the solver step (fresh noise is keyed by it); −1 for a lone per-row step
    const RowStep& rows;
    at::Tensor denoised;   // D(x; σ_from) per row
    const SampleContext& context;
  };
  virtual at::Tensor advance(const at::Tensor& x, const Step& step) const = 0;
  StepResult step_at(int64_t i, Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const;
};

std::unique_ptr<Sampler> make_euler_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_heun_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_ddim_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_edm_stochastic_sampler(const SamplerOptions& options);
std::unique_ptr<Sampler> make_multistep_sampler(const SamplerOptions& options);

// Error lists the valid names.
std::unique_ptr<Sampler> make_sampler(std::string_view name, const SamplerOptions& options = {});
std::vector<std::string> sampler_names();

// Shared by the solvers: D(x; σ) with σ broadcast to [N] in x's dtype.
at::Tensor denoise_at(Denoiser& denoiser, const at::Tensor& x, double sigma, const at::Tensor& labels);
// D(x; σ_r) for row r.
at::Tensor denoise_rows(Denoiser& denoiser, const at::Tensor& x, const std::vector<double>& sigma, const at::Tensor& labels);
// The jump of each row from σ to σ_target along the ODE ([N] each, 0 ≤ σ_target ≤ σ):
// (σ_target/σ)·x + (1 − σ_target/σ)·denoise_toward(x; σ, σ_target) (CTM's G(x, t, s); for a
// denoiser without a target time, an Euler step).
at::Tensor jump(Denoiser& denoiser, const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels);
// Per-row coefficients computed on the host in float64, as [N, 1, ...] in like's dtype and
// device: a step with every row alike then rounds exactly as one with scalar coefficients.
at::Tensor per_row(const std::vector<double>& values, const at::Tensor& like);

}  // namespace distillery
