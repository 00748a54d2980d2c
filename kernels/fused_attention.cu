// Kernels → launchers → checked entry points of kernels/fused_attention.h.
//
// Two families of kernels: float16/bfloat16 inputs on sm_80 and later go through tensor cores
// (the tensor_core_* kernels, below); float32 inputs and older GPUs use the CUDA-core kernels,
// which all have the same shape: a block of 4 warps owns a few rows (query rows in the
// forward and dQ kernels, key rows in the dK/dV kernel); it streams the other side through
// shared memory in tiles of 32 rows, one per lane. A lane computes the full dot product of its
// tile row with the warp's row; each lane accumulates the output dims d ≡ lane (mod 32) in
// registers, in float32, whatever the input type. Tiles past the token count are masked.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <limits>
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

// Four partial sums (dims d ≡ u mod 4) added pairwise. One chain of D multiply-adds carried the
// rounding of a running sum into every step: with logits in the hundreds that made the float32
// kernels' gradients 2.9× less accurate than SDPA's on the first GPU run, an error
// tests/python/float32_attention_model.py reproduces to the digit and shows gone with four sums.
template <int D>
__device__ float dot(const float* a, const float* b) {
  float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
  for (int d = 0; d < D; d += 4)
    for (int u = 0; u < 4; ++u) sum[u] = fmaf(a[d + u], b[d + u], sum[u]);
  return (sum[0] + sum[2]) + (sum[1] + sum[3]);
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

// ---- Tensor-core kernels (float16 / bfloat16, sm_80+) ----
//
// FlashAttention-2 on mma.sync.m16n8k16 with float32 accumulators. A block of 4 warps owns 64
// rows (query rows in the forward and dQ kernels, key rows in the dK/dV kernel), 16 per warp,
// held in registers as A fragments for the whole kernel; the other side streams through shared
// memory in tiles, row-major as in global memory, copied by cp.async and read as B fragments
// by ldmatrix (transposing on the fly where the product needs it). In the fragment layouts lane
// L holds rows L/4 and L/4 + 8 and the column pair 2·(L%4) + {0, 1} of every 8-column block, so
// a row's maximum and sum reduce over the 4 lanes of a quad, and a 16 × 64 block of
// accumulators (scores, probabilities, their gradients) is already the A fragment of the next
// product once converted to 16 bits. Scores are kept in log2 units (scale·log2 e folded in) so
// the exponentials are exp2.
constexpr int kTensorRowsPerWarp = 16, kTensorRows = kWarps * kTensorRowsPerWarp;
// Streamed tile rows: 64 where a warp holds one block of rows' fragments of one or two operands
// (forward: Q; dQ: Q, dO); fewer in the forward pass with two blocks per warp at head dim 128
// (its launcher says) and in the dK/dV kernel, whose warps hold K, V and two accumulators of
// head-dim width (at head dim 128, 32 rows left ptxas 24 bytes short of registers).
constexpr int kTensorKeys = 64;
template <int D>
constexpr int kTensorGradQueries = D == 128 ? 16 : 32;
constexpr float kLog2e = 1.44269504088896340736f;

template <typename T>
__device__ uint32_t pack_pair(float low, float high) {
  if constexpr (std::is_same_v<T, c10::Half>) {
    const __half2 pair = __floats2half2_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  } else {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
}

// The instructions below exist from sm_80 (cp.async, bf16 mma) on; the launchers never pick the
// tensor-core kernels on older GPUs, whose builds get a trap in their place.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define DISTILLERY_TENSOR_CORES 1
#endif

// c += a · b for a 16×16 A fragment and a 16×8 B fragment (b0: k rows 0–7, b1: 8–15).
template <typename T>
__device__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef DISTILLERY_TENSOR_CORES
  if constexpr (std::is_same_v<T, c10::Half>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// Four 8×8 matrices of 16-bit values from shared memory, lane L giving the address of row L%8
// of matrix L/8; r[m] is matrix m's fragment (row L/4, columns 2·(L%4) + {0, 1}), or with
// `transpose` its transpose's (rows 2·(L%4) + {0, 1}, column L/4).
template <bool transpose>
__device__ void load_matrices(uint32_t (&r)[4], const uint16_t* row_address) {
#ifdef DISTILLERY_TENSOR_CORES
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (transpose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
#else
  __trap();
#endif
}

// Shared-memory tiles are R rows of D values with rows padded by 8, so that the 8 rows of each
// ldmatrix phase start in 8 different 16-byte bank groups.
template <int D>
constexpr int kTileStride = D + 8;

// Starts copying rows [first, first + R) of a [n, D] matrix into a shared tile as one cp.async
// group; rows past n are filled with zeros, not read. Past the last tile the group is empty,
// which keeps every thread's count of groups the same.
template <int D, int R>
__device__ void start_tile_copy(uint16_t* tile, const uint16_t* src, int first, int n) {
#ifdef DISTILLERY_TENSOR_CORES
  for (int index = threadIdx.x; first < n && index < R * D / 8; index += kThreads) {
    const int r = index / (D / 8), c = 8 * (index % (D / 8)), row = first + r;
    const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(tile + r * kTileStride<D> + c));
    const uint16_t* from = src + static_cast<size_t>(row < n ? row : 0) * D + c;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(from), "r"(row < n ? 16 : 0));
  }
  asm volatile("cp.async.commit_group;\n" ::);
#else
  __trap();
#endif
}

// Starts copying values [first, first + R) of a per-row float32 vector (zeros past n) into
// shared memory, 4 bytes per copy, without committing them: they join the group that the next
// start_tile_copy commits, and land with that tile.
template <int R>
__device__ void start_row_value_copies(float* dst, const float* src, int first, int n) {
#ifdef DISTILLERY_TENSOR_CORES
  for (int i = threadIdx.x; first < n && i < R; i += kThreads) {
    const int row = first + i;
    const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(dst + i));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(src + (row < n ? row : 0)), "r"(row < n ? 4 : 0));
  }
#else
  __trap();
#endif
}

// Waits until at most the `pending` newest cp.async groups of this thread are in flight, then
// makes every thread's finished copies visible to the block.
template <int pending>
__device__ void wait_for_copies() {
#ifdef DISTILLERY_TENSOR_CORES
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
  __syncthreads();
}

// The A fragments of a warp's 16 rows of a [n, D] matrix in global memory (this lane's rows
// row0 and row0 + 8), zeros past n.
template <int D>
__device__ void load_row_fragments(uint32_t (&a)[D / 16][4], const uint16_t* m, int row0, int pair_col, int n) {
  const auto pair_at = [&](int row, int col) { return row < n ? *reinterpret_cast<const uint32_t*>(m + static_cast<size_t>(row) * D + col) : 0u; };
#pragma unroll
  for (int c = 0; c < D / 16; ++c) {
    a[c][0] = pair_at(row0, 16 * c + pair_col);
    a[c][1] = pair_at(row0 + 8, 16 * c + pair_col);
    a[c][2] = pair_at(row0, 16 * c + 8 + pair_col);
    a[c][3] = pair_at(row0 + 8, 16 * c + 8 + pair_col);
  }
}

// acc[m] = A[m] · tileᵀ: the warp's M blocks of 16 rows (A fragments) against the R rows of a
// shared tile — the scores Q·Kᵀ and the probability gradients dO·Vᵀ (and both transposed in the
// dK/dV kernel). Each B fragment read from shared memory feeds all M blocks.
template <typename T, int D, int R, int M>
__device__ void multiply_by_tile_transposed(float (&acc)[M][R / 8][4], const uint32_t (&a)[M][D / 16][4], const uint16_t* tile, int lane) {
  const int matrix = lane / 8, matrix_row = lane % 8;
#pragma unroll
  for (int j = 0; j < R / 8; ++j) {
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.f;
#pragma unroll
    for (int c = 0; c < D / 16; c += 2) {
      // Tile rows 8j..8j+7 × columns 16c + {0, 8, 16, 24} + 0..7: the B fragments of chunks c and c + 1.
      uint32_t b[4];
      load_matrices<false>(b, tile + (8 * j + matrix_row) * kTileStride<D> + 16 * c + 8 * matrix);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        mma_16x8x16<T>(acc[m][j], a[m][c], b[0], b[1]);
        mma_16x8x16<T>(acc[m][j], a[m][c + 1], b[2], b[3]);
      }
    }
  }
}

// acc[m] += P[m] · tile: M blocks of 16 × R accumulators, rounded to T, times the R × D shared
// tile — P·V, dS·K, Pᵀ·dO and dSᵀ·Q. Each B fragment read from shared memory feeds all M blocks.
template <typename T, int D, int R, int M>
__device__ void accumulate_times_tile(float (&acc)[M][D / 8][4], const float (&p)[M][R / 8][4], const uint16_t* tile, int lane) {
  const int matrix = lane / 8, matrix_row = lane % 8;
#pragma unroll
  for (int t = 0; t < R / 16; ++t) {  // 16 tile rows at a time: accumulator blocks 2t and 2t + 1 form one A fragment
    uint32_t a[M][4];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      a[m][0] = pack_pair<T>(p[m][2 * t][0], p[m][2 * t][1]);
      a[m][1] = pack_pair<T>(p[m][2 * t][2], p[m][2 * t][3]);
      a[m][2] = pack_pair<T>(p[m][2 * t + 1][0], p[m][2 * t + 1][1]);
      a[m][3] = pack_pair<T>(p[m][2 * t + 1][2], p[m][2 * t + 1][3]);
    }
#pragma unroll
    for (int b = 0; b < D / 8; b += 2) {
      // Tile rows 16t + {0, 8} + 0..7 × columns 8b..8b+7, then the same rows × columns 8(b + 1)..;
      // transposed they are the B fragments (k = tile row, n = column) of column blocks b and b + 1.
      uint32_t vb[4];
      load_matrices<true>(vb, tile + (16 * t + 8 * (matrix % 2) + matrix_row) * kTileStride<D> + 8 * (b + matrix / 2));
#pragma unroll
      for (int m = 0; m < M; ++m) {
        mma_16x8x16<T>(acc[m][b], a[m], vb[0], vb[1]);
        mma_16x8x16<T>(acc[m][b + 1], a[m], vb[2], vb[3]);
      }
    }
  }
}

// The same for one block of 16 rows (the gradient kernels, whose warps hold more operands).
template <typename T, int D, int R>
__device__ void multiply_by_tile_transposed(float (&acc)[R / 8][4], const uint32_t (&a)[D / 16][4], const uint16_t* tile, int lane) {
  multiply_by_tile_transposed<T, D, R, 1>(reinterpret_cast<float(&)[1][R / 8][4]>(acc), reinterpret_cast<const uint32_t(&)[1][D / 16][4]>(a), tile, lane);
}
template <typename T, int D, int R>
__device__ void accumulate_times_tile(float (&acc)[D / 8][4], const float (&p)[R / 8][4], const uint16_t* tile, int lane) {
  accumulate_times_tile<T, D, R, 1>(reinterpret_cast<float(&)[1][D / 8][4]>(acc), reinterpret_cast<const float(&)[1][R / 8][4]>(p), tile, lane);
}

// Writes factor · acc as this lane's pairs of rows row0 and row0 + 8 (those below n) of a [n, D] matrix.
template <typename T, int D>
__device__ void store_row_fragments(uint16_t* m, const float (&acc)[D / 8][4], float factor, int row0, int pair_col, int n) {
#pragma unroll
  for (int second = 0; second < 2; ++second) {  // unrolled, so acc[b][2 * second] stays in registers
    const int row = row0 + 8 * second;
    if (row >= n) continue;
#pragma unroll
    for (int b = 0; b < D / 8; ++b)
      *reinterpret_cast<uint32_t*>(m + static_cast<size_t>(row) * D + 8 * b + pair_col) =
          pack_pair<T>(acc[b][2 * second] * factor, acc[b][2 * second + 1] * factor);
  }
}

__device__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kAllLanes, x, 1));
  return fmaxf(x, __shfl_xor_sync(kAllLanes, x, 2));
}

__device__ float quad_sum(float x) {
  x += __shfl_xor_sync(kAllLanes, x, 1);
  return x + __shfl_xor_sync(kAllLanes, x, 2);
}

// The pointers of one head's [n, D] matrix as 16-bit words.
template <typename T>
__device__ const uint16_t* head_of(const T* m, int n, int D) {
  return reinterpret_cast<const uint16_t*>(m) + blockIdx.x * static_cast<size_t>(n) * D;
}
template <typename T>
__device__ uint16_t* head_of(T* m, int n, int D) {
  return reinterpret_cast<uint16_t*>(m) + blockIdx.x * static_cast<size_t>(n) * D;
}

// The online softmax of one block of 16 rows in this lane's two rows (L/4 and L/4 + 8, index
// h): running maxima in log2 units, and sums over this lane's columns only until `finish`.
struct OnlineSoftmaxRows {
  float max[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};

  // Turns raw scores s of keys [start, start + R) into probabilities against the updated
  // maxima (keys past n get 0), rescaling the output accumulators o and the sums to match.
  template <int R, int D>
  __device__ void absorb(float (&s)[R / 8][4], float (&o)[D / 8][4], int start, int n, int pair_col, float scale_log2) {
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < R / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool valid = start + 8 * j + pair_col + (e & 1) < n;  // key `start` always is: every row max is finite
        s[j][e] = valid ? s[j][e] * scale_log2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
    float rescale[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float new_max = fmaxf(max[h], quad_max(tile_max[h]));
      rescale[h] = exp2f(max[h] - new_max);  // 0 on the first tile
      max[h] = new_max;
      sum[h] *= rescale[h];
    }
#pragma unroll
    for (int b = 0; b < D / 8; ++b)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[b][e] *= rescale[e / 2];
#pragma unroll
    for (int j = 0; j < R / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - max[e / 2]);
        sum[e / 2] += s[j][e];
      }
  }

  // Divides o by the rows' sums and writes o and the rows' log-sum-exp (natural log).
  template <typename T, int D>
  __device__ void finish(float (&o)[D / 8][4], uint16_t* out, float* logsumexp, int row0, int pair_col, int n, int lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) sum[h] = quad_sum(sum[h]);
#pragma unroll
    for (int b = 0; b < D / 8; ++b)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[b][e] /= sum[e / 2];
    store_row_fragments<T, D>(out, o, 1.f, row0, pair_col, n);
    if (lane % 4 == 0)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        if (row0 + 8 * h < n) logsumexp[row0 + 8 * h] = (max[h] + log2f(sum[h])) / kLog2e;
  }
};

// out = softmax(q kᵀ · scale) v, logsumexp per query row. Grid: (batch·heads, tiles of 64·M
// rows). Each warp owns M blocks of 16 query rows: with M = 2 every K and V fragment read from
// shared memory feeds two blocks, half the shared-memory traffic per FLOP, for twice the
// registers (so fewer keys per tile at head dim 128). Keys and values have a buffer each, so
// each copy overlaps the other half of the work: the next tile's keys arrive during the
// softmax and P·V, the next values during Q·Kᵀ.
template <typename T, int D, int M, int kKeys>
__global__ void __launch_bounds__(kThreads) tensor_core_forward_kernel(const T* q_in, const T* k_in, const T* v_in, T* out, float* logsumexp, int n,
                                                                        float scale) {
  __shared__ __align__(16) uint16_t keys[kKeys * kTileStride<D>];
  __shared__ __align__(16) uint16_t values[kKeys * kTileStride<D>];
  const uint16_t *q = head_of(q_in, n, D), *k = head_of(k_in, n, D), *v = head_of(v_in, n, D);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pair_col = 2 * (lane % 4);
  // This lane's first row in the warp's block m is first_row + 16·m.
  const int first_row = (blockIdx.y * kWarps + warp) * kTensorRowsPerWarp * M + lane / 4;
  const float scale_log2 = scale * kLog2e;

  start_tile_copy<D, kKeys>(keys, k, 0, n);
  start_tile_copy<D, kKeys>(values, v, 0, n);
  uint32_t q_frag[M][D / 16][4];
#pragma unroll
  for (int m = 0; m < M; ++m) load_row_fragments<D>(q_frag[m], q, first_row + 16 * m, pair_col, n);
  float o[M][D / 8][4] = {};
  OnlineSoftmaxRows softmax[M];

  for (int start = 0; start < n; start += kKeys) {
    wait_for_copies<1>();  // this tile's keys (its values may still be on their way)
    float s[M][kKeys / 8][4];
    multiply_by_tile_transposed<T, D, kKeys, M>(s, q_frag, keys, lane);
    __syncthreads();  // every warp is done with the keys
    start_tile_copy<D, kKeys>(keys, k, start + kKeys, n);
#pragma unroll
    for (int m = 0; m < M; ++m) softmax[m].template absorb<kKeys, D>(s[m], o[m], start, n, pair_col, scale_log2);
    wait_for_copies<1>();  // this tile's values (the next keys may still be on their way)
    accumulate_times_tile<T, D, kKeys, M>(o, s, values, lane);
    __syncthreads();  // every warp is done with the values
    start_tile_copy<D, kKeys>(values, v, start + kKeys, n);
  }
#pragma unroll
  for (int m = 0; m < M; ++m)
    softmax[m].template finish<T, D>(o[m], head_of(out, n, D), logsumexp + blockIdx.x * static_cast<size_t>(n), first_row + 16 * m, pair_col, n, lane);
}

// dq = scale · Σ_keys dS k with dS = P ∘ (dO vᵀ − δ), P recomputed from the forward pass's
// log-sum-exp. Grid: (batch·heads, tiles of 64 query rows). As in the forward pass, keys and
// values have a buffer each and each copy overlaps other work: the values are needed first
// (dO·Vᵀ) and last, so the next ones load during Q·Kᵀ, the softmax and dS·K; the next keys load
// during dO·Vᵀ.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) tensor_core_grad_query_kernel(const T* q_in, const T* k_in, const T* v_in, const T* grad_out_in,
                                                                           const float* logsumexp, const float* delta, T* grad_q, int n, float scale) {
  constexpr int kKeyBlocks = kTensorKeys / 8;
  __shared__ __align__(16) uint16_t keys[kTensorKeys * kTileStride<D>];
  __shared__ __align__(16) uint16_t values[kTensorKeys * kTileStride<D>];
  const uint16_t *q = head_of(q_in, n, D), *k = head_of(k_in, n, D), *v = head_of(v_in, n, D), *grad_out = head_of(grad_out_in, n, D);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pair_col = 2 * (lane % 4);
  const int row0 = blockIdx.y * kTensorRows + warp * kTensorRowsPerWarp + lane / 4, row1 = row0 + 8;
  const float scale_log2 = scale * kLog2e;
  const size_t lse_head = blockIdx.x * static_cast<size_t>(n);
  const float lse0 = row0 < n ? logsumexp[lse_head + row0] * kLog2e : 0.f, lse1 = row1 < n ? logsumexp[lse_head + row1] * kLog2e : 0.f;
  const float delta0 = row0 < n ? delta[lse_head + row0] : 0.f, delta1 = row1 < n ? delta[lse_head + row1] : 0.f;

  start_tile_copy<D, kTensorKeys>(values, v, 0, n);
  start_tile_copy<D, kTensorKeys>(keys, k, 0, n);
  uint32_t q_frag[D / 16][4], grad_out_frag[D / 16][4];
  load_row_fragments<D>(q_frag, q, row0, pair_col, n);
  load_row_fragments<D>(grad_out_frag, grad_out, row0, pair_col, n);
  float dq[D / 8][4] = {};
  for (int start = 0; start < n; start += kTensorKeys) {
    wait_for_copies<1>();  // this tile's values (its keys may still be on their way)
    float p[kKeyBlocks][4], dp[kKeyBlocks][4];
    multiply_by_tile_transposed<T, D, kTensorKeys>(dp, grad_out_frag, values, lane);
    wait_for_copies<0>();  // this tile's keys; and every warp is done with the values
    start_tile_copy<D, kTensorKeys>(values, v, start + kTensorKeys, n);
    multiply_by_tile_transposed<T, D, kTensorKeys>(p, q_frag, keys, lane);
#pragma unroll
    for (int j = 0; j < kKeyBlocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool valid = start + 8 * j + pair_col + (e & 1) < n;
        const float probability = valid ? exp2f(p[j][e] * scale_log2 - (e < 2 ? lse0 : lse1)) : 0.f;
        p[j][e] = probability * (dp[j][e] - (e < 2 ? delta0 : delta1));
      }
    accumulate_times_tile<T, D, kTensorKeys>(dq, p, keys, lane);
    __syncthreads();  // every warp is done with the keys
    start_tile_copy<D, kTensorKeys>(keys, k, start + kTensorKeys, n);
  }
  store_row_fragments<T, D>(head_of(grad_q, n, D), dq, scale, row0, pair_col, n);
}

// dv = Σ_queries Pᵀ dO and dk = scale · Σ_queries dSᵀ q for a tile of 64 key rows: the
// transposed blocks come straight out of K·Qᵀ and V·dOᵀ, so no atomics are needed and the
// gradients are deterministic. Grid: (batch·heads, tiles of 64 key rows). Queries and output
// gradients have a buffer each: the output gradients (with the rows' log-sum-exp and δ) are
// done with after Pᵀ·dO, so the next ones load during dSᵀ·Q; the next queries load during V·dOᵀ.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) tensor_core_grad_key_value_kernel(const T* q_in, const T* k_in, const T* v_in, const T* grad_out_in,
                                                                               const float* logsumexp, const float* delta, T* grad_k, T* grad_v, int n,
                                                                               float scale) {
  constexpr int R = kTensorGradQueries<D>, kQueryBlocks = R / 8;
  __shared__ __align__(16) uint16_t queries[R * kTileStride<D>];
  __shared__ __align__(16) uint16_t grad_outs[R * kTileStride<D>];
  __shared__ float lse[R], deltas[R];
  const uint16_t *q = head_of(q_in, n, D), *k = head_of(k_in, n, D), *v = head_of(v_in, n, D), *grad_out = head_of(grad_out_in, n, D);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pair_col = 2 * (lane % 4);
  const int key0 = blockIdx.y * kTensorRows + warp * kTensorRowsPerWarp + lane / 4;
  const float scale_log2 = scale * kLog2e;
  const size_t lse_head = blockIdx.x * static_cast<size_t>(n);

  const auto start_grad_out_copies = [&](int first) {
    start_row_value_copies<R>(lse, logsumexp + lse_head, first, n);
    start_row_value_copies<R>(deltas, delta + lse_head, first, n);
    start_tile_copy<D, R>(grad_outs, grad_out, first, n);
  };
  start_grad_out_copies(0);
  start_tile_copy<D, R>(queries, q, 0, n);
  uint32_t k_frag[D / 16][4], v_frag[D / 16][4];
  load_row_fragments<D>(k_frag, k, key0, pair_col, n);
  load_row_fragments<D>(v_frag, v, key0, pair_col, n);
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  for (int start = 0; start < n; start += R) {
    wait_for_copies<1>();  // this tile's output gradients, lse and δ (its queries may still be on their way)
    float p[kQueryBlocks][4], dp[kQueryBlocks][4];  // transposed: rows are keys, columns queries
    multiply_by_tile_transposed<T, D, R>(dp, v_frag, grad_outs, lane);
#pragma unroll
    for (int j = 0; j < kQueryBlocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[j][e] -= deltas[8 * j + pair_col + (e & 1)];
    wait_for_copies<0>();  // this tile's queries
    multiply_by_tile_transposed<T, D, R>(p, k_frag, queries, lane);
#pragma unroll
    for (int j = 0; j < kQueryBlocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int column = 8 * j + pair_col + (e & 1);
        p[j][e] = start + column < n ? exp2f(p[j][e] * scale_log2 - lse[column] * kLog2e) : 0.f;
      }
    accumulate_times_tile<T, D, R>(dv, p, grad_outs, lane);
    __syncthreads();  // every warp is done with the output gradients, lse and δ
    start_grad_out_copies(start + R);
#pragma unroll
    for (int j = 0; j < kQueryBlocks; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[j][e] *= dp[j][e];
    accumulate_times_tile<T, D, R>(dk, p, queries, lane);
    __syncthreads();  // every warp is done with the queries
    start_tile_copy<D, R>(queries, q, start + R, n);
  }
  store_row_fragments<T, D>(head_of(grad_k, n, D), dk, scale, key0, pair_col, n);
  store_row_fragments<T, D>(head_of(grad_v, n, D), dv, 1.f, key0, pair_col, n);
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

// The tensor-core kernels copy 16 bytes at a time. A view that starts off that boundary (rare:
// the caching allocator aligns every allocation) is copied to fresh memory rather than sent to
// the CUDA-core kernels, so that each dtype has one kernel family per GPU — the family that
// --attention auto's self-check has run.
at::Tensor with_aligned_data(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone(); }

// An output tensor shaped like `like`: uninitialised, or NaN throughout when checking.
at::Tensor output_like(const at::Tensor& like, const FusedAttentionOptions& options) {
  auto out = at::empty_like(like);
  return options.poison_outputs ? out.fill_(std::numeric_limits<float>::quiet_NaN()) : out;
}

// For inputs already checked: 16-bit data on sm_80 or later takes the tensor-core kernels.
bool takes_tensor_cores(const at::Tensor& q) {
  return q.scalar_type() != at::kFloat && at::cuda::getDeviceProperties(q.device().index())->major >= 8;
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

bool fused_attention_uses_tensor_cores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return fused_attention_unsupported(q, k, v).empty() && takes_tensor_cores(q);
}

bool fused_attention_stream_is_capturing(const at::Device& device) {
  const c10::cuda::CUDAGuard guard(device);
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

FusedAttentionForward fused_attention_forward(const at::Tensor& q_given, const at::Tensor& k_given, const at::Tensor& v_given,
                                              const FusedAttentionOptions& options) {
  check_supported(q_given, k_given, v_given);
  TORCH_CHECK(options.forward_rows_per_warp == 16 || options.forward_rows_per_warp == 32,
              "fused attention: forward_rows_per_warp must be 16 or 32 (got ", options.forward_rows_per_warp, ")");
  const auto q = with_aligned_data(q_given), k = with_aligned_data(k_given), v = with_aligned_data(v_given);
  const c10::cuda::CUDAGuard guard(q.device());
  const int heads = static_cast<int>(q.size(0) * q.size(1)), n = static_cast<int>(q.size(2));
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  auto out = output_like(q, options);
  auto logsumexp = output_like(at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat)), options);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const bool tensor_cores = takes_tensor_cores(q);
  dispatch(q, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim_tag)::value;
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        const auto launch = [&](auto blocks_per_warp) {
          constexpr int M = decltype(blocks_per_warp)::value;
          // Two blocks of rows per warp at head dim 128 fit the registers only with 32-key tiles.
          constexpr int kKeys = M == 2 && D == 128 ? 16 : kTensorKeys;
          tensor_core_forward_kernel<T, D, M, kKeys><<<dim3(heads, tiles(n, kTensorRows * M)), kThreads, 0, stream>>>(
              q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(), logsumexp.data_ptr<float>(), n, scale);
        };
        if (options.forward_rows_per_warp == 32) launch(std::integral_constant<int, 2>{});
        else launch(std::integral_constant<int, 1>{});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
    forward_kernel<T, D, kForwardRows><<<dim3(heads, tiles(n, kWarps * kForwardRows)), kThreads, 0, stream>>>(
        q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(), logsumexp.data_ptr<float>(), n, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, logsumexp};
}

FusedAttentionGradients fused_attention_backward(const at::Tensor& q_given, const at::Tensor& k_given, const at::Tensor& v_given, const at::Tensor& out,
                                                 const at::Tensor& logsumexp, const at::Tensor& grad_out_given, const FusedAttentionOptions& options) {
  check_supported(q_given, k_given, v_given);
  const auto reason = fused_attention_unsupported(out, grad_out_given, q_given);
  TORCH_CHECK(reason.empty(), "fused attention backward (out, grad_out): ", reason);
  TORCH_CHECK(logsumexp.scalar_type() == at::kFloat && logsumexp.is_contiguous() && logsumexp.device() == q_given.device() &&
                  logsumexp.sizes().equals(q_given.sizes().slice(0, 3)),
              "fused attention backward: logsumexp must be the forward pass's float32 [batch, heads, tokens] on q's device");
  const auto q = with_aligned_data(q_given), k = with_aligned_data(k_given), v = with_aligned_data(v_given);
  const auto grad_out = with_aligned_data(grad_out_given);
  const c10::cuda::CUDAGuard guard(q.device());
  const int heads = static_cast<int>(q.size(0) * q.size(1)), n = static_cast<int>(q.size(2));
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  // δ_i = do_i·o_i, the softmax's correction term, once per row.
  const auto delta = (grad_out.to(at::kFloat) * out.to(at::kFloat)).sum(-1).contiguous();
  auto dq = output_like(q, options), dk = output_like(k, options), dv = output_like(v, options);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const bool tensor_cores = takes_tensor_cores(q);
  dispatch(q, [&](auto type_tag, auto dim_tag) {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim_tag)::value;
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        const dim3 grid(heads, tiles(n, kTensorRows));
        tensor_core_grad_query_kernel<T, D><<<grid, kThreads, 0, stream>>>(q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), grad_out.data_ptr<T>(),
                                                                           logsumexp.data_ptr<float>(), delta.data_ptr<float>(), dq.data_ptr<T>(), n, scale);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        tensor_core_grad_key_value_kernel<T, D><<<grid, kThreads, 0, stream>>>(q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), grad_out.data_ptr<T>(),
                                                                               logsumexp.data_ptr<float>(), delta.data_ptr<float>(), dk.data_ptr<T>(),
                                                                               dv.data_ptr<T>(), n, scale);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
    }
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
