// Kernels → launchers → checked entry points of kernels/fused_attention.h.
//
// Every kernel has the same shape: a block of 4 warps owns a few rows (query rows in the
// forward and dQ kernels, key rows in the dK/dV kernel); it streams the other side through
// shared memory in tiles of 32 rows, one per lane. A lane computes the full dot product of its
// tile row with the warp's row; each lane accumulates the output dims d ≡ lane (mod 32) in
// registers, in float32, whatever the input type. Tiles past the token count are masked.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <sstream>
#include <type_traits>

#include "kernels/fused_attention.h"

namespace distillery {

namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps, kTile = 32;
constexpr unsigned kAllLanes = 0xffffffffu;

__device__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kAllLanes, x, offset));
  return x;
}

__device__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kAllLanes, x, offset);
  return x;
}

// Rows [first, first + count) of a [n, D] matrix into shared memory as float32 (row stride
// `stride`, padded by one for the matrices lanes read row-wise, so that 32 lanes reading 32
// rows hit 32 banks); rows past n become zeros.
template <typename T, int D>
__device__ void load_rows(float* dst, int stride, const T* src, int first, int count, int n) {
  for (int index = threadIdx.x; index < count * D; index += blockDim.x) {
    const int r = index / D, d = index % D, row = first + r;
    dst[r * stride + d] = row < n ? static_cast<float>(src[static_cast<size_t>(row) * D + d]) : 0.f;
  }
}

// acc[i] += Σ_j w_j · rows[j][lane + 32 i] over the tile's rows, w_j being lane j's `weight`.
template <int D>
__device__ void add_weighted_rows(float* acc, float weight, const float* rows, int stride, int lane) {
  for (int j = 0; j < kTile; ++j) {
    const float wj = __shfl_sync(kAllLanes, weight, j);
    for (int i = 0; i < D / 32; ++i) acc[i] += wj * rows[j * stride + lane + 32 * i];
  }
}

// Writes factor · acc as the lane's dims of one output row.
template <typename T, int D>
__device__ void store_row(T* row, const float* acc, float factor, int lane) {
  for (int i = 0; i < D / 32; ++i) row[lane + 32 * i] = static_cast<T>(acc[i] * factor);
}

template <int D>
__device__ float dot(const float* a, const float* b) {
  float sum = 0.f;
#pragma unroll 8
  for (int d = 0; d < D; ++d) sum += a[d] * b[d];
  return sum;
}

// out = softmax(q kᵀ · scale) v, logsumexp per query row. Grid: (batch·heads, query tiles).
template <typename T, int D, int kRowsPerWarp>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* q, const T* k, const T* v, T* out, float* logsumexp, int n, float scale) {
  constexpr int kRows = kWarps * kRowsPerWarp, kPerLane = D / 32;
  __shared__ float qs[kRows][D];
  __shared__ float ks[kTile][D + 1];
  __shared__ float vs[kTile][D];
  const size_t head = blockIdx.x * static_cast<size_t>(n) * D;
  const int first_row = blockIdx.y * kRows, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_rows<T, D>(&qs[0][0], D, q + head, first_row, kRows, n);

  float running_max[kRowsPerWarp], running_sum[kRowsPerWarp], acc[kRowsPerWarp][kPerLane];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    running_max[r] = -INFINITY;
    running_sum[r] = 0.f;
    for (int i = 0; i < kPerLane; ++i) acc[r][i] = 0.f;
  }
  for (int start = 0; start < n; start += kTile) {
    __syncthreads();  // the previous tile is consumed (and the query rows are loaded)
    load_rows<T, D>(&ks[0][0], D + 1, k + head, start, kTile, n);
    load_rows<T, D>(&vs[0][0], D, v + head, start, kTile, n);
    __syncthreads();
    const bool valid = start + lane < n;  // lane 0 always is, so every tile has a finite maximum
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float* query = qs[warp * kRowsPerWarp + r];
      const float score = valid ? dot<D>(query, ks[lane]) * scale : -INFINITY;
      const float new_max = fmaxf(running_max[r], warp_max(score));
      const float p = valid ? expf(score - new_max) : 0.f;
      const float rescale = expf(running_max[r] - new_max);  // 0 on the first tile
      running_sum[r] = running_sum[r] * rescale + warp_sum(p);
      running_max[r] = new_max;
      for (int i = 0; i < kPerLane; ++i) acc[r][i] *= rescale;
      add_weighted_rows<D>(acc[r], p, &vs[0][0], D, lane);
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = first_row + warp * kRowsPerWarp + r;
    if (row >= n) continue;
    store_row<T, D>(out + head + static_cast<size_t>(row) * D, acc[r], 1.f / running_sum[r], lane);
    if (lane == 0) logsumexp[blockIdx.x * static_cast<size_t>(n) + row] = running_max[r] + logf(running_sum[r]);
  }
}

// dq_i = scale · Σ_j p_ij (dp_ij − δ_i) k_j with p_ij = exp(q_i·k_j·scale − lse_i),
// dp_ij = do_i·v_j, δ_i = do_i·o_i. Grid: (batch·heads, query tiles).
template <typename T, int D, int kRowsPerWarp>
__global__ void __launch_bounds__(kThreads) grad_query_kernel(const T* q, const T* k, const T* v, const T* grad_out, const float* logsumexp,
                                                             const float* delta, T* grad_q, int n, float scale) {
  constexpr int kRows = kWarps * kRowsPerWarp, kPerLane = D / 32;
  __shared__ float qs[kRows][D];
  __shared__ float dos[kRows][D];
  __shared__ float ks[kTile][D + 1];
  __shared__ float vs[kTile][D + 1];
  const size_t head = blockIdx.x * static_cast<size_t>(n) * D, head_rows = blockIdx.x * static_cast<size_t>(n);
  const int first_row = blockIdx.y * kRows, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_rows<T, D>(&qs[0][0], D, q + head, first_row, kRows, n);
  load_rows<T, D>(&dos[0][0], D, grad_out + head, first_row, kRows, n);

  float row_lse[kRowsPerWarp], row_delta[kRowsPerWarp], acc[kRowsPerWarp][kPerLane];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = first_row + warp * kRowsPerWarp + r;
    row_lse[r] = row < n ? logsumexp[head_rows + row] : 0.f;
    row_delta[r] = row < n ? delta[head_rows + row] : 0.f;
    for (int i = 0; i < kPerLane; ++i) acc[r][i] = 0.f;
  }
  for (int start = 0; start < n; start += kTile) {
    __syncthreads();
    load_rows<T, D>(&ks[0][0], D + 1, k + head, start, kTile, n);
    load_rows<T, D>(&vs[0][0], D + 1, v + head, start, kTile, n);
    __syncthreads();
    const bool valid = start + lane < n;
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int local = warp * kRowsPerWarp + r;
      const float p = valid ? expf(dot<D>(qs[local], ks[lane]) * scale - row_lse[r]) : 0.f;
      const float ds = valid ? p * (dot<D>(dos[local], vs[lane]) - row_delta[r]) : 0.f;
      add_weighted_rows<D>(acc[r], ds, &ks[0][0], D + 1, lane);
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = first_row + warp * kRowsPerWarp + r;
    if (row < n) store_row<T, D>(grad_q + head + static_cast<size_t>(row) * D, acc[r], scale, lane);
  }
}

// dv_j = Σ_i p_ij do_i and dk_j = scale · Σ_i p_ij (dp_ij − δ_i) q_i, the keys' side of the
// same quantities. Grid: (batch·heads, key tiles).
template <typename T, int D, int kKeysPerWarp>
__global__ void __launch_bounds__(kThreads) grad_key_value_kernel(const T* q, const T* k, const T* v, const T* grad_out, const float* logsumexp,
                                                                 const float* delta, T* grad_k, T* grad_v, int n, float scale) {
  constexpr int kKeys = kWarps * kKeysPerWarp, kPerLane = D / 32;
  __shared__ float key_rows[kKeys][D];
  __shared__ float value_rows[kKeys][D];
  __shared__ float qs[kTile][D + 1];
  __shared__ float dos[kTile][D + 1];
  __shared__ float tile_lse[kTile], tile_delta[kTile];
  const size_t head = blockIdx.x * static_cast<size_t>(n) * D, head_rows = blockIdx.x * static_cast<size_t>(n);
  const int first_key = blockIdx.y * kKeys, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_rows<T, D>(&key_rows[0][0], D, k + head, first_key, kKeys, n);
  load_rows<T, D>(&value_rows[0][0], D, v + head, first_key, kKeys, n);

  float dk[kKeysPerWarp][kPerLane], dv[kKeysPerWarp][kPerLane];
  for (int r = 0; r < kKeysPerWarp; ++r)
    for (int i = 0; i < kPerLane; ++i) dk[r][i] = dv[r][i] = 0.f;
  for (int start = 0; start < n; start += kTile) {
    __syncthreads();
    load_rows<T, D>(&qs[0][0], D + 1, q + head, start, kTile, n);
    load_rows<T, D>(&dos[0][0], D + 1, grad_out + head, start, kTile, n);
    if (threadIdx.x < kTile) {
      const int row = start + threadIdx.x;
      tile_lse[threadIdx.x] = row < n ? logsumexp[head_rows + row] : 0.f;
      tile_delta[threadIdx.x] = row < n ? delta[head_rows + row] : 0.f;
    }
    __syncthreads();
    const bool valid = start + lane < n;
    for (int r = 0; r < kKeysPerWarp; ++r) {
      const int local = warp * kKeysPerWarp + r;
      const float p = valid ? expf(dot<D>(qs[lane], key_rows[local]) * scale - tile_lse[lane]) : 0.f;
      const float ds = valid ? p * (dot<D>(dos[lane], value_rows[local]) - tile_delta[lane]) : 0.f;
      add_weighted_rows<D>(dv[r], p, &dos[0][0], D + 1, lane);
      add_weighted_rows<D>(dk[r], ds, &qs[0][0], D + 1, lane);
    }
  }
  for (int r = 0; r < kKeysPerWarp; ++r) {
    const int key = first_key + warp * kKeysPerWarp + r;
    if (key >= n) continue;
    store_row<T, D>(grad_k + head + static_cast<size_t>(key) * D, dk[r], scale, lane);
    store_row<T, D>(grad_v + head + static_cast<size_t>(key) * D, dv[r], 1.f, lane);
  }
}

// Rows per warp keep each kernel's static shared memory under 48 KiB at head dim 128.
constexpr int kForwardRows = 4, kGradQueryRows = 2, kGradKeys = 2;
// Row tiles go in the grid's y dimension (at most 65,535 blocks of 8 rows).
constexpr int64_t kMaxTokens = int64_t{65535} * kWarps * 2;

int tiles(int n, int rows) { return (n + rows - 1) / rows; }

// Calls body(T{}, std::integral_constant<int, D>{}) for the tensor's dtype T and head dim D.
template <typename Body>
void dispatch(const at::Tensor& q, Body&& body) {
  const auto d = q.size(3);
  const auto by_dim = [&](auto type_tag) {
    if (d == 32) body(type_tag, std::integral_constant<int, 32>{});
    else if (d == 64) body(type_tag, std::integral_constant<int, 64>{});
    else body(type_tag, std::integral_constant<int, 128>{});
  };
  switch (q.scalar_type()) {
    case at::kFloat: by_dim(float{}); break;
    case at::kHalf: by_dim(c10::Half{}); break;
    default: by_dim(c10::BFloat16{}); break;
  }
}

void check_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto reason = fused_attention_unsupported(q, k, v);
  TORCH_CHECK(reason.empty(), "fused attention: ", reason);
}

}  // namespace

std::string fused_attention_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  std::ostringstream why;
  if (!q.defined() || !k.defined() || !v.defined()) return "q, k and v must all be given";
  if (!q.is_cuda() || k.device() != q.device() || v.device() != q.device())
    why << "q, k and v must be on one CUDA device (got " << q.device() << ", " << k.device() << ", " << v.device()
        << "); on the CPU use the SDPA backend";
  else if (q.scalar_type() != k.scalar_type() || q.scalar_type() != v.scalar_type())
    why << "q, k and v must have one dtype (got " << q.scalar_type() << ", " << k.scalar_type() << ", " << v.scalar_type() << ")";
  else if (q.scalar_type() != at::kFloat && q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16)
    why << "dtype " << q.scalar_type() << " is not supported: convert to float32, float16 or bfloat16";
  else if (q.dim() != 4 || !q.sizes().equals(k.sizes()) || !q.sizes().equals(v.sizes()))
    why << "q, k and v must all be [batch, heads, tokens, head_dim] of one shape (got " << q.sizes() << ", " << k.sizes() << ", " << v.sizes() << ")";
  else if (q.size(3) != 32 && q.size(3) != 64 && q.size(3) != 128)
    why << "head_dim " << q.size(3) << " is not supported: use 32, 64 or 128 channels per head";
  else if (q.size(2) < 1 || q.size(2) > kMaxTokens)
    why << "token count " << q.size(2) << " is out of range (1 to " << kMaxTokens << ")";
  else if (q.size(0) * q.size(1) > INT32_MAX)
    why << "batch × heads " << q.size(0) * q.size(1) << " exceeds 2^31 − 1";
  else if (!q.is_contiguous() || !k.is_contiguous() || !v.is_contiguous())
    why << "q, k and v must be contiguous: call .contiguous() on them first";
  return why.str();
}

FusedAttentionForward fused_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_supported(q, k, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const int heads = static_cast<int>(q.size(0) * q.size(1)), n = static_cast<int>(q.size(2));
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  auto out = at::empty_like(q);
  auto logsumexp = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch(q, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim_tag)::value;
    forward_kernel<T, D, kForwardRows><<<dim3(heads, tiles(n, kWarps * kForwardRows)), kThreads, 0, stream>>>(
        q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(), logsumexp.data_ptr<float>(), n, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, logsumexp};
}

FusedAttentionGradients fused_attention_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                 const at::Tensor& logsumexp, const at::Tensor& grad_out) {
  check_supported(q, k, v);
  const auto reason = fused_attention_unsupported(out, grad_out, q);
  TORCH_CHECK(reason.empty(), "fused attention backward (out, grad_out): ", reason);
  TORCH_CHECK(logsumexp.scalar_type() == at::kFloat && logsumexp.is_contiguous() && logsumexp.device() == q.device() &&
                  logsumexp.sizes().equals(q.sizes().slice(0, 3)),
              "fused attention backward: logsumexp must be the forward pass's float32 [batch, heads, tokens] on q's device");
  const c10::cuda::CUDAGuard guard(q.device());
  const int heads = static_cast<int>(q.size(0) * q.size(1)), n = static_cast<int>(q.size(2));
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  // δ_i = do_i·o_i, the softmax's correction term, once per row.
  const auto delta = (grad_out.to(at::kFloat) * out.to(at::kFloat)).sum(-1).contiguous();
  auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch(q, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim_tag)::value;
    grad_query_kernel<T, D, kGradQueryRows><<<dim3(heads, tiles(n, kWarps * kGradQueryRows)), kThreads, 0, stream>>>(
        q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), grad_out.data_ptr<T>(), logsumexp.data_ptr<float>(), delta.data_ptr<float>(),
        dq.data_ptr<T>(), n, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_key_value_kernel<T, D, kGradKeys><<<dim3(heads, tiles(n, kWarps * kGradKeys)), kThreads, 0, stream>>>(
        q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), grad_out.data_ptr<T>(), logsumexp.data_ptr<float>(), delta.data_ptr<float>(),
        dk.data_ptr<T>(), dv.data_ptr<T>(), n, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dq, dk, dv};
}

}  // namespace distillery
