#include "teachers/edm_loss.h"

#include <torch/types.h>

namespace distillery {

at::Tensor edm_loss(Denoiser& denoiser, const at::Tensor& x0, const at::Tensor& sigma, const at::Tensor& noise, const at::Tensor& labels,
                    double sigma_data, const at::Tensor& target) {
  std::vector<int64_t> per_sample(static_cast<size_t>(x0.dim()), 1);
  per_sample[0] = -1;
  const auto weight = (sigma.square() + sigma_data * sigma_data) / (sigma * sigma_data).square();
  const auto denoised = denoiser.denoise(x0 + sigma.view(per_sample) * noise, sigma, labels);
  return (weight.view(per_sample) * (denoised - (target.defined() ? target : x0)).square()).mean();
}

}  // namespace distillery
