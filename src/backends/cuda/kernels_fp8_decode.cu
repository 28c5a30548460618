// The W8A16 decode product on FP8 (kF8B128) weights: 1 to kFp8DecodeMaxRows activation rows,
// tensor-core mode (launch_fp8_decode). A decode product reads each weight byte once and does
// almost no arithmetic per byte: the aim is the HBM read bandwidth. (One row on block-scaled
// weights goes to the bulk-copy kernel first on sm_90+, kernels_gemv_bulk.cu, where its width is
// compiled.)
//
// Numerics are those of the W8A16 tiles (kernels_fp8_mma.cu's opening comment): the activations
// (RMS-normalized when the fused_linear asks) rounded to bf16 and held exactly as f16 times a
// per-row power of two, the e4m3 weights exact, one f32 tensor-core fragment per 128-value block
// multiplied by its block scale into the running f32 sum.
//
// mma.sync m16n8k16 with the WEIGHTS as A (16 weight rows: a tile) and the activations as B (8
// columns, of which the first M are activation rows; the others are never read back). Lane (g, t)
// holds weight rows g and g + 8 of the tile: per FP8 block two 16-byte loads of each row, value
// bytes 16t and 64 + 16t, which make the A fragments of four k16 steps each; its B fragments are
// activation row g's values at the same k (two 16-byte shared loads from the staged row). The dot
// product does not depend on the order of k, so the fragments' k slots are assigned such that
// lane t's slots (2t, 2t + 1) and (2t + 8, 2t + 9) of step j hold its chunk's k 4j..4j+3, the same
// map for A and B. The thread then holds the block's sums of weight rows g, g + 8 with activation
// rows 2t, 2t + 1 and scales them by its own rows' block scales. In SiLU mode a tile is 8 gate
// rows and their 8 up rows, so the two halves of an output meet in one reducer thread. Weight
// conversion: sm_89+ the paired hardware conversion (e4m3x2 -> f16x2); the sm_80 build bit moves
// (e4m3x4_to_f16_scaled, pairing bytes (0, 2) and (1, 3), the staged activations permuted alike).
//
// Work split. A block (16 warps, one per SM) takes whole tiles one after another; all its warps
// work on the same tile, warp w on rounds w, w + 16, ... (a round: two FP8 blocks of the 16 rows),
// so at any time a block's loads cover one contiguous stretch of each of 16 rows: at K = 4096 its
// next two rounds per warp are the whole tile, 16 rows x 4 KB (and their scales). At a tile's end
// the warps' sums meet in shared memory (two buffers) behind one barrier and are added in warp order
// (deterministic); a thread per output applies the row factor, bias, residual add or SiLU, its
// bias and residual loaded when the tile began. Each warp keeps two rounds of loads in registers,
// the next issued as soon as one is used, so they stay in flight across the barrier. The first
// two rounds are loaded before pdl_wait (weights are constant); then each block stages the
// activations in shared memory (RMS norm when asked, bf16 rounding, the row factor, f16), reading
// x from L2.
//
// Measured on an H100 80GB HBM3 (2 GiB read probe 3080-3096 GB/s), Llama-3.1-8B shapes, against
// the kernel it replaced (fp8_decode_mma_kernel, 8 weight rows per warp as the mma's B, a
// barrier per round; binaries of acb0b30), same lease:
// - bench_fp8_decode (each launch reads another copy of the weights; graph replay; us, share of
//   the read bandwidth). M = 1: qkv with norm 19.6 (47%) -> 16.7 (55%), o + residual 13.9 (44%) ->
//   11.6 (53%), gate_up with norm and SiLU 64.0 (67%) -> 52.5 (82%), down + residual 34.0 (63%)
//   -> 29.3 (73%). M = 2: 21.3 / 14.8 / 65.8 / 35.4 -> 18.0 / 12.1 / 57.2 / 33.4. M = 3: 22.6 /
//   15.6 / 65.1 / 36.3 -> 19.1 / 12.9 / 58.3 / 34.8. M = 4: 24.2 / 16.5 / 67.4 / 37.7 -> 20.2 /
//   13.5 / 58.5 / 36.0. (bench_cuda's table, one weight matrix repeated, M = 1: 15.1 / 9.9 / 49.7
//   / 25.5 us, 61 / 62 / 86 / 84%.)
// - bench_cuda decode steps (--dummy-dtype f8_e4m3_b128, graphs): batch 1 / 2 / 4 190.0 / 358.1 /
//   643.3 -> 217.5 / 394.1 / 732.3 tok/s (5.263 -> 4.599 ms at batch 1; 55.5 -> 63.7% of the bound).
// The aim of 85% at M = 1 is met by none in bench_fp8_decode: on the small products (9.2 and 6.1
// us of transfer) what remains is fixed cost (the launch gap, staging, the first loads' latency,
// the last tile's reduction); gate_up and down lose 10-25% in steady streaming.
// Tried on the way (same H100, bench_fp8_decode, M = 1 unless said; earlier versions):
// - Warps on contiguous k ranges of consecutive tiles, no barrier in the loop: gate_up 57.3 us
//   (75%). Each warp's loads were 288-byte pieces of 16 rows spread over the matrix; with all
//   warps of a block on one tile, 51.1 us.
// - One block of 8 warps per SM (another lease): about as fast at M = 1 (16.1 / 11.3 / 51.1 / 29.7
//   us) but from M = 2 on 25% slower (gate_up 69 us, slower than the old kernel); 16 warps per SM
//   (this kernel, or two blocks of 8) keep M = 2..4 near M = 1.
// - Launched with PDL (launch_pdl; that 8-warp version, one lease): the products alone faster
//   (14.0 / 9.2 / 48.8 / 27.0 us), whole steps slower: batch 1 4.63 -> 5.89 ms. Tiles taken from
//   an atomic counter (in case the blocks of an early-launched grid land unevenly on the SMs):
//   5.92 ms; that and pdl_trigger after the main loop: 5.02 ms; that and no weight loads before
//   pdl_wait: 6.60 ms. Cause not established. This 16-warp kernel with PDL (same H100, whole
//   batch-1 steps): 4.02 -> 3.86 ms, and 3.73 once the attention kernel before the o product
//   stopped letting it in early (tc_decode_kernel); batch 8 unchanged. Hence launch_pdl.
// - A 256-byte L2 prefetch size on the weight loads: no change; the bit moves in place of the
//   hardware conversion on sm_90: 1.5-3.5% slower (first version).
//
#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/fp8_device.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

constexpr int kTileRows = 16;      // weight rows per tile: the mma's m16
constexpr int kRound = 2;          // FP8 blocks per warp and round of loads
constexpr int kWarps = 16, kThreads = kWarps * 32;
constexpr int kStaticSmem = 1024;  // the kernel's own shared arrays (reductions, row factors), at most

// The weight conversion, chosen per compiled architecture (the staged activations' order follows
// it): sm_89+ the paired hardware e4m3 -> f16 conversion, earlier the bit moves below.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
constexpr bool kIntCvt = false;
#else
constexpr bool kIntCvt = true;
#endif

// Four e4m3 bytes (b0..b3 of `w`) as f16 pairs (b0, b2) and (b1, b3), each value times 2^-8,
// exactly: bits 6..0 of a byte moved to f16 bits 13..7 and its sign to bit 15. Three integer
// operations per pair, on any GPU.
__device__ __forceinline__ void e4m3x4_to_f16_scaled(uint32_t w, uint32_t& lo, uint32_t& hi) {
  constexpr uint32_t kMag = 0x3F803F80u;
  const uint32_t s = w & 0x80808080u;
  lo = ((w << 7) & kMag) | ((s << 8) & ~kMag);
  hi = ((w >> 1) & kMag) | (s & ~kMag);
}

// Reduces v[m] over the block in a fixed order; every thread gets the results.
template <int M, class T, class Op>
__device__ __forceinline__ void block_reduce(T (&v)[M], T (&scratch)[kWarps][M], Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[m] = op(v[m], __shfl_xor_sync(0xffffffffu, v[m], o));
    if (lane == 0) scratch[warp][m] = v[m];
  }
  __syncthreads();
#pragma unroll
  for (int m = 0; m < M; ++m) {
    T r = scratch[0][m];
    for (int i = 1; i < kWarps; ++i) r = op(r, scratch[i][m]);
    v[m] = r;
  }
}

// The staged activations: row m at a + m * a_stride as f16 (in k order, or with each group of
// four permuted (0, 2, 1, 3) for kIntCvt), rs[m] the row factor times 2^8 for kIntCvt (its
// weights are scaled by 2^-8). bf16 values are written first and turned into f16 in place once
// the row's largest is known. x is read in batches of kStageBatch float4 per thread and row,
// all loads of a batch issued before the first is used (one at a time, the L2 latency of each
// would add up: 14 per thread and row at K = 14336), as many as fit beside the two rounds of
// weights in flight without spilling.
template <int M>
constexpr int kStageBatch = M == 1 ? 4 : M == 2 ? 2 : 1;

template <int M>
__device__ __forceinline__ void stage_activations(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                  float eps, int64_t K, uint8_t* a, int64_t a_stride, float* rs) {
  __shared__ double ssp[kWarps][M];
  __shared__ float mxp[kWarps][M];
  constexpr int B = kStageBatch<M>;
  const int64_t n4 = K / 4;
  // f[m][i] = x[m, 4j..4j+3] for j = j0 + i * kThreads (zeros past the end).
  const auto load_batch = [&](int64_t j0, float4 (&f)[M][B]) {
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int i = 0; i < B; ++i) {
        const int64_t j = j0 + static_cast<int64_t>(i) * kThreads;
        f[m][i] = j < n4 ? reinterpret_cast<const float4*>(x + m * K)[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
  };
  // fn(m, j, f[m][i]) for the batch f that load_batch(j0, f) loads, j = j0 + i * kThreads < n4.
  const auto visit = [&](int64_t j0, const float4 (&f)[M][B], auto&& fn) {
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int i = 0; i < B; ++i) {
        const int64_t j = j0 + static_cast<int64_t>(i) * kThreads;
        if (j >= n4) break;
        fn(m, j, f[m][i]);
      }
  };
  // fn(m, j, x[m, 4j..4j+3]) for every row m and j < n4, one batch of loads issued before any use.
  const auto each_loaded = [&](auto&& fn) {
    for (int64_t j0 = threadIdx.x; j0 < n4; j0 += B * kThreads) {
      float4 f[M][B];
      load_batch(j0, f);
      visit(j0, f, fn);
    }
  };
  // Rows of at most one batch per thread (K <= 4 * B * kThreads) are read once and kept in
  // registers for both passes (up to two rows: with more the registers spill); the others are
  // read again for the second.
  const bool one_batch = n4 <= static_cast<int64_t>(B) * kThreads;
  float4 held[M][B];
  if constexpr (M <= 2)
    if (one_batch) load_batch(threadIdx.x, held);
  const auto each = [&](auto&& fn) {
    if constexpr (M <= 2) {
      if (one_batch) {
        visit(threadIdx.x, held, fn);
        return;
      }
    }
    each_loaded(fn);
  };
  float inv[M];
#pragma unroll
  for (int m = 0; m < M; ++m) inv[m] = 1.0f;
  if (norm_w) {
    double ss[M];
#pragma unroll
    for (int m = 0; m < M; ++m) ss[m] = 0;
    each([&](int m, int64_t, const float4& f) {
      ss[m] += static_cast<double>(f.x) * f.x;
      ss[m] += static_cast<double>(f.y) * f.y;
      ss[m] += static_cast<double>(f.z) * f.z;
      ss[m] += static_cast<double>(f.w) * f.w;
    });
    block_reduce<M>(ss, ssp, [](double p, double q) { return p + q; });
#pragma unroll
    for (int m = 0; m < M; ++m) inv[m] = rms_inverse(ss[m], K, eps);
  }
  float mx[M];
#pragma unroll
  for (int m = 0; m < M; ++m) mx[m] = 0.0f;
  each([&](int m, int64_t j, const float4& f) {
    const float v0 = staged_value(f.x, norm_w, 4 * j, inv[m]);
    const float v1 = staged_value(f.y, norm_w, 4 * j + 1, inv[m]);
    const float v2 = staged_value(f.z, norm_w, 4 * j + 2, inv[m]);
    const float v3 = staged_value(f.w, norm_w, 4 * j + 3, inv[m]);
    mx[m] = fmaxf(mx[m], fmaxf(fmaxf(fabsf(v0), fabsf(v1)), fmaxf(fabsf(v2), fabsf(v3))));
    // bf16 values: the high halves of their f32 bits.
    reinterpret_cast<uint2*>(a + m * a_stride)[j] =
        make_uint2(__byte_perm(__float_as_uint(v0), __float_as_uint(v1), 0x7632),
                   __byte_perm(__float_as_uint(v2), __float_as_uint(v3), 0x7632));
  });
  block_reduce<M>(mx, mxp, [](float p, float q) { return fmaxf(p, q); });
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int e = row_exponent(mx[m]);
    const float factor = __int_as_float((127 - e) << 23);
    uint2* dst = reinterpret_cast<uint2*>(a + m * a_stride);
    for (int64_t j = threadIdx.x; j < n4; j += kThreads) {
      const uint2 b = dst[j];
      const auto h = [&](uint32_t bits) {  // a bf16 (high half of `bits`) times factor, as f16: exact
        return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(__uint_as_float(bits & 0xFFFF0000u) * factor)));
      };
      const uint32_t h0 = h(b.x << 16), h1 = h(b.x), h2 = h(b.y << 16), h3 = h(b.y);
      dst[j] = kIntCvt ? make_uint2(h0 | (h2 << 16), h1 | (h3 << 16)) : make_uint2(h0 | (h1 << 16), h2 | (h3 << 16));
    }
    if (threadIdx.x == 0) rs[m] = __int_as_float((127 + e + (kIntCvt ? 8 : 0)) << 23);
  }
}

// One round of a lane's loads: kRound FP8 blocks of weight rows g (v[u][0..1]) and g + 8
// (v[u][2..3]), and the two rows' block scales.
struct Round {
  uint4 v[kRound][4];
  float s[kRound][2];
};

// x [M, K] f32 (16-byte aligned), w [N, K] FP8 in the device layout, `tiles` tiles of 16 weight
// rows. Block b takes tiles b, b + grid, b + 2 grid, ... one after another; warp w takes rounds
// w, w + kWarps, ... of each (round j: FP8 blocks j * kRound ..).
template <int M>
__global__ void __launch_bounds__(kThreads, 1)
fp8_decode_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps,
                  const Fp8Rows w, const float* __restrict__ bias, int64_t N, int64_t K, int mode, int tiles,
                  float* __restrict__ out) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float rs[M];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int KB = static_cast<int>(K / kBK);
  const int64_t a_stride = 2 * K + 16, half = N / 2;
  const bool silu = mode == 2;
  const int rpt = (KB + kRound - 1) / kRound;                          // rounds per tile
  const int nw = warp < rpt ? (rpt - warp + kWarps - 1) / kWarps : 0;  // this warp's rounds per tile
  const int wmax = rpt < kWarps ? rpt : kWarps;                        // warps with rounds
  const int grid = static_cast<int>(gridDim.x);
  // Position p (the block's p-th tile) is tile b + p * grid.
  const auto tile_at = [&](int p) { return static_cast<int>(blockIdx.x) + p * grid; };
  // The warps' partial sums of the tile in hand and the one before: [2][kWarps][16][M].
  float* part = reinterpret_cast<float*>(smem + M * a_stride);

  const auto row_of = [&](int64_t tile, int r) {
    return silu ? (r < 8 ? std::min(tile * 8 + r, half - 1) : half + std::min(tile * 8 + r - 8, half - 1))
                : std::min(tile * kTileRows + r, N - 1);  // rows past the end: read, never written
  };
  // Load position: step ls (round warp + ls * kWarps) of position lp.
  int lp = 0, ls = 0;
  const auto load_round = [&](Round& b) {
    const int tile = tile_at(lp);
    if (tile < tiles) {
      const int kb0 = (warp + ls * kWarps) * kRound;
      const int64_t na = row_of(tile, g), nb = row_of(tile, g + 8);
      const uint8_t* pa = w.row(na) + static_cast<int64_t>(kb0) * kBK;
      const uint8_t* pb = w.row(nb) + static_cast<int64_t>(kb0) * kBK;
#pragma unroll
      for (int u = 0; u < kRound; ++u) {
        if (kb0 + u < KB) {
          const uint8_t* ba = pa + u * kBK;
          const uint8_t* bb = pb + u * kBK;
          b.v[u][0] = __ldcs(reinterpret_cast<const uint4*>(ba + 16 * t));
          b.v[u][1] = __ldcs(reinterpret_cast<const uint4*>(ba + 64 + 16 * t));
          b.v[u][2] = __ldcs(reinterpret_cast<const uint4*>(bb + 16 * t));
          b.v[u][3] = __ldcs(reinterpret_cast<const uint4*>(bb + 64 + 16 * t));
          b.s[u][0] = w.scale(na, kb0 + u);
          b.s[u][1] = w.scale(nb, kb0 + u);
        }
      }
    }
    if (++ls == nw) ls = 0, ++lp;
  };

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const uint8_t* arow = smem + std::min(g, M - 1) * a_stride + 32 * t;
  // Compute position: step cs of position cp.
  int cp = 0, cs = 0;
  const auto compute_round = [&](const Round& b) {
    const int kb0 = (warp + cs * kWarps) * kRound;
#pragma unroll
    for (int u = 0; u < kRound; ++u) {
      const int kb = kb0 + u;
      if (kb >= KB) break;
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const uint8_t* ap = arow + static_cast<int64_t>(kb) * 2 * kBK + 128 * s;
        const uint4 a0 = *reinterpret_cast<const uint4*>(ap), a1 = *reinterpret_cast<const uint4*>(ap + 16);
        const uint32_t av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const uint4 qg = b.v[u][s], qh = b.v[u][2 + s];
        const uint32_t wg[4] = {qg.x, qg.y, qg.z, qg.w}, wh[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          uint32_t g0, g1, h0, h1;  // rows g, g + 8: slots (2t, 2t + 1), (2t + 8, 2t + 9)
          if constexpr (kIntCvt) {
            e4m3x4_to_f16_scaled(wg[j], g0, g1);
            e4m3x4_to_f16_scaled(wh[j], h0, h1);
          } else {
            g0 = e4m3x2_to_f16x2(wg[j]);
            g1 = e4m3x2_to_f16x2(wg[j] >> 16);
            h0 = e4m3x2_to_f16x2(wh[j]);
            h1 = e4m3x2_to_f16x2(wh[j] >> 16);
          }
          mma_f16(c, g0, h0, g1, h1, av[2 * j], av[2 * j + 1]);
        }
      }
      acc[0] = fmaf(c[0], b.s[u][0], acc[0]);
      acc[1] = fmaf(c[1], b.s[u][0], acc[1]);
      acc[2] = fmaf(c[2], b.s[u][1], acc[2]);
      acc[3] = fmaf(c[3], b.s[u][1], acc[3]);
    }
  };

  // A tile's outputs are finished by reducer threads, item (r, m) = lane * kWarps + warp: output
  // row r (SiLU: gate row r and up row r + 8) and activation row m. Each loads what it adds (bias,
  // and in mode 1 the residual) when the tile starts, so the loads wait under the tile's rounds.
  const int outs = silu ? kTileRows / 2 : kTileRows, item = lane * kWarps + warp;
  const bool reducer = item < outs * M;
  const int ir = item / M, im = item % M;
  float pre_out = 0.0f, pre_b0 = 0.0f, pre_b1 = 0.0f;
  const auto prefetch = [&](int tile) {
    if (!reducer || tile >= tiles) return;
    if (silu) {
      const int64_t o = static_cast<int64_t>(tile) * (kTileRows / 2) + ir;
      if (bias && o < half) pre_b0 = bias[o], pre_b1 = bias[half + o];
    } else {
      const int64_t n = static_cast<int64_t>(tile) * kTileRows + ir;
      if (n < N) {
        if (bias) pre_b0 = bias[n];
        if (mode == 1) pre_out = out[im * N + n];
      }
    }
  };
  // End of position cp: this warp's sums to shared memory, then (after the barrier) the reducers
  // add the warps' sums in warp order (deterministic) and write the outputs.
  const auto end_tile = [&]() {
    float* p = part + ((cp & 1) * kWarps + warp) * kTileRows * M;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int m = 2 * t + e;
      if (m >= M) break;
      p[g * M + m] = acc[e];
      p[(g + 8) * M + m] = acc[2 + e];
    }
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    __syncthreads();  // also: the sums of position cp - 2 (same buffer) were read before the last one
    if (reducer) {
      const int tile = tile_at(cp);
      const float* q = part + (cp & 1) * kWarps * kTileRows * M + im;
      float v0 = 0.0f, v1 = 0.0f;
      for (int ww = 0; ww < wmax; ++ww) {
        v0 += q[(ww * kTileRows + ir) * M];
        if (silu) v1 += q[(ww * kTileRows + ir + 8) * M];
      }
      v0 *= rs[im];  // a power of two: exact
      v1 *= rs[im];
      if (silu) {
        const int64_t o = static_cast<int64_t>(tile) * (kTileRows / 2) + ir;
        if (o < half) out[im * half + o] = silu_times(bias ? v0 + pre_b0 : v0, bias ? v1 + pre_b1 : v1);
      } else {
        const int64_t n = static_cast<int64_t>(tile) * kTileRows + ir;
        if (n < N) {
          if (bias) v0 += pre_b0;
          out[im * N + n] = mode == 1 ? __fadd_rn(pre_out, v0) : v0;
        }
      }
    }
    ++cp;
    prefetch(tile_at(cp));
  };

  // The first two rounds' weights before pdl_wait (weights are constant), then the activations.
  Round ra, rb;
  if (nw > 0) {
    load_round(ra);
    load_round(rb);
  }
  // (Tried: the norm weights this thread scales by prefetched into L1 here, as the bf16 GEMV holds
  // them in registers, for which this kernel has none to spare: batch-1 steps unchanged, H100.)
  pdl_begin();
  stage_activations<M>(x, norm_w, eps, K, smem, a_stride, rs);
  prefetch(tile_at(0));
  __syncthreads();
  if (nw == 0) {
    while (tile_at(cp) < tiles) end_tile();  // warps without rounds (K < 2 * kRound * kWarps) still take part
    return;
  }
  // Two rounds in registers: a round's buffer is loaded again as soon as it is used, so a warp's
  // next two rounds (across a tile's end and its barrier too) are in flight while it computes.
  while (tile_at(cp) < tiles) {
    compute_round(ra);
    load_round(ra);
    if (++cs == nw) cs = 0, end_tile();
    if (tile_at(cp) >= tiles) break;
    compute_round(rb);
    load_round(rb);
    if (++cs == nw) cs = 0, end_tile();
  }
}

using Fp8DecodeKernel = void (*)(const float*, const float*, float, Fp8Rows, const float*, int64_t, int64_t, int, int,
                                 float*);

Fp8DecodeKernel kernel_for(int64_t M) {
  switch (M) {
    case 1: return fp8_decode_kernel<1>;
    case 2: return fp8_decode_kernel<2>;
    case 3: return fp8_decode_kernel<3>;
    default: return fp8_decode_kernel<4>;
  }
}

// Whether an SM holds a block of `kernel` with `smem` bytes of shared memory (asked once per kernel
// and size); the kernel is opted in to the device's shared memory on first use.
bool fits(Fp8DecodeKernel kernel, int64_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int64_t>, bool> cache;  // per device: attributes are
  std::lock_guard<std::mutex> lock(mu);
  const void* key = reinterpret_cast<const void*>(kernel);
  const int dev = current_device();
  auto it = cache.find({dev, key, smem});
  if (it == cache.end()) {
    cudaFuncAttributes attr{};
    RH_CUDA(cudaFuncGetAttributes(&attr, key));
    RH_CUDA(cudaFuncSetAttribute(key, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 device_block_smem() - static_cast<int>(attr.sharedSizeBytes)));
    int n = 0;
    RH_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, static_cast<size_t>(smem)));
    it = cache.emplace(std::make_tuple(dev, key, smem), n > 0).first;
  }
  return it->second;
}

}  // namespace

bool launch_fp8_decode(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                       int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (M < 1 || M > kFp8DecodeMaxRows || N == 0 || K <= 0 || K % kBK != 0) return false;
  if (mode == LinearMode::kSiluMul && N % 2 != 0) return false;
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  // The staged activations (f16 rows padded by 16 bytes: rows g and g + 1 on other banks) and the
  // warps' partial sums of two tiles.
  const int64_t smem = M * (2 * K + 16) + 2 * kWarps * kTileRows * M * static_cast<int64_t>(sizeof(float));
  if (smem + kStaticSmem > max_block_smem()) return false;
  const int64_t tiles = mode == LinearMode::kSiluMul ? (N / 2 + 7) / 8 : (N + kTileRows - 1) / kTileRows;
  RH_CHECK(tiles < (int64_t{1} << 30), "FP8 decode product: N = ", N, " is too large");
  const Fp8DecodeKernel kernel = kernel_for(M);
  if (!fits(kernel, smem)) return false;
  const int64_t grid = std::min<int64_t>(tiles, sm_count());
  launch_pdl("fp8_decode_kernel", kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), static_cast<size_t>(smem),
             stream, x, norm_w, eps, Fp8Rows(w, N, K), bias, N, K, static_cast<int>(mode), static_cast<int>(tiles),
             out);
  return true;
}

}  // namespace redhare::cuda
