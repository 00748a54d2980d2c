// The fused attention kernel's GPU checks and benchmark as one LibTorch-only program, for GPU
// machines that have CUDA and PyTorch but none of the project's other dependencies
// (tools/gpu_attention.sh builds and runs it).
//   attention_check OUT.json
// Writes the device, every correctness case (errors against float64, beside SDPA's) and every
// timing; exits 1 when a correctness case fails.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/cuda.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/attention_checks.h"
#include "kernels/fused_attention.h"

namespace {

using distillery::AttentionCase;
using distillery::AttentionPasses;
using distillery::SdpaBackend;

std::string dtype_name(c10::ScalarType t) { return t == at::kFloat ? "float32" : t == at::kHalf ? "float16" : "bfloat16"; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: attention_check OUT.json\n");
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "attention_check: no CUDA device visible; run it on a GPU machine\n");
    return 2;
  }
  std::ostringstream json;
  const auto probe = at::zeros({1, 1, 16, 64}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  const char* bf16_kernels = distillery::fused_attention_uses_tensor_cores(probe, probe, probe) ? "tensor cores (mma.sync m16n8k16)" : "CUDA cores";
  std::printf("bf16 forward and backward passes on %s\n", bf16_kernels);
  json << "{\"device\": \"" << at::cuda::getCurrentDeviceProperties()->name << "\", \"bf16_kernels\": \"" << bf16_kernels << "\", \"correctness\": [";
  bool all_pass = true, first = true;
  std::vector<AttentionCase> cases;
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t d : {32, 64, 128})
      for (int64_t tokens : {64, 100, 1000}) cases.push_back({2, 4, tokens, d, dtype, 1.0});
  // Large logits (|q·k|/√d in the hundreds): the online softmax must not overflow.
  for (auto dtype : {at::kFloat, at::kBFloat16}) cases.push_back({2, 4, 256, 64, dtype, 60.0});
  for (const auto& c : cases) {
    const auto e = distillery::attention_errors(c, 1);
    const bool pass = e.fused_within_twice_sdpa();
    all_pass = all_pass && pass;
    std::printf("%-8s d=%-3lld tokens=%-5lld q×%-4g forward %.2e (sdpa %.2e)  backward %.2e (sdpa %.2e)  %s\n", dtype_name(c.dtype).c_str(),
                static_cast<long long>(c.head_dim), static_cast<long long>(c.tokens), c.query_scale, e.fused_forward, e.sdpa_forward, e.fused_backward,
                e.sdpa_backward, pass ? "ok" : "FAIL");
    json << (first ? "" : ",") << "\n  {\"dtype\": \"" << dtype_name(c.dtype) << "\", \"head_dim\": " << c.head_dim << ", \"tokens\": " << c.tokens
         << ", \"query_scale\": " << c.query_scale << ", \"fused_forward\": " << e.fused_forward << ", \"sdpa_forward\": " << e.sdpa_forward
         << ", \"fused_backward\": " << e.fused_backward << ", \"sdpa_backward\": " << e.sdpa_backward << ", \"pass\": " << (pass ? "true" : "false")
         << "}";
    first = false;
  }
  const double peak = distillery::measured_bf16_peak_tflops();
  std::printf("bf16 GEMM peak (8192^3): %.1f TFLOP/s\n", peak);
  json << "\n], \"bf16_gemm_peak_tflops\": " << peak << ", \"benchmark\": [";
  first = true;
  const auto names = distillery::sdpa_backend_names();
  for (int64_t batch_heads : {64, 512})
    for (int64_t tokens : {64, 256, 1024, 4096})
      for (int64_t d : {32, 64, 128}) {
        const AttentionCase c{batch_heads / 8, 8, tokens, d, at::kBFloat16, 1.0};
        // Each SDPA backend's time as a multiple of ours (printed) and in milliseconds (JSON).
        const auto against_sdpa = [&](const std::vector<SdpaBackend>& backends, AttentionPasses passes, double ours_ms, const char* suffix) {
          for (auto backend : backends) {
            const double ms = distillery::time_attention_ms(c, false, backend, 5, passes);
            const auto& name = names[static_cast<size_t>(backend)];
            if (ms > 0) std::printf("  %s %.2fx", name.c_str(), ms / ours_ms);
            json << ", \"" << name << suffix << "\": " << ms;
          }
        };
        const double flop = 4.0 * static_cast<double>(batch_heads * tokens * tokens * d);
        const double ours = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5);
        std::printf("BH=%-4lld tokens=%-5lld d=%-3lld fused %8.3f ms %7.1f TFLOP/s (%4.1f%% of peak)", static_cast<long long>(batch_heads),
                    static_cast<long long>(tokens), static_cast<long long>(d), ours, flop / ours / 1e9, 100 * flop / ours / 1e9 / peak);
        json << (first ? "" : ",") << "\n  {\"batch_heads\": " << batch_heads << ", \"tokens\": " << tokens << ", \"head_dim\": " << d
             << ", \"fused_ms\": " << ours << ", \"fused_tflops\": " << flop / ours / 1e9;
        first = false;
        std::vector<SdpaBackend> forward_backends = {SdpaBackend::Default, SdpaBackend::Flash, SdpaBackend::MemoryEfficient, SdpaBackend::CuDnn,
                                                     SdpaBackend::Math};
        if (tokens > 1024) forward_backends.pop_back();  // math materialises tokens² per head: minutes, not a contender
        against_sdpa(forward_backends, AttentionPasses::Forward, ours, "_ms");
        // Forward and backward together; the backward's five products make it 2.5× the forward's FLOPs.
        const double both = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5, AttentionPasses::ForwardAndBackward);
        std::printf("\n    forward+backward: fused %8.3f ms %7.1f TFLOP/s", both, 3.5 * flop / both / 1e9);
        json << ", \"fused_fwd_bwd_ms\": " << both << ", \"fused_fwd_bwd_tflops\": " << 3.5 * flop / both / 1e9;
        against_sdpa({SdpaBackend::Default, SdpaBackend::Flash}, AttentionPasses::ForwardAndBackward, both, "_fwd_bwd_ms");
        std::printf("\n");
        json << "}";
      }
  json << "\n], \"all_correctness_pass\": " << (all_pass ? "true" : "false") << "}\n";
  std::ofstream(argv[1]) << json.str();
  std::printf("wrote %s; correctness %s\n", argv[1], all_pass ? "passed" : "FAILED");
  return all_pass ? 0 : 1;
}
