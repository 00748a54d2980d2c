#include "models/jvp.h"

#include <torch/autograd.h>
#include <torch/types.h>

#include "core/tensor_checks.h"
#include "kernels/attention.h"

namespace distillery {

DenoiserJvp denoiser_jvp(Denoiser& denoiser, const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels, const at::Tensor& x_tangent,
                         const at::Tensor& sigma_tangent, JvpMode mode, double step) {
  check_shape(x_tangent, x.sizes().vec(), "the tangent of x");
  check_shape(sigma_tangent, sigma.sizes().vec(), "the tangent of σ");
  if (mode == JvpMode::FiniteDifference) {
    const auto plus = denoiser.denoise(x + step * x_tangent, sigma + step * sigma_tangent, labels);
    const auto minus = denoiser.denoise(x - step * x_tangent, sigma - step * sigma_tangent, labels);
    return {denoiser.denoise(x, sigma, labels), (plus - minus) / (2 * step)};
  }
  const MathAttentionScope math_attention;
  const torch::AutoGradMode with_grad(true);
  const auto x_leaf = x.detach().requires_grad_(true), sigma_leaf = sigma.detach().requires_grad_(true);
  const auto denoised = denoiser.denoise(x_leaf, sigma_leaf, labels);
  const auto v = torch::zeros_like(denoised).requires_grad_(true);
  const auto vjp = torch::autograd::grad({denoised}, {x_leaf, sigma_leaf}, {v}, /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true);
  std::vector<at::Tensor> outputs, directions;
  for (const auto& [g, t] : {std::pair{vjp[0], x_tangent}, std::pair{vjp[1], sigma_tangent}})
    if (g.defined() && g.requires_grad()) {
      outputs.push_back(g);
      directions.push_back(t.to(g.options()));
    }
  if (outputs.empty()) return {denoised.detach(), torch::zeros_like(denoised).detach()};
  const auto tangent = torch::autograd::grad(outputs, {v}, directions, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true)[0];
  return {denoised.detach(), tangent.defined() ? tangent : torch::zeros_like(denoised).detach()};
}

}  // namespace distillery
