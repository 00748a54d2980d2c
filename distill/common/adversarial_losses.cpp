#include "distill/common/adversarial_losses.h"

#include <torch/autograd.h>
#include <torch/types.h>

#include "core/error.h"

namespace distillery {

at::Tensor hinge_discriminator_loss(const at::Tensor& real_logits, const at::Tensor& fake_logits) {
  return torch::relu(1 - real_logits).mean() + torch::relu(1 + fake_logits).mean();
}

at::Tensor hinge_generator_loss(const at::Tensor& fake_logits) { return -fake_logits.mean(); }

at::Tensor r1_penalty(const at::Tensor& real_logits, const at::Tensor& inputs) {
  DISTILLERY_CHECK(inputs.requires_grad(), Error("the R1 penalty differentiates the logits in the real inputs, which do not require gradients"));
  // Rows are independent, so the gradient of the summed scores holds each row's own gradient.
  const auto gradient = torch::autograd::grad({real_logits.mean(1).sum()}, {inputs}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  return gradient.square().flatten(1).sum(1).mean();
}

}  // namespace distillery
