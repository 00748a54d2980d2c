// Multistep sampling of few-step students (Song et al. 2023, "Consistency Models", Algorithm 1):
// jump to the clean estimate D(x; σ_i), then re-noise it to σ_{i+1} with fresh noise. With one
// step it is the one-step generator G(z) = D(σ_max·z; σ_max). A teacher walked this way is far
// worse than with an ODE solver: the sampler is for networks trained to jump.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class MultistepSampler final : public Sampler {
 public:
  std::string_view name() const override { return "multistep"; }
  int64_t nfe(int64_t steps) const override { return steps; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    for (int64_t i = 0; i < steps; ++i) {
      const auto x0 = denoise_at(denoiser, x, sigmas[i], context.labels);
      if (observer) observer->on_state(i, sigmas[i], x, x0);
      x = sigmas[i + 1] > 0 ? x0 + sigmas[i + 1] * context.fresh_noise(i, x0) : x0;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_multistep_sampler(const SamplerOptions&) { return std::make_unique<MultistepSampler>(); }

}  // namespace distillery
