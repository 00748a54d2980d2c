// defines: attention
// The one entry point every network's attention goes through, so a fused kernel can be
// plugged in behind it. Today: ATen's scaled_dot_product_attention (the reference path).
#pragma once

#include <ATen/core/Tensor.h>

namespace distillery {

// q, k, v: [batch, heads, tokens, head_dim]; returns softmax(q kᵀ / √head_dim) v, same shape as q.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace distillery
