#include <torch/autograd.h>

#include "kernels/fused_attention.h"

namespace distillery {

namespace {

struct FusedAttentionFunction : torch::autograd::Function<FusedAttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* context, at::Tensor q, at::Tensor k, at::Tensor v, int64_t forward_rows_per_warp,
                            bool poison_outputs) {
    const FusedAttentionOptions options{static_cast<int>(forward_rows_per_warp), poison_outputs};
    auto result = fused_attention_forward(q, k, v, options);
    context->save_for_backward({q, k, v, result.out, result.logsumexp});
    context->saved_data["poison_outputs"] = poison_outputs;
    return result.out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* context, torch::autograd::tensor_list grads) {
    const auto saved = context->get_saved_variables();
    const FusedAttentionOptions options{.poison_outputs = context->saved_data["poison_outputs"].toBool()};
    auto gradients = fused_attention_backward(saved[0], saved[1], saved[2], saved[3], saved[4], grads[0].contiguous(), options);
    return {gradients.dq, gradients.dk, gradients.dv, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const FusedAttentionOptions& options) {
  return FusedAttentionFunction::apply(q, k, v, static_cast<int64_t>(options.forward_rows_per_warp), options.poison_outputs);
}

}  // namespace distillery
