// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) in the EDM parameterisation:
// a multistep second-order solver in λ = −log σ that reuses the previous step's D, so it
// costs one network evaluation per step. The first step, and the step into σ = 0, are first
// order.
#include <torch/types.h>

#include <cmath>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class DpmPp2mSampler final : public OneEvaluationPerStepSampler {
 public:
  std::string_view name() const override { return "dpmpp-2m"; }

 protected:
  at::Tensor advance(const at::Tensor& x, const Step& step) const override {
    if (step.next_sigma == 0) return step.denoised;
    const double h = std::log(step.sigma / step.next_sigma);  // λ_{i+1} − λ_i
    auto D = step.denoised;
    if (step.previous_denoised.defined()) {
      const double r = std::log(step.previous_sigma / step.sigma) / h;  // h_{i−1} / h_i
      D = (1 + 1 / (2 * r)) * step.denoised - (1 / (2 * r)) * step.previous_denoised;
    }
    return (step.next_sigma / step.sigma) * x - std::expm1(-h) * D;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerOptions&) { return std::make_unique<DpmPp2mSampler>(); }

}  // namespace distillery
