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
    const auto& [from, to, previous, previous_denoised] = step.rows;
    std::vector<double> h(from.size());
    for (size_t r = 0; r < from.size(); ++r) h[r] = to[r] - from[r];
    const auto d = (x - step.denoised) / per_row(from, x);
    return x + per_row(h, x) * d;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_euler_sampler(const SamplerOptions&) { return std::make_unique<EulerSampler>(); }

}  // namespace distillery
