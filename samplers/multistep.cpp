// Multistep sampling of few-step students (Song et al. 2023, "Consistency Models", Algorithm 1):
// jump to the clean estimate D(x; σ_i), then re-noise it to σ_{i+1} with fresh noise. With one
// step it is the one-step generator G(z) = D(σ_max·z; σ_max). A teacher walked this way is far
// worse than with an ODE solver: the sampler is for networks trained to jump.
#include <torch/types.h>

#include "core/error.h"
#include "samplers/sampler.h"

namespace distillery {

namespace {
class MultistepSampler final : public OneEvaluationPerStepSampler {
 public:
  std::string_view name() const override { return "multistep"; }
  // Its fresh noise is keyed by the solver step, which a lone per-row step does not have.
  StepResult step(Denoiser&, const at::Tensor&, const RowStep&, const SampleContext&) const override {
    throw Error("the multistep sampler has no per-row step").expected("euler, heun, ddim or dpmpp-2m");
  }

 protected:
  // The jump starts afresh from D, whatever the state was.
  at::Tensor advance(const at::Tensor& /*x*/, const Step& step) const override {
    const double next = step.rows.sigma_to.front();  // a whole run: every row alike
    return next > 0 ? step.denoised + next * step.context.fresh_noise(step.i, step.denoised) : step.denoised;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_multistep_sampler(const SamplerOptions&) { return std::make_unique<MultistepSampler>(); }

}  // namespace distillery
