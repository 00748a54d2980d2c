// EDM deterministic sampler (Karras et al. 2022, Algorithm 1): Heun's second-order method,
// with a plain Euler step into σ = 0 where the correction is undefined.
#include <torch/types.h>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class HeunSampler final : public Sampler {
 public:
  std::string_view name() const override { return "heun"; }
  int64_t nfe(int64_t steps) const override { return 2 * steps - 1; }

  at::Tensor run(Denoiser& denoiser, at::Tensor x, const std::vector<double>& sigmas, const at::Tensor& labels,
                 SamplerObserver* observer) const override {
    const int64_t steps = static_cast<int64_t>(sigmas.size()) - 1;
    for (int64_t i = 0; i < steps; ++i) {
      const double t_cur = sigmas[i], t_next = sigmas[i + 1];
      const auto D_x = denoise_at(denoiser, x, t_cur, labels);
      if (observer) observer->on_state(i, t_cur, x, D_x);
      const auto d_cur = (x - D_x) / t_cur;
      auto x_next = x + (t_next - t_cur) * d_cur;
      if (t_next != 0) {
        const auto d_prime = (x_next - denoise_at(denoiser, x_next, t_next, labels)) / t_next;
        x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime);
      }
      x = x_next;
    }
    if (observer) observer->on_state(steps, sigmas.back(), x, at::Tensor());
    return x;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_heun_sampler() { return std::make_unique<HeunSampler>(); }

}  // namespace distillery
