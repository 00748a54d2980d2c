#include "distill/common/trigflow.h"

#include <torch/types.h>

#include "models/denoiser.h"

namespace distillery {

at::Tensor row_scale(const at::Tensor& per_row, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = per_row.size(0);
  return per_row.view(shape);
}

at::Tensor trigflow_output(Denoiser& denoiser, const at::Tensor& x_hat, const at::Tensor& t_hat, const at::Tensor& labels, double sigma_data) {
  const auto cos = row_scale(t_hat.cos(), x_hat), sin = row_scale(t_hat.sin(), x_hat);
  const auto denoised = denoiser.denoise(x_hat / cos, sigma_data * t_hat.tan(), labels);
  return (cos * x_hat - denoised) / (sigma_data * sin);
}

TrigFlowJvp trigflow_jvp(Denoiser& denoiser, const at::Tensor& x_hat, const at::Tensor& t_hat, const at::Tensor& labels, double sigma_data,
                         const at::Tensor& x_hat_tangent, const at::Tensor& t_hat_tangent, JvpMode mode, double step) {
  const auto cos = row_scale(t_hat.cos(), x_hat), sin = row_scale(t_hat.sin(), x_hat), dt = row_scale(t_hat_tangent, x_hat);
  const auto x_tangent = x_hat_tangent / cos + x_hat * sin / cos.square() * dt;
  const auto sigma_tangent = sigma_data * t_hat_tangent / t_hat.cos().square();
  const auto d = denoiser_jvp(denoiser, x_hat / cos, sigma_data * t_hat.tan(), labels, x_tangent, sigma_tangent, mode, step);
  const auto output = (cos * x_hat - d.denoised) / (sigma_data * sin);
  // F = N/(σ_d sin t̂) with N = cos t̂·x̂ − D: dF = dN/(σ_d sin t̂) − F·cos t̂/sin t̂·dt̂.
  const auto numerator_tangent = cos * x_hat_tangent - sin * x_hat * dt - d.tangent;
  return {output.detach(), (numerator_tangent / (sigma_data * sin) - output * cos / sin * dt).detach()};
}

}  // namespace distillery
