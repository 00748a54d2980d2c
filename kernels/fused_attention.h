// defines: FusedAttentionForward, FusedAttentionGradients, FusedAttentionOptions, fused_attention_forward, fused_attention_backward, fused_attention,
//          fused_attention_unsupported, fused_attention_uses_tensor_cores, fused_attention_stream_is_capturing
// Fused multi-head attention on CUDA (the FlashAttention-2 scheme): softmax(q kᵀ/√d) v computed
// tile by tile with an online softmax, so no tokens×tokens matrix ever reaches global memory;
// the backward pass recomputes the probabilities from the saved row log-sum-exp. fp32
// accumulation for float32, float16 and bfloat16 inputs; head dims 32, 64 and 128. Both passes
// of float16/bfloat16 inputs run on tensor cores from sm_80 on.
// Needs LibTorch and CUDA only (it is built alone for GPU machines by DISTILLERY_KERNELS_ONLY).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace distillery {

struct FusedAttentionForward {
  at::Tensor out;        // like q
  at::Tensor logsumexp;  // float32 [B, H, N]: log Σ_j exp(q_i·k_j/√d), what the backward pass needs
};

struct FusedAttentionGradients {
  at::Tensor dq, dk, dv;
};

// Why these tensors cannot go through the fused kernel (device, dtype, shape, head dim,
// contiguity, with what to do about it), or "" when they can.
std::string fused_attention_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Whether both passes take the tensor-core kernels for these inputs (float16 or bfloat16 on
// sm_80 or later) rather than the CUDA-core ones. Data that is not 16-byte aligned is copied
// for them first.
bool fused_attention_uses_tensor_cores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Whether the device's current stream is capturing a CUDA graph, where nothing may synchronise.
bool fused_attention_stream_is_capturing(const at::Device& device);

struct FusedAttentionOptions {
  // Rows of queries each warp of the tensor-core forward pass owns: 16, or 32, where every K and
  // V fragment read from shared memory feeds two blocks of rows — half that traffic per FLOP, for
  // twice the registers and 128-row blocks (so more idle rows at short token counts). Which is
  // faster where is for the GPU benchmark to say (tools/gpu_attention.sh times both); the other
  // kernels, and float32 inputs, do not use it.
  int forward_rows_per_warp = 16;
  // Fill every output with NaN before the kernels write it, so that a check sees an element they
  // leave unwritten (fresh memory can hold a previous, identical result); for checks only.
  bool poison_outputs = false;
};

// The checked entry points: q, k, v are CUDA [batch, heads, tokens, head_dim], contiguous, of
// one dtype; anything else raises c10::Error with the reason above.
FusedAttentionForward fused_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const FusedAttentionOptions& options = {});
FusedAttentionGradients fused_attention_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                 const at::Tensor& logsumexp, const at::Tensor& grad_out, const FusedAttentionOptions& options = {});

// The forward pass as an autograd function whose backward is fused_attention_backward.
at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const FusedAttentionOptions& options = {});

}  // namespace distillery
