// The fused attention kernel's GPU checks and benchmark as one LibTorch-only program, for GPU
// machines that have CUDA and PyTorch but none of the project's other dependencies
// (tools/gpu_attention.sh builds and runs it).
//   attention_check OUT.json     correctness cases, then (when they pass) the benchmark
//   attention_check --sanitize   the fused passes alone on small inputs, for compute-sanitizer
// OUT.json is rewritten after every case, with "stage" saying how far the run got, so a run cut
// short by a time limit or a GPU fault still leaves what it measured. Exits 1 when a
// correctness case fails or a case raises.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <utility>
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

std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') quoted += std::string("\\") + c;
    else if (c == '\n') quoted += "\\n";
    else if (static_cast<unsigned char>(c) >= 0x20) quoted += c;
  }
  return quoted + "\"";
}

// A faulty kernel's errors can be NaN, which JSON cannot spell.
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream text;
  text << x;
  return text.str();
}

// The first line of an exception's message: c10 errors append a C++ backtrace.
std::string first_line(const std::exception& e) {
  const std::string message = e.what();
  return message.substr(0, message.find('\n'));
}

// A CUDA fault leaves the context unusable, so nothing after it can be measured.
bool is_cuda_fault(const std::string& message) { return message.find("CUDA error") != std::string::npos; }

class Report {
 public:
  Report(std::string path, std::string header) : path_(std::move(path)), header_(std::move(header)) {}
  std::vector<std::string> correctness, benchmark, other_shapes;
  std::string peak = "null";
  bool all_pass = true;

  // stage: how far the run has got ("correctness", "benchmark", "complete", or why it stopped).
  void write(const std::string& stage) const {
    std::ostringstream json;
    json << "{" << header_ << ", \"stage\": " << json_string(stage) << ", \"all_correctness_pass\": " << (all_pass ? "true" : "false")
         << ",\n\"correctness\": [" << joined(correctness) << "],\n\"bf16_gemm_peak_tflops\": " << peak << ",\n\"benchmark\": [" << joined(benchmark)
         << "],\n\"other_shapes\": [" << joined(other_shapes) << "]}\n";
    std::ofstream(path_) << json.str();
  }

  // Records a case of `section` that raised, with its message's first line, and writes the
  // report at `stage`.
  void record_error(std::vector<std::string>& section, const std::string& entry, const std::exception& error, const std::string& stage) {
    const auto message = first_line(error);
    std::printf("\nraised: %s\n", message.c_str());
    section.push_back(entry + ", \"error\": " + json_string(message) + "}");
    write(stage);
  }

 private:
  static std::string joined(const std::vector<std::string>& entries) {
    std::string text;
    for (const auto& entry : entries) text += (text.empty() ? "\n  " : ",\n  ") + entry;
    return text;
  }
  std::string path_, header_;
};

// Forward and backward of the fused kernels on every dtype and head dim, 100 tokens (partial
// tiles on both sides), nothing else on the GPU but the inputs' copies and δ: what
// compute-sanitizer's memcheck, racecheck, synccheck and initcheck should look at.
int sanitize() {
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t d : {32, 64, 128}) {
      const auto draw = [&] { return at::randn({1, 2, 100, d}).to(at::TensorOptions().device(at::kCUDA).dtype(dtype)); };
      const auto q = draw(), k = draw(), v = draw(), grad_out = draw();
      const auto forward = distillery::fused_attention_forward(q, k, v);
      const auto gradients = distillery::fused_attention_backward(q, k, v, forward.out, forward.logsumexp, grad_out);
      torch::cuda::synchronize();
      std::printf("sanitize: %s d=%lld forward and backward ran (|dq| sum %.3g)\n", dtype_name(dtype).c_str(), static_cast<long long>(d),
                  gradients.dq.to(at::kFloat).abs().sum().item<double>());
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: attention_check OUT.json | attention_check --sanitize\n");
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "attention_check: no CUDA device visible; run it on a GPU machine\n");
    return 2;
  }
  if (std::strcmp(argv[1], "--sanitize") == 0) return sanitize();

  const auto probe = at::zeros({1, 1, 16, 64}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  const char* bf16_kernels = distillery::fused_attention_uses_tensor_cores(probe, probe, probe) ? "tensor cores (mma.sync m16n8k16)" : "CUDA cores";
  std::printf("bf16 forward and backward passes on %s\n", bf16_kernels);
  Report report(argv[1], "\"device\": " + json_string(at::cuda::getCurrentDeviceProperties()->name) + ", \"bf16_kernels\": " + json_string(bf16_kernels));

  std::vector<AttentionCase> cases;
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t d : {32, 64, 128})
      for (int64_t tokens : {64, 100, 1000}) cases.push_back({2, 4, tokens, d, dtype, 1.0});
  // Large logits (|q·k|/√d in the hundreds): the online softmax must not overflow.
  for (auto dtype : {at::kFloat, at::kBFloat16}) cases.push_back({2, 4, 256, 64, dtype, 60.0});
  // The tensor-core forward pass with 32 rows per warp (FusedAttentionOptions), which the benchmark also times.
  for (auto dtype : {at::kHalf, at::kBFloat16})
    for (int64_t d : {32, 64, 128})
      for (int64_t tokens : {100, 1000}) cases.push_back({2, 4, tokens, d, dtype, 1.0, 32});
  for (const auto& c : cases) {
    std::ostringstream entry;
    entry << "{\"dtype\": \"" << dtype_name(c.dtype) << "\", \"head_dim\": " << c.head_dim << ", \"tokens\": " << c.tokens
          << ", \"query_scale\": " << c.query_scale << ", \"forward_rows_per_warp\": " << c.forward_rows_per_warp;
    std::printf("%-8s d=%-3lld tokens=%-5lld q×%-4g rows/warp %-2d ", dtype_name(c.dtype).c_str(), static_cast<long long>(c.head_dim),
                static_cast<long long>(c.tokens), c.query_scale, c.forward_rows_per_warp);
    try {
      const auto e = distillery::attention_errors(c, 1);
      const bool pass = e.fused_within_twice_sdpa();
      report.all_pass = report.all_pass && pass;
      std::printf("forward %.2e (sdpa %.2e)  backward %.2e (sdpa %.2e)  %s", e.fused_forward, e.sdpa_forward, e.fused_backward, e.sdpa_backward,
                  pass ? "ok" : "FAIL");
      if (!pass) std::printf(" (lse %.2e, dq %.2e, dk %.2e, dv %.2e)", e.fused_logsumexp, e.fused_dq, e.fused_dk, e.fused_dv);
      std::printf("\n");
      entry << ", \"fused_forward\": " << json_number(e.fused_forward) << ", \"sdpa_forward\": " << json_number(e.sdpa_forward)
            << ", \"fused_backward\": " << json_number(e.fused_backward) << ", \"sdpa_backward\": " << json_number(e.sdpa_backward)
            << ", \"fused_logsumexp\": " << json_number(e.fused_logsumexp) << ", \"fused_dq\": " << json_number(e.fused_dq)
            << ", \"fused_dk\": " << json_number(e.fused_dk) << ", \"fused_dv\": " << json_number(e.fused_dv) << ", \"pass\": " << (pass ? "true" : "false") << "}";
      report.correctness.push_back(entry.str());
      report.write("correctness");
    } catch (const std::exception& error) {
      report.all_pass = false;
      const bool fault = is_cuda_fault(first_line(error));
      report.record_error(report.correctness, entry.str() + ", \"pass\": false", error, fault ? "stopped: a CUDA fault in the correctness cases" : "correctness");
      if (fault) return 1;
    }
  }
  // Bitwise checks: alignment must not change the kernel family (the launchers copy misaligned
  // 16-bit views), and a second run must repeat the first (no atomics: a moving result is a race).
  std::vector<std::pair<std::string, std::function<bool()>>> bitwise_checks;
  for (auto dtype : {at::kHalf, at::kBFloat16})
    bitwise_checks.emplace_back(dtype_name(dtype) + ": misaligned views give the aligned results", [dtype] { return distillery::misaligned_results_equal_aligned(dtype); });
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t d : {32, 64, 128})
      for (int rows : {16, 32}) {
        if (rows == 32 && dtype == at::kFloat) continue;  // float32 has one forward kernel
        const AttentionCase c{4, 8, 1000, d, dtype, 1.0, rows};
        bitwise_checks.emplace_back(dtype_name(dtype) + " d=" + std::to_string(d) + " rows/warp " + std::to_string(rows) + ": a second run repeats the first",
                                    [c] { return distillery::fused_passes_repeat_bitwise(c); });
      }
  for (const auto& [name, check] : bitwise_checks) {
    const std::string entry = "{\"check\": " + json_string(name);
    std::printf("%s (bit for bit): ", name.c_str());
    try {
      const bool pass = check();
      report.all_pass = report.all_pass && pass;
      std::printf("%s\n", pass ? "ok" : "FAIL");
      report.correctness.push_back(entry + ", \"pass\": " + (pass ? "true" : "false") + "}");
      report.write("correctness");
    } catch (const std::exception& error) {
      report.all_pass = false;
      report.record_error(report.correctness, entry + ", \"pass\": false", error, "stopped: an error in the bitwise checks");
      return 1;
    }
  }
  if (!report.all_pass) {
    report.write("stopped: correctness failed, benchmark skipped");
    std::printf("correctness FAILED: benchmark skipped; results in %s\n", argv[1]);
    return 1;
  }

  const double peak = distillery::measured_bf16_peak_tflops();
  report.peak = json_number(peak);
  std::printf("bf16 GEMM peak (8192^3): %.1f TFLOP/s\n", peak);
  const auto names = distillery::sdpa_backend_names();
  for (int64_t batch_heads : {64, 512})
    for (int64_t tokens : {64, 256, 1024, 4096})
      for (int64_t d : {32, 64, 128}) {
        const AttentionCase c{batch_heads / 8, 8, tokens, d, at::kBFloat16, 1.0};
        std::ostringstream entry;
        entry << "{\"batch_heads\": " << batch_heads << ", \"tokens\": " << tokens << ", \"head_dim\": " << d;
        // Each SDPA backend's time as a multiple of ours (printed) and in milliseconds (JSON).
        const auto against_sdpa = [&](const std::vector<SdpaBackend>& backends, AttentionPasses passes, double ours_ms, const char* suffix) {
          for (auto backend : backends) {
            const double ms = distillery::time_attention_ms(c, false, backend, 5, passes);
            const auto& name = names[static_cast<size_t>(backend)];
            if (ms > 0) std::printf("  %s %.2fx", name.c_str(), ms / ours_ms);
            entry << ", \"" << name << suffix << "\": " << json_number(ms);
          }
        };
        try {
          const double flop = 4.0 * static_cast<double>(batch_heads * tokens * tokens * d);
          const double ours = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5);
          std::printf("BH=%-4lld tokens=%-5lld d=%-3lld fused %8.3f ms %7.1f TFLOP/s (%4.1f%% of peak)", static_cast<long long>(batch_heads),
                      static_cast<long long>(tokens), static_cast<long long>(d), ours, flop / ours / 1e9, 100 * flop / ours / 1e9 / peak);
          entry << ", \"fused_ms\": " << json_number(ours) << ", \"fused_tflops\": " << json_number(flop / ours / 1e9);
          // 32 rows per warp: its time, and (printed) how it compares with the default's.
          AttentionCase wide = c;
          wide.forward_rows_per_warp = 32;
          const double ours_wide = distillery::time_attention_ms(wide, true, SdpaBackend::Default, 5);
          std::printf("  rows/warp 32: %.2fx", ours / ours_wide);
          entry << ", \"fused_rows32_ms\": " << json_number(ours_wide) << ", \"fused_rows32_tflops\": " << json_number(flop / ours_wide / 1e9);
          std::vector<SdpaBackend> forward_backends = {SdpaBackend::Default, SdpaBackend::Flash, SdpaBackend::MemoryEfficient, SdpaBackend::CuDnn,
                                                       SdpaBackend::Math};
          if (tokens > 1024) forward_backends.pop_back();  // math materialises tokens² per head: minutes, not a contender
          against_sdpa(forward_backends, AttentionPasses::Forward, ours, "_ms");
          // Forward and backward together; the backward's five products make it 2.5× the forward's FLOPs.
          const double both = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5, AttentionPasses::ForwardAndBackward);
          std::printf("\n    forward+backward: fused %8.3f ms %7.1f TFLOP/s", both, 3.5 * flop / both / 1e9);
          entry << ", \"fused_fwd_bwd_ms\": " << json_number(both) << ", \"fused_fwd_bwd_tflops\": " << json_number(3.5 * flop / both / 1e9);
          against_sdpa({SdpaBackend::Default, SdpaBackend::Flash}, AttentionPasses::ForwardAndBackward, both, "_fwd_bwd_ms");
          std::printf("\n");
          report.benchmark.push_back(entry.str() + "}");
          report.write("benchmark");
        } catch (const std::exception& error) {
          report.record_error(report.benchmark, entry.str(), error, "stopped: an error in the benchmark");
          return 1;
        }
      }
  // What --attention auto meets besides the bf16 grid: float32 (the networks' default dtype,
  // which takes the CUDA-core kernels) and the shipped Fashion-MNIST networks' attention (2 heads
  // of 32 channels over 7×7 tokens; batch 64 gives B·H = 128).
  const std::vector<AttentionCase> other_shapes = {{64, 2, 49, 32, at::kFloat}, {64, 2, 49, 32, at::kBFloat16}, {8, 8, 256, 64, at::kFloat},
                                                   {8, 8, 1024, 64, at::kFloat}};
  for (const auto& c : other_shapes) {
    std::ostringstream entry;
    entry << "{\"dtype\": \"" << dtype_name(c.dtype) << "\", \"batch_heads\": " << c.batch * c.heads << ", \"tokens\": " << c.tokens
          << ", \"head_dim\": " << c.head_dim;
    try {
      const double fused = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5);
      const double sdpa = distillery::time_attention_ms(c, false, SdpaBackend::Default, 5);
      const double fused_both = distillery::time_attention_ms(c, true, SdpaBackend::Default, 5, AttentionPasses::ForwardAndBackward);
      const double sdpa_both = distillery::time_attention_ms(c, false, SdpaBackend::Default, 5, AttentionPasses::ForwardAndBackward);
      std::printf("%-8s BH=%-4lld tokens=%-5lld d=%-3lld fused %8.3f ms (sdpa %.2fx)  forward+backward %8.3f ms (sdpa %.2fx)\n",
                  dtype_name(c.dtype).c_str(), static_cast<long long>(c.batch * c.heads), static_cast<long long>(c.tokens),
                  static_cast<long long>(c.head_dim), fused, sdpa / fused, fused_both, sdpa_both / fused_both);
      entry << ", \"fused_ms\": " << json_number(fused) << ", \"sdpa_ms\": " << json_number(sdpa) << ", \"fused_fwd_bwd_ms\": " << json_number(fused_both)
            << ", \"sdpa_fwd_bwd_ms\": " << json_number(sdpa_both) << "}";
      report.other_shapes.push_back(entry.str());
      report.write("other shapes");
    } catch (const std::exception& error) {
      report.record_error(report.other_shapes, entry.str(), error, "stopped: an error in the other shapes");
      return 1;
    }
  }
  report.write("complete");
  std::printf("wrote %s; correctness passed\n", argv[1]);
  return 0;
}
