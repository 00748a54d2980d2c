// defines: AttentionCase, AttentionErrors, attention_errors, misaligned_results_equal_aligned, fused_passes_repeat_bitwise, SdpaBackend,
//          sdpa_backend_names, time_attention_ms, measured_bf16_peak_tflops
// The fused kernel's GPU checks and benchmark pieces, shared by the GoogleTest suite and by
// kernels/attention_check.cpp (the LibTorch-only program tools/gpu_attention.sh runs).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

namespace distillery {

struct AttentionCase {
  int64_t batch = 2, heads = 4, tokens = 64, head_dim = 64;
  c10::ScalarType dtype = c10::ScalarType::Float;
  double query_scale = 1.0;  // multiplies q: large values give large logits
  int forward_rows_per_warp = 16;  // the fused kernel's FusedAttentionOptions
};

// Errors of the forward output and of the gradients (worst of dq, dk, dv) against a float64
// reference of the same inputs, as max |x − ref| / max |ref|, for the fused kernel and for
// at::scaled_dot_product_attention with its default backend choice; and, to tell which fused
// kernel is at fault when one is, the fused pass's log-sum-exp and each of its gradients.
struct AttentionErrors {
  double fused_forward, sdpa_forward, fused_backward, sdpa_backward;
  double fused_logsumexp, fused_dq, fused_dk, fused_dv;
  // The criterion: at most twice SDPA's error, plus 1e-6 for float32 inputs where
  // both sit at rounding level.
  bool fused_within_twice_sdpa() const;
};
AttentionErrors attention_errors(const AttentionCase& c, uint64_t seed);

// Whether the fused passes give bit for bit the same output and gradients for contiguous views
// 2 bytes off their allocation (which the launchers copy for the tensor-core kernels) as for
// the same data aligned: that the kernel family does not change with alignment.
bool misaligned_results_equal_aligned(c10::ScalarType dtype);

// Whether running the fused passes twice on the same inputs gives bit-identical output,
// log-sum-exp and gradients, as kernels without atomics must: a result that moves between runs
// is the mark of a race.
bool fused_passes_repeat_bitwise(const AttentionCase& c);

enum class SdpaBackend { Default, Flash, MemoryEfficient, CuDnn, Math };
std::vector<std::string> sdpa_backend_names();  // by SdpaBackend value

// Median milliseconds of one forward pass, or of a forward and a backward pass together (fused
// when `fused`, else SDPA restricted to backend `sdpa`), or a negative value when that SDPA
// backend rejects the inputs.
enum class AttentionPasses { Forward, ForwardAndBackward };
double time_attention_ms(const AttentionCase& c, bool fused, SdpaBackend sdpa, int repeats, AttentionPasses passes = AttentionPasses::Forward);

// bf16 GEMM throughput (8192³) as the machine's practical peak, TFLOP/s.
double measured_bf16_peak_tflops();

}  // namespace distillery
