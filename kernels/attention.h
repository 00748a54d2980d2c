// defines: AttentionBackend, attention_backend_names, attention_backend_from_name, set_attention_backend, attention,
//          auto_attention_takes_fused_kernel, MathAttentionScope
// The one entry point every network's attention goes through. `auto` takes the fused CUDA
// kernel (kernels/fused_attention.h) when the project is built with CUDA, the tensors are on a
// GPU in a form it supports, of a size where it was measured faster, and the kernel has passed
// its self-check there, and ATen's scaled_dot_product_attention (the reference path) otherwise;
// `fused` and `sdpa` force one for comparisons (`distillery --attention ...`).
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

// Whether `auto` sends these tensors to the fused kernel: only where it was measured faster than
// SDPA (kernels/attention_speed_table.h), and only once it has passed a check. The first time it meets a device,
// dtype and head dim, it runs the kernel's forward and backward on a small fixed input against
// a float64 reference and SDPA (the GPU tests' criterion: at most twice SDPA's error); a kernel
// that fails is not used for them again in this process, with a warning, so that a fault on an
// untried GPU costs speed rather than correct results.
bool auto_attention_takes_fused_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// q, k, v: [batch, heads, tokens, head_dim]; returns softmax(q kᵀ / √head_dim) v, same shape as q.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// While one is alive on this thread, attention() takes ATen's math path, which is made of
// matmul and softmax and so is twice differentiable (and carries forward-mode tangents), as
// the denoiser's JVP needs (models/jvp.h); the fused kernel and SDPA's flash kernels are not.
// It overrides the chosen backend.
class MathAttentionScope {
 public:
  MathAttentionScope();
  ~MathAttentionScope();
  MathAttentionScope(const MathAttentionScope&) = delete;
  MathAttentionScope& operator=(const MathAttentionScope&) = delete;
  static bool active();
};

}  // namespace distillery
