// Multistep sampling of few-step students (Song et al. 2023, "Consistency Models", Algorithm 1)
// as the γ-sampling of trajectory models (Kim et al. 2024, "Consistency Trajectory Models",
// §4.3): from σ_i, jump along the ODE to √(1−γ²)·σ_{i+1}, then add fresh noise of σ γ·σ_{i+1}.
// With γ = 1 (the default) every jump goes to the data, D(x; σ_i), and is re-noised: with one
// step, the one-step generator G(z) = D(σ_max·z; σ_max). With γ = 0 the walk is deterministic;
// for a denoiser without a target time it is then the Euler solver. A teacher walked with γ = 1
// is far worse than with an ODE solver: the sampler is for networks trained to jump.
#include <torch/types.h>

#include <cmath>

#include "core/error.h"
#include "samplers/sampler.h"

namespace distillery {

namespace {
class MultistepSampler final : public Sampler {
 public:
  explicit MultistepSampler(double gamma) : gamma_(gamma) {
    DISTILLERY_CHECK(gamma >= 0 && gamma <= 1, Error("γ-sampling needs γ in [0, 1]").field("gamma").got(std::to_string(gamma)));
  }
  std::string_view name() const override { return "multistep"; }
  int64_t nfe(int64_t steps) const override { return steps; }
  // Its fresh noise is keyed by the solver step, which a lone per-row step does not have.
  StepResult step(Denoiser&, const at::Tensor&, const RowStep&, const SampleContext&) const override {
    throw Error("the multistep sampler has no per-row step").expected("euler, heun, ddim or dpmpp-2m");
  }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    const auto rows = static_cast<size_t>(x.size(0));
    for (int64_t i = 0; i < steps; ++i) {
      const double next = sigmas[i + 1], target = std::sqrt(1 - gamma_ * gamma_) * next;
      auto landed = jump(denoiser, x, per_row(std::vector<double>(rows, sigmas[i]), x).flatten(),
                         per_row(std::vector<double>(rows, target), x).flatten(), context.labels);
      // A jump to the data is the denoised estimate at x.
      if (observer) observer->on_state(i, sigmas[i], x, target == 0 ? landed : at::Tensor());
      x = next > 0 && gamma_ > 0 ? landed + gamma_ * next * context.fresh_noise(i, landed) : std::move(landed);
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }

 private:
  double gamma_;
};
}  // namespace

std::unique_ptr<Sampler> make_multistep_sampler(const SamplerOptions& options) { return std::make_unique<MultistepSampler>(options.gamma); }

}  // namespace distillery
