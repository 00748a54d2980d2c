// DDIM with η = 0 (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) in the
// EDM parameterisation: predict x0 = D(x; σ) and ε = (x − x0)/σ, then move to
// x' = x0 + σ'·ε. In σ-space this is algebraically Euler's step; it is kept as its own solver
// because that is how users name it, and the tests hold the two equal.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class DdimSampler final : public OneEvaluationPerStepSampler {
 public:
  std::string_view name() const override { return "ddim"; }

 protected:
  at::Tensor advance(const at::Tensor& x, const Step& step) const override {
    const auto eps = (x - step.denoised) / per_row(step.rows.sigma_from, x);
    return step.denoised + per_row(step.rows.sigma_to, x) * eps;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_ddim_sampler(const SamplerOptions&) { return std::make_unique<DdimSampler>(); }

}  // namespace distillery
