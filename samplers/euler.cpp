// First-order Euler solver of the probability-flow ODE dx/dσ = (x − D(x; σ)) / σ.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class EulerSampler final : public OneEvaluationPerStepSampler {
 public:
  std::string_view name() const override { return "euler"; }

 protected:
  at::Tensor advance(const at::Tensor& x, const Step& step) const override {
    const auto d = (x - step.denoised) / step.sigma;
    return x + (step.next_sigma - step.sigma) * d;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_euler_sampler(const SamplerOptions&) { return std::make_unique<EulerSampler>(); }

}  // namespace distillery
