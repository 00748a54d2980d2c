// defines: MeasuredAttentionShape, measured_attention_shapes, fused_attention_measured_faster
// Where `--attention auto` sends CUDA tensors: the fused kernel only where it was measured faster
// than ATen's scaled_dot_product_attention (its default backend choice, which auto otherwise
// calls), SDPA elsewhere. The measurements are in one place, attention_speed_table.cpp, with
// their source; docs/attention.md shows them.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

namespace distillery {

struct MeasuredAttentionShape {
  c10::ScalarType dtype;
  int64_t batch_heads, tokens, head_dim;
  double fused_ms, sdpa_ms, fused_fwd_bwd_ms, sdpa_fwd_bwd_ms;  // medians
};

const std::vector<MeasuredAttentionShape>& measured_attention_shapes();

// Decided by the smallest measured shape that covers this one: the same dtype and head dim, at
// least as many tokens (fewest first) and at least as large a batch·heads. The fused kernel's
// advantage shrinks as problems grow, so a covering shape's verdict is the cautious one. No
// covering shape (another dtype or head dim, or larger than any measured): SDPA.
// `with_backward` compares forward+backward times, as training sees them.
bool fused_attention_measured_faster(c10::ScalarType dtype, int64_t batch_heads, int64_t tokens, int64_t head_dim, bool with_backward);

}  // namespace distillery
