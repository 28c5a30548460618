// out[M, N] = x[M, K] @ w[N, K]^T (+ bias): f32 activations, weights bf16/f16/f32 as loaded, f32
// accumulation.
//
// Two kernels:
// - M <= 4 (decode): memory bound on the weights, so a warp owns one weight row and streams it
//   once with 16-byte loads (8 bf16/f16 or 4 f32 per lane), against all M activation rows
//   (they stay in L1/L2). Several loads are issued before any is used, so enough bytes are in
//   flight to approach the memory bandwidth.
// - M > 4: tiles of x and w staged in shared memory (w widened to f32 there), f32 FMAs. The
//   matrix units would need the activations narrowed, which the golden tolerance does not allow.
//   Up to 64 rows: a 64x64 tile per block, 4x4 outputs per thread. Beyond (prefill): a 128x128
//   tile, 8x8 outputs per thread (each operand loaded from shared memory feeds 8 FMAs), the next
//   K slice fetched into registers while the current one is multiplied, two shared buffers.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

// 16 bytes of weights widened to f32.
template <typename W>
struct Vec16 {
  static constexpr int kElems = 16 / sizeof(W);
  __device__ __forceinline__ static void widen(const uint4& raw, float* out) {
    const W* e = reinterpret_cast<const W*>(&raw);
#pragma unroll
    for (int i = 0; i < kElems; ++i) out[i] = to_f32(e[i]);
  }
};

// Weights are read once per step: bypass L1 and keep them from evicting the activations.
__device__ __forceinline__ uint4 load_stream(const uint4* p) { return __ldcs(p); }

constexpr int kGemvWarps = 8;  // output columns per block
// 16-byte loads in flight per lane: one weight row takes 16 (a 4096-wide bf16 row in one round);
// two rows streamed together (SwiGLU) take 8 each, within the register budget.
template <int R>
constexpr int kGemvUnroll = R == 1 ? 16 : 8;

// One round of the main loop: the loaded 16-byte chunks c + 32 u of each row, multiplied.
template <typename W, int M, int R, int U = kGemvUnroll<R>>
__device__ __forceinline__ void gemv_round(const float* __restrict__ x, int64_t K, int64_t c,
                                           const uint4 (&raw)[R][U], float (&acc)[R][M]) {
  constexpr int V = Vec16<W>::kElems;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t k0 = (c + 32 * u) * V;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float wf[V];
      Vec16<W>::widen(raw[r][u], wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4* xv = reinterpret_cast<const float4*>(x + m * K + k0);
#pragma unroll
        for (int q = 0; q < V / 4; ++q) {
          const float4 a = xv[q];
          acc[r][m] += a.x * wf[4 * q] + a.y * wf[4 * q + 1] + a.z * wf[4 * q + 2] + a.w * wf[4 * q + 3];
        }
      }
    }
  }
}

// acc[r][m] += dot(row r of w, activation row m) over this lane's share of K, from 16-byte chunk
// `c` on (lane, or later when the caller has done the first rounds). R weight rows are streamed
// together, so R * kGemvUnroll loads are in flight per lane.
template <typename W, int M, int R>
__device__ __forceinline__ void gemv_rows(const float* __restrict__ x, const W* const (&rows)[R], int64_t K,
                                          bool vectorized, int lane, float (&acc)[R][M], int64_t c) {
  int64_t k_done = 0;
  if (vectorized) {
    constexpr int V = Vec16<W>::kElems;
    const int64_t chunks = K / V;
    for (; c + 32 * (kGemvUnroll<R> - 1) < chunks; c += 32 * kGemvUnroll<R>) {
      uint4 raw[R][kGemvUnroll<R>];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int u = 0; u < kGemvUnroll<R>; ++u) raw[r][u] = load_stream(reinterpret_cast<const uint4*>(rows[r]) + c + 32 * u);
      gemv_round<W, M, R>(x, K, c, raw, acc);
    }
    for (; c < chunks; c += 32) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float wf[V];
        Vec16<W>::widen(load_stream(reinterpret_cast<const uint4*>(rows[r]) + c), wf);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const float4* xv = reinterpret_cast<const float4*>(x + m * K + c * V);
#pragma unroll
          for (int q = 0; q < V / 4; ++q) {
            const float4 a = xv[q];
            acc[r][m] += a.x * wf[4 * q] + a.y * wf[4 * q + 1] + a.z * wf[4 * q + 2] + a.w * wf[4 * q + 3];
          }
        }
      }
    }
    k_done = chunks * V;
  }
  for (int64_t k = k_done + lane; k < K; k += 32) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float wk = to_f32(rows[r][k]);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] += x[m * K + k] * wk;
    }
  }
}

// Rounds of the pipelined decode product: kGemvUnroll<R> / 2 16-byte loads per lane and row.
template <int R>
constexpr int kGemvStage = kGemvUnroll<R> / 2;

// Whether the pipelined loop takes a product: two rows streamed together (the SwiGLU gate/up
// product), 16-byte loads, and rows of whole rounds. Measured on an H200 (8B shapes, batch 1):
// gate/up 67.0 -> 58.8 us; with one row per warp, half-depth rounds lost more than continuity
// gained (down 30.5 -> 44.4 us, o 8.4 -> 11.8), so single rows keep the plain loop.
template <typename W, int R>
__host__ __device__ constexpr bool gemv_pipelined_fits(int64_t K, bool vectorized) {
  return R == 2 && vectorized && (K / Vec16<W>::kElems) % (32 * kGemvStage<R>) == 0;
}

// The warp's whole share of a decode product as one stream of rounds: its columns n = first +
// j * stride, each kGemvStage<R> 16-byte loads per lane and row per round over K. Round i + 1's
// loads are issued before round i is multiplied (two register buffers of half the plain loop's
// depth, so the same registers), so the warp's loads do not pause for the multiply, the
// reduction and store at the end of a column, or the start of the next. finish(n, acc) ends a
// column (acc holds the lane's partial sums).
template <typename W, int M, int R, typename Finish>
__device__ __forceinline__ void gemv_pipelined(const float* __restrict__ x, const W* __restrict__ w, int64_t cols,
                                               int64_t K, int64_t first, int64_t stride, int lane, Finish&& finish) {
  constexpr int V = Vec16<W>::kElems, U = kGemvStage<R>;
  const int rpr = static_cast<int>(K / V / (32 * U));  // rounds per column
  const int ncols = first < cols ? static_cast<int>((cols - first + stride - 1) / stride) : 0;
  const int total = ncols * rpr;
  if (total == 0) return;
  uint4 a[R][U], b[R][U];
  auto load = [&](uint4 (&buf)[R][U], int i) {
    const int j = i / rpr, r0 = i - j * rpr;
    const int64_t n = first + j * stride, c = static_cast<int64_t>(r0) * 32 * U + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint4* row = reinterpret_cast<const uint4*>(w + (r == 0 ? n : n + cols) * K) + c;
#pragma unroll
      for (int u = 0; u < U; ++u) buf[r][u] = load_stream(row + 32 * u);
    }
  };
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  auto step = [&](const uint4 (&buf)[R][U], int i) {
    const int j = i / rpr, r0 = i - j * rpr;
    gemv_round<W, M, R, U>(x, K, static_cast<int64_t>(r0) * 32 * U + lane, buf, acc);
    if (r0 == rpr - 1) {
      finish(first + j * stride, acc);
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
    }
  };
  load(a, 0);
  for (int i = 0; i < total; i += 2) {
    if (i + 1 < total) load(b, i + 1);
    step(a, i);
    if (i + 1 >= total) break;
    if (i + 2 < total) load(a, i + 2);
    step(b, i + 1);
  }
}

// The decode product (M <= kGemvMaxRows activation rows): memory bound on the weights, so a warp
// owns an output column at a time and streams its weight row once with 16-byte loads, against
// all M activation rows. The grid is at most as many blocks as fit on the GPU at once, each warp
// looping over an even share of the columns: a block's start-up is paid once, not once per 8
// columns, and no tail wave runs half empty.
//
// Folded in (Backend::fused_linear), each rounded as the unfused ops round:
// - norm_w: each block first writes the RMSNorm of each activation row into shared memory
//   (double sum of squares and the same products as rms_norm_kernel) and multiplies against
//   that. Measured against a separate norm kernel on the 8B shapes (H200): the 235 MB gate/up
//   product 66 us instead of 78, the 50 MB qkv product about the same;
// - mode kAccumulate: out += product (the residual add), one f32 addition;
// - mode kSiluMul: w = [2I, K]; the warp streams rows i and I + i together and writes
//   silu(gate) * up to column i of an [M, I] output.
template <typename W, int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32)
gemv_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps,
            const W* __restrict__ w, const float* __restrict__ bias, int64_t N, int64_t K, int mode, bool vectorized,
            bool pipelined, float* __restrict__ out) {
  extern __shared__ __align__(16) float xs[];
  const int lane = threadIdx.x & 31;
  const int64_t cols = R == 2 ? N / 2 : N;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  // Launched with PDL (pdl.cuh): x and out are touched only after pdl_wait(). (Prefetching the
  // warps' first weight rows into L2 before the wait gained nothing at 2 KB per row and cost 6%
  // of a batch-1 step at 8 KB, the down product's rows overflowing L2; H200, 8B shape. Each
  // warp prefetching its next column's row into L2 while it streams the current one: the qkv
  // product alone 19.8 -> 17.8 us, whole batch-1 steps 5.90 -> 6.31 ms; H100. Loading the first
  // round of weights into registers before pdl_wait: every product, 5.84 -> 5.94 ms, the down
  // product alone 41.8 -> 44.7 us; the SwiGLU product only, gate_up alone 81.7 -> 80.1 us and
  // whole steps unchanged: its blocks arrive only as the o product's leave. H100.)
  const HeldNormWeights held = hold_norm_weights(norm_w, K);  // constant: before the wait
  pdl_begin();
  const float* xin = x;
  if (norm_w) {
    stage_rms_norm<M>(x, norm_w, eps, K, xs, &held);
    __syncthreads();
    xin = xs;
  }
  // The column's sums (lane partials in acc) to the output, with the epilogue.
  auto finish = [&](int64_t n, const float (&acc)[R][M]) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s[R];
#pragma unroll
      for (int r = 0; r < R; ++r) s[r] = warp_sum(acc[r][m]);
      if (lane != 0) continue;
      if constexpr (R == 2)
        out[m * cols + n] = swiglu_product(s[0], s[1], bias, n, cols);
      else
        store_product(out + m * N + n, s[0], bias, n, mode == static_cast<int>(LinearMode::kAccumulate));
    }
  };
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kGemvWarps;
  if (pipelined) {
    gemv_pipelined<W, M, R>(xin, w, cols, K, first, stride, lane, finish);
    return;
  }
  // Whole warps take the same columns, so the shuffles below stay full.
  for (int64_t n = first; n < cols; n += stride) {
  const W* rows[R];
  rows[0] = w + n * K;
  if constexpr (R == 2) rows[1] = w + (n + cols) * K;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  gemv_rows<W, M, R>(xin, rows, K, vectorized, lane, acc, lane);
  finish(n, acc);
  }
}


template <typename W, int R>
void launch_gemv(const float* x, const float* norm_w, float eps, const W* w, const float* bias, int64_t M,
                 int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if constexpr (!std::is_same_v<W, float>) {
    const Elem type = std::is_same_v<W, __half> ? Elem::kF16 : Elem::kBF16;
    if (M == 1 && launch_bulk_gemv(x, norm_w, eps, w, type, bias, M, N, K, mode, out, stream)) return;
  }
  // 16-byte loads need every weight row, and every activation row, to start 16-byte aligned.
  const bool vectorized = (K * static_cast<int64_t>(sizeof(W))) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t cols = R == 2 ? N / 2 : N;
  const int threads = kGemvWarps * 32;
  // Only normalized activations are staged: a plain copy gained nothing on the 8B shapes' o and
  // qkv products and cost occupancy on the down product (57 KB of shared memory per block).
  const int64_t staged_bytes = norm_w ? M * K * static_cast<int64_t>(sizeof(float)) : 0;
  RH_CHECK(staged_bytes <= kGemvMaxStagedBytes, "launch_gemv: activations too large to stage");
  const size_t smem = static_cast<size_t>(staged_bytes);
  auto go = [&](auto kernel) {
    // The grid: what fits on the GPU at once for this shared-memory size (asked once per kernel
    // and size).
    static std::mutex mu;
    static std::map<std::pair<const void*, size_t>, int64_t> resident;
    int64_t fit = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      const void* key = reinterpret_cast<const void*>(kernel);
      auto it = resident.find({key, smem});
      if (it == resident.end()) {
        if (smem > 0) allow_staged_shared_memory(key);
        int per_sm = 0;
        RH_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
        it = resident.emplace(std::make_pair(key, smem), static_cast<int64_t>(std::max(per_sm, 1)) * sm_count()).first;
      }
      fit = it->second;
    }
    // Columns dealt evenly: every warp gets the same count (give or take one), so the last
    // columns do not run on a fraction of the GPU.
    const int64_t per_warp = (cols + fit * kGemvWarps - 1) / (fit * kGemvWarps);
    const int64_t warps = (cols + per_warp - 1) / per_warp;
    const unsigned grid = static_cast<unsigned>((warps + kGemvWarps - 1) / kGemvWarps);
    const bool pipelined = gemv_pipelined_fits<W, R>(K, vectorized);
    launch_pdl("gemv_kernel", kernel, dim3(grid), dim3(threads), smem, stream, x, norm_w, eps, w, bias, N, K,
               static_cast<int>(mode), vectorized, pipelined, out);
  };
  switch (M) {
    case 1: go(gemv_kernel<W, 1, R>); break;
    case 2: go(gemv_kernel<W, 2, R>); break;
    case 3: go(gemv_kernel<W, 3, R>); break;
    default: go(gemv_kernel<W, 4, R>); break;
  }
}

constexpr int kTile = 64, kSlice = 16, kTileThreads = 256;

template <typename W>
__global__ void __launch_bounds__(kTileThreads)
tiled_kernel(const float* __restrict__ x, const W* __restrict__ w, const float* __restrict__ bias,
             int64_t M, int64_t N, int64_t K, float* __restrict__ out) {
  // [k][row] layout: the inner loop reads 4 consecutive rows of one k as a float4. The +4 pad
  // keeps rows 16-byte aligned while spreading the transposing stores over more banks.
  __shared__ __align__(16) float xs[kSlice][kTile + 4];
  __shared__ __align__(16) float ws[kSlice][kTile + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
#pragma unroll
    for (int i = 0; i < kTile * kSlice / kTileThreads; ++i) {
      const int e = tid + i * kTileThreads, r = e / kSlice, kk = e % kSlice;
      const int64_t k = k0 + kk;
      xs[kk][r] = (m0 + r < M && k < K) ? x[(m0 + r) * K + k] : 0.0f;
      ws[kk][r] = (n0 + r < N && k < K) ? to_f32(w[(n0 + r) * K + k]) : 0.0f;
    }
    __syncthreads();
    tile_accumulate_4x4(xs, ws, ty, tx, acc);
    __syncthreads();
  }
  tile_store_4x4(acc, m0, n0, ty, tx, M, N, bias, out);
}


constexpr int kBig = 128, kBigSlice = 8, kBigThreads = 256;

// Four consecutive elements of a row as f32; `vec` means they are 16-byte (f32) or 8-byte
// (16-bit) aligned and all in range.
template <typename T>
__device__ __forceinline__ float4 load_four(const T* p, bool vec, int64_t valid) {
  if (vec) {
    if constexpr (sizeof(T) == 4) {
      return *reinterpret_cast<const float4*>(p);
    } else {
      const uint2 raw = *reinterpret_cast<const uint2*>(p);
      const T* e = reinterpret_cast<const T*>(&raw);
      return make_float4(to_f32(e[0]), to_f32(e[1]), to_f32(e[2]), to_f32(e[3]));
    }
  }
  return make_float4(valid > 0 ? to_f32(p[0]) : 0.0f, valid > 1 ? to_f32(p[1]) : 0.0f,
                     valid > 2 ? to_f32(p[2]) : 0.0f, valid > 3 ? to_f32(p[3]) : 0.0f);
}

template <typename W>
__global__ void __launch_bounds__(kBigThreads)
big_tiled_kernel(const float* __restrict__ x, const W* __restrict__ w, const float* __restrict__ bias,
                 int64_t M, int64_t N, int64_t K, bool aligned, float* __restrict__ out) {
  __shared__ __align__(16) float xs[2][kBigSlice][kBig];
  __shared__ __align__(16) float ws[2][kBigSlice][kBig];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBig, n0 = static_cast<int64_t>(blockIdx.x) * kBig;
  // Each thread fetches 4 consecutive k of one row of x and of w per slice.
  const int lr = tid / 2, lk = (tid % 2) * 4;
  const bool x_row = m0 + lr < M, w_row = n0 + lr < N;
  const float* xp = x + (m0 + lr) * K + lk;
  const W* wp = w + (n0 + lr) * K + lk;
  auto fetch = [&](int64_t k0, float4& xa, float4& wa) {
    const int64_t valid = K - (k0 + lk);
    const bool full = aligned && valid >= 4;
    xa = x_row ? load_four(xp + k0, full, valid) : make_float4(0, 0, 0, 0);
    wa = w_row ? load_four(wp + k0, full, valid) : make_float4(0, 0, 0, 0);
  };
  auto stash = [&](int buf, const float4& xa, const float4& wa) {
    xs[buf][lk][lr] = xa.x; xs[buf][lk + 1][lr] = xa.y; xs[buf][lk + 2][lr] = xa.z; xs[buf][lk + 3][lr] = xa.w;
    ws[buf][lk][lr] = wa.x; ws[buf][lk + 1][lr] = wa.y; ws[buf][lk + 2][lr] = wa.z; ws[buf][lk + 3][lr] = wa.w;
  };
  float acc[8][8] = {};
  float4 xa, wa;
  fetch(0, xa, wa);
  stash(0, xa, wa);
  __syncthreads();
  int buf = 0;
  for (int64_t k0 = 0; k0 < K; k0 += kBigSlice) {
    const bool more = k0 + kBigSlice < K;
    if (more) fetch(k0 + kBigSlice, xa, wa);  // in flight during the FMAs below
#pragma unroll
    for (int kk = 0; kk < kBigSlice; ++kk) {
      // Rows ty*4.. and 64+ty*4.., columns tx*4.. and 64+tx*4..: float4 reads without conflicts.
      const float4 a0 = *reinterpret_cast<const float4*>(&xs[buf][kk][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&xs[buf][kk][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&ws[buf][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&ws[buf][kk][64 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] += av[i] * bv[j];
    }
    if (more) stash(buf ^ 1, xa, wa);  // the other buffer: nobody reads it during this slice
    __syncthreads();
    buf ^= 1;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      if (n < N) out[m * N + n] = bias ? acc[i][j] + bias[n] : acc[i][j];
    }
  }
}

template <typename W>
void launch_typed(const float* x, const W* w, const float* bias, int64_t M, int64_t N, int64_t K,
                  float* out, cudaStream_t stream) {
  if (M <= kGemvMaxRows) {
    launch_gemv<W, 1>(x, nullptr, 0.0f, w, bias, M, N, K, LinearMode::kStore, out, stream);
    return;
  }
  if (M > kTile) {
    RH_CHECK((M + kBig - 1) / kBig < 65536, "linear: M = ", M, " exceeds the grid");
    const bool aligned = K % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(x) % 16 == 0;
    dim3 grid(static_cast<unsigned>((N + kBig - 1) / kBig), static_cast<unsigned>((M + kBig - 1) / kBig));
    big_tiled_kernel<W><<<grid, kBigThreads, 0, stream>>>(x, w, bias, M, N, K, aligned, out);
    RH_CUDA_LAUNCHED("big_tiled_kernel");
    return;
  }
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  tiled_kernel<W><<<grid, kTileThreads, 0, stream>>>(x, w, bias, M, N, K, out);
  RH_CUDA_LAUNCHED("tiled_kernel");
}

}  // namespace

int current_device() {
  int dev = 0;
  RH_CUDA(cudaGetDevice(&dev));
  return dev;
}

int per_device_value(const void* key, const std::function<int()>& compute) {
  static std::recursive_mutex mu;  // compute() may ask for other keys
  static std::map<std::pair<int, const void*>, int> known;
  std::lock_guard<std::recursive_mutex> lock(mu);
  const auto at = std::make_pair(current_device(), key);
  if (const auto it = known.find(at); it != known.end()) return it->second;
  const int v = compute();  // (not kept if it throws)
  known.emplace(at, v);
  return v;
}

void once_per_device(const void* key, const std::function<void()>& setup) {
  per_device_value(key, [&] {
    setup();
    return 0;
  });
}

void allow_shared_memory(const void* kernel, int bytes) {
  once_per_device(kernel, [&] { RH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)); });
}

void allow_staged_shared_memory(const void* kernel) {
  allow_shared_memory(kernel, static_cast<int>(kGemvMaxStagedBytes));
}

namespace {
std::atomic<int> g_smem_limit_override{0};
}  // namespace

int max_block_smem() {
  if (const int o = g_smem_limit_override.load()) return o;
  return device_block_smem();
}

int device_block_smem() { return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

int device_attribute(cudaDeviceAttr attr) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> known;  // (device, attribute) -> value
  int dev = 0;
  RH_CUDA(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find({dev, static_cast<int>(attr)});
  if (it == known.end()) {
    int v = 0;
    RH_CUDA(cudaDeviceGetAttribute(&v, attr, dev));
    it = known.emplace(std::make_pair(dev, static_cast<int>(attr)), v).first;
  }
  return it->second;
}

int sm_count() { return device_attribute(cudaDevAttrMultiProcessorCount); }

void set_max_block_smem_for_tests(int bytes) { g_smem_limit_override.store(bytes); }

bool hopper_switch_on(std::atomic<int>& state, const char* env_name) {
  int on = state.load();
  if (on < 0) {
    const char* env = std::getenv(env_name);
    on = env && std::string(env) == "0" ? 0 : 1;
    int expected = -1;
    state.compare_exchange_strong(expected, on);
    on = state.load();
  }
  return on != 0 && device_attribute(cudaDevAttrComputeCapabilityMajor) >= 9;
}

namespace {
std::atomic<int> g_pdl_switch{-1};
}  // namespace

bool pdl_enabled() { return hopper_switch_on(g_pdl_switch, "REDHARE_PDL"); }

void set_pdl_enabled(bool on) { g_pdl_switch.store(on ? 1 : 0); }

bool launch_fused_gemv(const float* x, const float* norm_w, float eps, const void* w, Elem w_type,
                       const float* bias, int64_t M, int64_t N, int64_t K, LinearMode mode, float* out,
                       cudaStream_t stream) {
  if (M < 1 || M > kGemvMaxRows || N == 0) return false;
  if (norm_w && M * K * static_cast<int64_t>(sizeof(float)) > kGemvMaxStagedBytes) return false;
  if (mode == LinearMode::kSiluMul && N % 2 != 0) return false;
  auto run = [&](auto* typed) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(typed)>>;
    if (mode == LinearMode::kSiluMul) launch_gemv<W, 2>(x, norm_w, eps, typed, bias, M, N, K, mode, out, stream);
    else launch_gemv<W, 1>(x, norm_w, eps, typed, bias, M, N, K, mode, out, stream);
  };
  switch (w_type) {
    case Elem::kF32: run(static_cast<const float*>(w)); break;
    case Elem::kF16: run(static_cast<const __half*>(w)); break;
    case Elem::kBF16: run(static_cast<const __nv_bfloat16*>(w)); break;
  }
  return true;
}

void launch_linear(const float* x, const void* w, Elem w_type, const float* bias, int64_t M,
                   int64_t N, int64_t K, float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  switch (w_type) {
    case Elem::kF32: launch_typed(x, static_cast<const float*>(w), bias, M, N, K, out, stream); break;
    case Elem::kF16: launch_typed(x, static_cast<const __half*>(w), bias, M, N, K, out, stream); break;
    case Elem::kBF16: launch_typed(x, static_cast<const __nv_bfloat16*>(w), bias, M, N, K, out, stream); break;
  }
}

}  // namespace redhare::cuda
