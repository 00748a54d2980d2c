#include "models/guidance.h"

#include <fmt/format.h>
#include <torch/types.h>

#include "core/error.h"

namespace distillery {

GuidedDenoiser::GuidedDenoiser(Denoiser& conditional, double scale) : base_(conditional), scale_(scale) {
  DISTILLERY_CHECK(base_.num_classes() > 0, Error("classifier-free guidance needs a class-conditional model").field("--guidance")
                                                .got(fmt::format("{} (the model is unconditional)", scale)));
}

at::Tensor GuidedDenoiser::guided(const at::Tensor& labels, const std::function<at::Tensor(const at::Tensor& both_labels)>& evaluate) const {
  DISTILLERY_CHECK(labels.defined(), Error("classifier-free guidance needs labels"));
  const int64_t n = labels.size(0);
  const auto both = evaluate(torch::cat({labels, torch::full_like(labels, -1)}));
  const auto conditional = both.narrow(0, 0, n), unconditional = both.narrow(0, n, n);
  return unconditional + scale_ * (conditional - unconditional);
}

at::Tensor GuidedDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  return guided(labels, [&](const at::Tensor& both) { return base_.denoise(torch::cat({x, x}), torch::cat({sigma, sigma}), both); });
}

at::Tensor GuidedDenoiser::denoise_toward(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& sigma_target, const at::Tensor& labels) {
  return guided(labels, [&](const at::Tensor& both) {
    return base_.denoise_toward(torch::cat({x, x}), torch::cat({sigma, sigma}), torch::cat({sigma_target, sigma_target}), both);
  });
}

std::string GuidedDenoiser::describe() const { return fmt::format("cfg(scale={}) of {}", scale_, base_.describe()); }

}  // namespace distillery
