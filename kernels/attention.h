// defines: AttentionBackend, attention_backend_names, attention_backend_from_name, set_attention_backend, attention
// The one entry point every network's attention goes through. `auto` takes the fused CUDA
// kernel (kernels/fused_attention.h) when the project is built with CUDA and the tensors are
// on a GPU in a form it supports, and ATen's scaled_dot_product_attention (the reference path)
// otherwise; `fused` and `sdpa` force one for comparisons (`distillery --attention ...`).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <vector>

namespace distillery {

enum class AttentionBackend { Auto, Fused, Sdpa };
std::vector<std::string> attention_backend_names();
AttentionBackend attention_backend_from_name(std::string_view name);  // Error lists the valid names
// Process-wide; the default is Auto.
void set_attention_backend(AttentionBackend backend);

// q, k, v: [batch, heads, tokens, head_dim]; returns softmax(q kᵀ / √head_dim) v, same shape as q.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace distillery
