#include "kernels/attention_checks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "kernels/fused_attention.h"

namespace distillery {

namespace {

double relative_error(const at::Tensor& x, const at::Tensor& reference) {
  return ((x.to(at::kDouble) - reference).abs().max() / reference.abs().max().clamp_min(1e-300)).item<double>();
}

// Forward output and gradients of q, k, v for the upstream gradient `grad_out`.
using AttentionFunction = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;
std::vector<at::Tensor> run(const AttentionFunction& f, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& grad_out) {
  auto qg = q.detach().requires_grad_(true), kg = k.detach().requires_grad_(true), vg = v.detach().requires_grad_(true);
  const auto out = f(qg, kg, vg);
  auto grads = torch::autograd::grad({out}, {qg, kg, vg}, {grad_out.to(out.scalar_type())});
  return {out.detach(), grads[0], grads[1], grads[2]};
}

at::Tensor naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::softmax(at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1))), -1).matmul(v);
}

// Restricts SDPA to one backend for the lifetime of the object.
class SdpaRestriction {
 public:
  explicit SdpaRestriction(SdpaBackend only) {
    auto& c = at::globalContext();
    saved_ = {c.userEnabledFlashSDP(), c.userEnabledMemEfficientSDP(), c.userEnabledCuDNNSDP(), c.userEnabledMathSDP()};
    if (only == SdpaBackend::Default) return;
    c.setSDPUseFlash(only == SdpaBackend::Flash);
    c.setSDPUseMemEfficient(only == SdpaBackend::MemoryEfficient);
    c.setSDPUseCuDNN(only == SdpaBackend::CuDnn);
    c.setSDPUseMath(only == SdpaBackend::Math);
  }
  ~SdpaRestriction() {
    auto& c = at::globalContext();
    c.setSDPUseFlash(saved_[0]);
    c.setSDPUseMemEfficient(saved_[1]);
    c.setSDPUseCuDNN(saved_[2]);
    c.setSDPUseMath(saved_[3]);
  }

 private:
  std::vector<bool> saved_;
};

// Median milliseconds per call of f over `repeats` samples. Each sample times enough calls back
// to back (about 2 ms of work, judged from one call after the warm-up) that the synchronisation
// closing it costs little: small shapes run in microseconds, a host wake-up takes tens of them.
double median_ms(const std::function<void()>& f, int repeats) {
  const auto milliseconds_for = [&](int calls) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) f();
    torch::cuda::synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  milliseconds_for(1);  // warm-up (and kernel selection)
  const int calls = std::clamp(static_cast<int>(std::ceil(2.0 / std::max(milliseconds_for(1), 1e-3))), 1, 1000);
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) times.push_back(milliseconds_for(calls) / calls);
  std::nth_element(times.begin(), times.begin() + static_cast<long>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

// Checks poison the outputs (a kernel that skips an element then shows NaN); timings do not.
AttentionFunction fused_kernel(const AttentionCase& c, bool poison_outputs) {
  const FusedAttentionOptions options{c.forward_rows_per_warp, poison_outputs};
  return [options](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) { return fused_attention(q, k, v, options); };
}

// Drawn from a generator of their own, so that a check inside a seeded run leaves the run's
// random stream as it was.
std::vector<at::Tensor> inputs(const AttentionCase& c, uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  const std::vector<int64_t> shape = {c.batch, c.heads, c.tokens, c.head_dim};
  const auto draw = [&] { return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat)).to(at::kCUDA); };
  return {(draw() * c.query_scale).to(c.dtype), draw().to(c.dtype), draw().to(c.dtype), draw()};
}

}  // namespace

bool AttentionErrors::fused_within_twice_sdpa() const {
  return fused_forward <= 2 * sdpa_forward + 1e-6 && fused_backward <= 2 * sdpa_backward + 1e-6;
}

AttentionErrors attention_errors(const AttentionCase& c, uint64_t seed) {
  const auto x = inputs(c, seed);
  const auto& [q, k, v, grad_out] = std::tie(x[0], x[1], x[2], x[3]);
  const auto reference = run(naive, q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), grad_out.to(at::kDouble));
  const auto fused = run(fused_kernel(c, true), q, k, v, grad_out);
  const auto sdpa = run([](const at::Tensor& a, const at::Tensor& b, const at::Tensor& d) { return at::scaled_dot_product_attention(a, b, d); }, q, k,
                        v, grad_out);
  const auto gradient_error = [&](const std::vector<at::Tensor>& r, size_t i) { return relative_error(r[i], reference[i]); };
  const auto backward = [&](const std::vector<at::Tensor>& r) { return std::max({gradient_error(r, 1), gradient_error(r, 2), gradient_error(r, 3)}); };
  const auto logits = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(-2, -1)) / std::sqrt(static_cast<double>(c.head_dim));
  const auto logsumexp = fused_attention_forward(q, k, v, {c.forward_rows_per_warp, true}).logsumexp;
  return {relative_error(fused[0], reference[0]),     relative_error(sdpa[0], reference[0]), backward(fused),       backward(sdpa),
          relative_error(logsumexp, logits.logsumexp(-1)), gradient_error(fused, 1),          gradient_error(fused, 2), gradient_error(fused, 3)};
}

namespace {

// Output, log-sum-exp and gradients of the fused passes (outputs poisoned first).
std::vector<at::Tensor> fused_passes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& grad_out, int rows_per_warp) {
  const FusedAttentionOptions options{rows_per_warp, /*poison_outputs=*/true};
  const auto forward = fused_attention_forward(q, k, v, options);
  const auto gradients = fused_attention_backward(q, k, v, forward.out, forward.logsumexp, grad_out, options);
  return {forward.out, forward.logsumexp, gradients.dq, gradients.dk, gradients.dv};
}

bool bitwise_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const at::Tensor& x, const at::Tensor& y) { return at::equal(x, y); });
}

}  // namespace

bool misaligned_results_equal_aligned(c10::ScalarType dtype) {
  const AttentionCase c{1, 2, 70, 64, dtype};
  const auto x = inputs(c, 3);
  const auto misaligned = [](const at::Tensor& t) {
    auto view = at::empty({t.numel() + 1}, t.options()).narrow(0, 1, t.numel()).view(t.sizes());
    return view.copy_(t);
  };
  const auto grad_out = x[3].to(dtype);
  return bitwise_equal(fused_passes(x[0], x[1], x[2], grad_out, c.forward_rows_per_warp),
                       fused_passes(misaligned(x[0]), misaligned(x[1]), misaligned(x[2]), misaligned(grad_out), c.forward_rows_per_warp));
}

bool fused_passes_repeat_bitwise(const AttentionCase& c) {
  const auto x = inputs(c, 5);
  const auto grad_out = x[3].to(c.dtype);
  return bitwise_equal(fused_passes(x[0], x[1], x[2], grad_out, c.forward_rows_per_warp),
                       fused_passes(x[0], x[1], x[2], grad_out, c.forward_rows_per_warp));
}

std::vector<std::string> sdpa_backend_names() { return {"sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math"}; }

double time_attention_ms(const AttentionCase& c, bool fused, SdpaBackend sdpa, int repeats, AttentionPasses passes) {
  const auto x = inputs(c, 0);
  const AttentionFunction f = fused ? fused_kernel(c, false)
                                    : [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) { return at::scaled_dot_product_attention(q, k, v); };
  const auto work = [&] {
    if (passes == AttentionPasses::ForwardAndBackward) {
      run(f, x[0], x[1], x[2], x[3]);
    } else {
      const at::NoGradGuard no_grad;
      f(x[0], x[1], x[2]);
    }
  };
  const SdpaRestriction only(fused ? SdpaBackend::Default : sdpa);
  try {
    return median_ms(work, repeats);
  } catch (const c10::Error&) {
    if (fused) throw;
    return -1;  // that SDPA backend does not take these inputs
  }
}

double measured_bf16_peak_tflops() {
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const auto a = at::randn({8192, 8192}, options), b = at::randn({8192, 8192}, options);
  const double ms = median_ms([&] { at::matmul(a, b); }, 10);
  return 2.0 * 8192.0 * 8192.0 * 8192.0 / (ms * 1e-3) / 1e12;
}

}  // namespace distillery
