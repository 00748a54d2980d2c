// First-order Euler solver of the probability-flow ODE dx/dσ = (x − D(x; σ)) / σ.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class EulerSampler final : public Sampler {
 public:
  std::string_view name() const override { return "euler"; }
  int64_t nfe(int64_t steps) const override { return steps; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    for (int64_t i = 0; i < steps; ++i) {
      const auto D_x = denoise_at(denoiser, x, sigmas[i], context.labels);
      if (observer) observer->on_state(i, sigmas[i], x, D_x);
      const auto d = (x - D_x) / sigmas[i];
      x = x + (sigmas[i + 1] - sigmas[i]) * d;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_euler_sampler(const SamplerOptions&) { return std::make_unique<EulerSampler>(); }

}  // namespace distillery
