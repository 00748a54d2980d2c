// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) in the EDM parameterisation:
// a multistep second-order solver in λ = −log σ that reuses the previous step's D, so it
// costs one network evaluation per step. The first step, and the step into σ = 0, are first
// order.
#include <torch/types.h>

#include <cmath>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class DpmPp2mSampler final : public Sampler {
 public:
  std::string_view name() const override { return "dpmpp-2m"; }
  int64_t nfe(int64_t steps) const override { return steps; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    at::Tensor previous_denoised;
    for (int64_t i = 0; i < steps; ++i) {
      const auto denoised = denoise_at(denoiser, x, sigmas[i], context.labels);
      if (observer) observer->on_state(i, sigmas[i], x, denoised);
      if (sigmas[i + 1] == 0) {
        x = denoised;
      } else {
        const double h = std::log(sigmas[i] / sigmas[i + 1]);  // λ_{i+1} − λ_i
        auto D = denoised;
        if (previous_denoised.defined()) {
          const double r = std::log(sigmas[i - 1] / sigmas[i]) / h;  // h_{i−1} / h_i
          D = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous_denoised;
        }
        x = (sigmas[i + 1] / sigmas[i]) * x - std::expm1(-h) * D;
      }
      previous_denoised = denoised;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerOptions&) { return std::make_unique<DpmPp2mSampler>(); }

}  // namespace distillery
