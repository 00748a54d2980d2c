// EDM samplers (Karras et al. 2022): Algorithm 2, the stochastic sampler, and Algorithm 1,
// the deterministic Heun sampler, which is Algorithm 2 without churn. Each step optionally
// raises σ_i to σ̂ = σ_i(1 + γ) by adding fresh noise, then takes a Heun step from σ̂ to
// σ_{i+1}, with a plain Euler step into σ = 0 where the correction is undefined.
#include <torch/types.h>

#include <algorithm>
#include <cmath>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class EdmSampler final : public Sampler {
 public:
  EdmSampler(std::string_view name, SamplerOptions options) : name_(name), options_(options) {}
  std::string_view name() const override { return name_; }
  int64_t nfe(int64_t steps) const override { return 2 * steps - 1; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    for (int64_t i = 0; i < steps; ++i) {
      double t_cur = sigmas[i];
      const double t_next = sigmas[i + 1];
      const bool churn = options_.s_churn > 0 && t_cur >= options_.s_tmin && t_cur <= options_.s_tmax;
      if (churn) {
        // The state before churn is what the observer sees; D is evaluated at the raised σ̂.
        if (observer) observer->on_state(i, t_cur, x, at::Tensor());
        const double gamma = std::min(options_.s_churn / static_cast<double>(steps), std::sqrt(2.0) - 1.0);
        const double t_hat = t_cur * (1 + gamma);
        x = x + std::sqrt(t_hat * t_hat - t_cur * t_cur) * options_.s_noise * context.fresh_noise(i, x);
        t_cur = t_hat;
      }
      const auto D_x = denoise_at(denoiser, x, t_cur, context.labels);
      if (observer && !churn) observer->on_state(i, t_cur, x, D_x);
      const auto d_cur = (x - D_x) / t_cur;
      auto x_next = x + (t_next - t_cur) * d_cur;
      if (t_next != 0) {
        const auto d_prime = (x_next - denoise_at(denoiser, x_next, t_next, context.labels)) / t_next;
        x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime);
      }
      x = x_next;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }

 private:
  std::string_view name_;
  SamplerOptions options_;
};
}  // namespace

std::unique_ptr<Sampler> make_heun_sampler(const SamplerOptions&) { return std::make_unique<EdmSampler>("heun", SamplerOptions{}); }
std::unique_ptr<Sampler> make_edm_stochastic_sampler(const SamplerOptions& options) {
  return std::make_unique<EdmSampler>("edm-stochastic", options);
}

}  // namespace distillery
