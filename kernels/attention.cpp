#include "kernels/attention.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <atomic>

#include "core/error.h"
#include "core/tensor_checks.h"
#if DISTILLERY_WITH_CUDA
#include "kernels/fused_attention.h"
#endif

namespace distillery {

namespace {
std::atomic<AttentionBackend> current_backend{AttentionBackend::Auto};
constexpr std::string_view kNames[] = {"auto", "fused", "sdpa"};
}  // namespace

std::vector<std::string> attention_backend_names() { return {std::begin(kNames), std::end(kNames)}; }

AttentionBackend attention_backend_from_name(std::string_view name) {
  for (size_t i = 0; i < std::size(kNames); ++i)
    if (kNames[i] == name) return static_cast<AttentionBackend>(i);
  throw Error(fmt::format("unknown attention backend '{}'", name)).expected(fmt::format("one of: {}", fmt::join(kNames, ", ")));
}

void set_attention_backend(AttentionBackend backend) { current_backend = backend; }

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_shape(k, q.sizes().vec(), "attention keys (must match the queries)");
  check_shape(v, q.sizes().vec(), "attention values (must match the queries)");
  const auto backend = current_backend.load();
  if (backend == AttentionBackend::Sdpa || !q.is_cuda()) {
    DISTILLERY_CHECK(backend != AttentionBackend::Fused, Error("the fused attention kernel runs on CUDA tensors only").got(fmt::format("{} tensors", q.device().str()))
                                                             .hint("use --attention auto or sdpa"));
    return at::scaled_dot_product_attention(q, k, v);
  }
#if DISTILLERY_WITH_CUDA
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const auto unsupported = fused_attention_unsupported(qc, kc, vc);
  if (unsupported.empty()) return fused_attention(qc, kc, vc);
  DISTILLERY_CHECK(backend == AttentionBackend::Auto, Error("the fused attention kernel cannot take these tensors").got(unsupported)
                                                          .hint("use --attention auto to fall back to SDPA"));
#else
  DISTILLERY_CHECK(backend == AttentionBackend::Auto, Error("this build has no fused attention kernel (built without CUDA)")
                                                          .hint("configure with -DDISTILLERY_CUDA=ON, or use --attention sdpa"));
#endif
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace distillery
