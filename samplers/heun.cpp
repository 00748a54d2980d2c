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

// Heun's step per row; rows stepping into σ = 0 keep the Euler step.
StepResult heun_step(Denoiser& denoiser, const at::Tensor& x, const std::vector<double>& from, const std::vector<double>& to, const at::Tensor& labels) {
  const size_t n = from.size();
  std::vector<double> h(n);
  std::vector<int64_t> corrected;
  for (size_t r = 0; r < n; ++r) {
    h[r] = to[r] - from[r];
    if (to[r] != 0) corrected.push_back(static_cast<int64_t>(r));
  }
  const auto D_x = denoise_rows(denoiser, x, from, labels);
  const auto d_cur = (x - D_x) / per_row(from, x);
  auto x_next = x + per_row(h, x) * d_cur;
  const auto correct = [&](const at::Tensor& x, const at::Tensor& x_next, const at::Tensor& d_cur, const std::vector<double>& to,
                           const std::vector<double>& h, const at::Tensor& labels) {
    const auto d_prime = (x_next - denoise_rows(denoiser, x_next, to, labels)) / per_row(to, x);
    return x + per_row(h, x) * (0.5 * d_cur + 0.5 * d_prime);
  };
  if (corrected.size() == n) {
    x_next = correct(x, x_next, d_cur, to, h, labels);
  } else if (!corrected.empty()) {
    std::vector<double> to_rows, h_rows;
    for (const auto r : corrected) {
      to_rows.push_back(to[static_cast<size_t>(r)]);
      h_rows.push_back(h[static_cast<size_t>(r)]);
    }
    const auto index = torch::tensor(corrected, torch::kInt64).to(x.device());
    const auto rows = [&](const at::Tensor& t) { return t.defined() ? t.index_select(0, index) : t; };
    x_next.index_copy_(0, index, correct(rows(x), rows(x_next), rows(d_cur), to_rows, h_rows, rows(labels)));
  }
  return {x_next, D_x};
}

class EdmSampler final : public Sampler {
 public:
  EdmSampler(std::string_view name, SamplerOptions options) : name_(name), options_(options) {}
  std::string_view name() const override { return name_; }
  int64_t nfe(int64_t steps) const override { return 2 * steps - 1; }

  StepResult step(Denoiser& denoiser, const at::Tensor& x, const RowStep& rows, const SampleContext& context) const override {
    if (options_.s_churn > 0) return Sampler::step(denoiser, x, rows, context);
    return heun_step(denoiser, x, rows.sigma_from, rows.sigma_to, context.labels);
  }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const SampleContext& context,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    const auto n = static_cast<size_t>(x.size(0));
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
      auto result = heun_step(denoiser, x, std::vector<double>(n, t_cur), std::vector<double>(n, t_next), context.labels);
      if (observer && !churn) observer->on_state(i, t_cur, x, result.denoised);
      x = std::move(result.x);
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
