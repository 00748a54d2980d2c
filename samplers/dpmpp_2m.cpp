// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) in the EDM parameterisation:
// a multistep second-order solver in λ = −log σ that reuses the previous step's D, so it
// costs one network evaluation per step. The first step, and the step into σ = 0, are first
// order. Each row takes its own step; a row stepping into σ = 0 lands on D exactly: its
// coefficients are 0 for x and 1 for D, and it takes no second-order correction.
#include <torch/types.h>

#include <cmath>

#include "samplers/sampler.h"

namespace distillery {

namespace {
class DpmPp2mSampler final : public OneEvaluationPerStepSampler {
 public:
  std::string_view name() const override { return "dpmpp-2m"; }

 protected:
  at::Tensor advance(const at::Tensor& x, const Step& step) const override {
    const auto& rows = step.rows;
    const size_t n = rows.sigma_from.size();
    const bool history = rows.denoised_previous.defined() && !rows.sigma_previous.empty();
    // x' = (σ'/σ)·x − expm1(−h)·D', D' = c·D − c_previous·D_previous, h = λ' − λ = log(σ/σ').
    std::vector<double> x_scale(n), d_scale(n), current(n, 1.0), previous(n, 0.0);
    for (size_t r = 0; r < n; ++r) {
      const double sigma = rows.sigma_from[r], next = rows.sigma_to[r];
      if (next == 0) {
        x_scale[r] = 0.0;
        d_scale[r] = -1.0;
        continue;
      }
      const double h = std::log(sigma / next);
      x_scale[r] = next / sigma;
      d_scale[r] = std::expm1(-h);
      if (history && rows.sigma_previous[r] > 0) {
        const double ratio = std::log(rows.sigma_previous[r] / sigma) / h;  // h_{i−1} / h_i
        current[r] = 1 + 1 / (2 * ratio);
        previous[r] = 1 / (2 * ratio);
      }
    }
    auto D = step.denoised;
    if (history) D = per_row(current, x) * step.denoised - per_row(previous, x) * rows.denoised_previous;
    return per_row(x_scale, x) * x - per_row(d_scale, x) * D;
  }
};
}  // namespace

std::unique_ptr<Sampler> make_dpmpp_2m_sampler(const SamplerOptions&) { return std::make_unique<DpmPp2mSampler>(); }

}  // namespace distillery
