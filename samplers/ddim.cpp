// DDIM with η = 0 (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12) in the
// EDM parameterisation: predict x0 = D(x; σ) and ε = (x − x0)/σ, then move to
// x' = x0 + σ'·ε. In σ-space this is algebraically Euler's step; it is kept as its own solver
// because that is how users name it, and the tests hold the two equal.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class DdimSampler final : public Sampler {
 public:
  std::string_view name() const override { return "ddim"; }
  int64_t nfe(int64_t steps) const override { return steps; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    for (int64_t i = 0; i < steps; ++i) {
      const auto x0 = denoise_at(denoiser, x, sigmas[i], context.labels);
      if (observer) observer->on_state(i, sigmas[i], x, x0);
      const auto eps = (x - x0) / sigmas[i];
      x = x0 + sigmas[i + 1] * eps;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_ddim_sampler(const SamplerOptions&) { return std::make_unique<DdimSampler>(); }

}  // namespace distillery
