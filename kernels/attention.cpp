#include "kernels/attention.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/types.h>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "kernels/attention_speed_table.h"
#include "core/tensor_checks.h"
#if DISTILLERY_WITH_CUDA
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/InferenceMode.h>

#include "kernels/attention_checks.h"
#include "kernels/fused_attention.h"
#endif

namespace distillery {

namespace {
std::atomic<AttentionBackend> current_backend{AttentionBackend::Auto};
constexpr std::string_view kAttentionBackendNames[] = {"auto", "fused", "sdpa"};
}  // namespace

std::vector<std::string> attention_backend_names() { return {std::begin(kAttentionBackendNames), std::end(kAttentionBackendNames)}; }

AttentionBackend attention_backend_from_name(std::string_view name) {
  for (size_t i = 0; i < std::size(kAttentionBackendNames); ++i)
    if (kAttentionBackendNames[i] == name) return static_cast<AttentionBackend>(i);
  throw Error(fmt::format("unknown attention backend '{}'", name)).expected(fmt::format("one of: {}", fmt::join(kAttentionBackendNames, ", ")));
}

void set_attention_backend(AttentionBackend backend) { current_backend = backend; }

namespace {
thread_local int math_attention_scopes = 0;
}  // namespace

MathAttentionScope::MathAttentionScope() { ++math_attention_scopes; }
MathAttentionScope::~MathAttentionScope() { --math_attention_scopes; }
bool MathAttentionScope::active() { return math_attention_scopes > 0; }

bool auto_attention_takes_fused_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if DISTILLERY_WITH_CUDA
  if (!fused_attention_unsupported(q, k, v).empty()) return false;
  // Only where the kernel was measured faster than SDPA at this dtype, head dim and size.
  const bool with_backward = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (!fused_attention_measured_faster(q.scalar_type(), q.size(0) * q.size(1), q.size(2), q.size(3), with_backward)) return false;
  // Device, dtype and head dim decide which kernels run (the launchers align misaligned data
  // rather than switch kernel family), so they are what a verdict covers.
  using Key = std::tuple<c10::DeviceIndex, c10::ScalarType, int64_t>;
  static std::mutex mutex;
  static std::map<Key, bool> verdicts;
  const Key key{q.device().index(), q.scalar_type(), q.size(3)};
  const std::lock_guard lock(mutex);
  if (const auto known = verdicts.find(key); known != verdicts.end()) return known->second;
  // The check synchronises, which a CUDA graph capture forbids: SDPA until a call outside one.
  if (fused_attention_stream_is_capturing(q.device())) return false;
  const c10::DeviceGuard on_device(q.device());
  const c10::InferenceMode gradients_allowed(false);  // the check differentiates, also inside sampling
  const at::AutoGradMode grad_mode(true);
  const AttentionCase self_check{.batch = 1, .heads = 2, .tokens = 77, .head_dim = q.size(3), .dtype = q.scalar_type()};
  const auto errors = attention_errors(self_check, 0);
  const bool passed = errors.fused_within_twice_sdpa();
  if (!passed)
    spdlog::warn("the fused attention kernel failed its self-check on {} for {} head_dim {} (errors against float64: forward {:.2e}, SDPA {:.2e}; "
                 "gradients {:.2e}, SDPA {:.2e}); --attention auto uses SDPA for these inputs (tools/gpu_attention.sh gives the full picture)",
                 q.device().str(), c10::toString(q.scalar_type()), q.size(3), errors.fused_forward, errors.sdpa_forward, errors.fused_backward,
                 errors.sdpa_backward);
  verdicts.emplace(key, passed);
  return passed;
#else
  (void)q, (void)k, (void)v;
  return false;
#endif
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_shape(k, q.sizes().vec(), "attention keys (must match the queries)");
  check_shape(v, q.sizes().vec(), "attention values (must match the queries)");
  if (MathAttentionScope::active()) return std::get<0>(at::_scaled_dot_product_attention_math(q, k, v));
  const auto backend = current_backend.load();
  if (backend == AttentionBackend::Sdpa || !q.is_cuda()) {
    DISTILLERY_CHECK(backend != AttentionBackend::Fused, Error("the fused attention kernel runs on CUDA tensors only").got(fmt::format("{} tensors", q.device().str()))
                                                             .hint("use --attention auto or sdpa"));
    return at::scaled_dot_product_attention(q, k, v);
  }
#if DISTILLERY_WITH_CUDA
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  if (backend == AttentionBackend::Auto) {
    if (auto_attention_takes_fused_kernel(qc, kc, vc)) return fused_attention(qc, kc, vc);
  } else {
    const auto unsupported = fused_attention_unsupported(qc, kc, vc);
    DISTILLERY_CHECK(unsupported.empty(), Error("the fused attention kernel cannot take these tensors").got(unsupported)
                                              .hint("use --attention auto to fall back to SDPA"));
    return fused_attention(qc, kc, vc);
  }
#else
  DISTILLERY_CHECK(backend == AttentionBackend::Auto, Error("this build has no fused attention kernel (built without CUDA)")
                                                          .hint("configure with -DDISTILLERY_CUDA=ON, or use --attention sdpa"));
#endif
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace distillery
