// defines: hinge_discriminator_loss, hinge_generator_loss, r1_penalty
// The GAN losses of adversarial distillation (ADD, Sauer et al. 2023; LADD, Sauer et al. 2024):
// the hinge losses of Lim & Ye (2017) and the R1 gradient penalty of Mescheder et al. (2018).
// Logits are [N, heads], one column per discriminator head; each loss averages over all of them.
#pragma once

#include <ATen/core/Tensor.h>

namespace distillery {

// mean(max(0, 1 − logit(real))) + mean(max(0, 1 + logit(fake))).
at::Tensor hinge_discriminator_loss(const at::Tensor& real_logits, const at::Tensor& fake_logits);
// −mean(logit(fake)): the generator raises the heads' score of its images without bound.
at::Tensor hinge_generator_loss(const at::Tensor& fake_logits);
// mean over rows of ‖∇_x D(x)‖², D(x) the row's logits averaged over the heads, for `inputs`
// that `real_logits` were computed from (inputs.requires_grad()). Built with create_graph, so
// the penalty's own gradient reaches the discriminator's weights.
at::Tensor r1_penalty(const at::Tensor& real_logits, const at::Tensor& inputs);

}  // namespace distillery
