#include "models/guidance.h"

#include <fmt/format.h>
#include <torch/types.h>

#include "core/error.h"

namespace distillery {

GuidedDenoiser::GuidedDenoiser(Denoiser& conditional, double scale) : base_(conditional), scale_(scale) {
  DISTILLERY_CHECK(base_.num_classes() > 0, Error("classifier-free guidance needs a class-conditional model").field("--guidance")
                                                .got(fmt::format("{} (the model is unconditional)", scale)));
}

at::Tensor GuidedDenoiser::denoise(const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& labels) {
  DISTILLERY_CHECK(labels.defined(), Error("classifier-free guidance needs labels"));
  const auto both = base_.denoise(torch::cat({x, x}), torch::cat({sigma, sigma}), torch::cat({labels, torch::full_like(labels, -1)}));
  const auto conditional = both.narrow(0, 0, x.size(0)), unconditional = both.narrow(0, x.size(0), x.size(0));
  return unconditional + scale_ * (conditional - unconditional);
}

std::string GuidedDenoiser::describe() const { return fmt::format("cfg(scale={}) of {}", scale_, base_.describe()); }

}  // namespace distillery
