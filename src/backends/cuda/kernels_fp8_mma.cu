// The tensor-core products on FP8 (kF8B128) weights, the weights (device layout, fp8_device.cuh)
// read once from memory as e4m3 bytes: W8A16 on mma.sync m16n8k16 (f16 activations) for 5 to
// kFp8WidenRows - 1 activation rows, and the activations of the W8A8 product (end of this comment).
// 1 to 4 rows (decode) take the W8A16 decode kernel of kernels_fp8_decode.cu, same numerics.
//
// Numerics are those of the bf16 tensor-core mode's activations times the exact weights:
// - activations: staged first (fp8_mma_stage_kernel), each f32 row RMS-normalized when the
//   fused_linear asks for it and rounded to bf16, as the bf16 tensor-core mode rounds them. The
//   staged copy is f16, scaled per row by a power of two 2^-e chosen so the row's largest value
//   lands in [2^15, 2^16): a bf16 value (8 significant bits) within 2^-29 of its row's largest is
//   then an f16 exactly, and 2^e is applied to the row's sums in the epilogue (exact). Only values
//   below that (whose products are under 2^-29 of the largest) lose low bits. f16 rather than bf16
//   because e4m3 becomes f16 in one instruction (sm_89+) and bf16 only through five: with bf16
//   operands the conversions bounded the kernel (Llama-3.1-8B decode on an H200: 1220 / 4048 tok/s
//   at batch 8 / 64 against 1295 / 4366 with f16).
// - weights: an e4m3 pair becomes two f16 exactly in registers, so the mma sees the unscaled e4m3
//   values. Each 128-wide k-tile (one FP8 block per weight row) accumulates into its own f32
//   fragment, which is then multiplied by its row's block scale and added to the running sum in
//   one fma: no weight is ever rounded; the rounding is in the bf16 activations, the tensor cores'
//   f32 accumulation and one rounding per block (partial * scale + sum).
// The product kernel streams both operands into shared memory with cp.async (a ring of kStages
// k-tiles, each carrying one block scale per weight row) and builds its mma fragments there. The
// dot product does not depend on the order of k, so the k16 fragments use a permuted one in which
// lane t's values are 8 consecutive k (8t..8t+7 of each 32): one 16-byte shared load per
// activation row and one 8-byte load per weight row feed two mma, in place of ldmatrix; row
// strides are padded so those loads meet no bank conflicts.
// Output columns are "tile columns": a weight row each, except for the SiLU mode, whose tile column
// 2i is gate row i and 2i + 1 up row I + i, so one thread holds both halves of an output and the
// epilogue writes silu(gate) * up straight from registers. When the tiles alone would not fill the
// GPU, K is split over blockIdx.z: each split writes f32 partial sums, and a second kernel adds
// them in split order (deterministic) and applies the epilogue (bias, store / add / SiLU).
//
// W8A8 (infer.raise_lower_bit_float_to) runs on cuBLASLt's block-scaled FP8 product (Hopper);
// fp8_quantize_act_kernel, at the end of this file, quantizes its activations: per row and 128-value
// block, scale = amax / 448 and each value / scale rounded to e4m3 (nearest even, saturating).
// (An mma.sync m16n8k32 e4m3 kernel did W8A8 here before; on an H200 it measured slower than
// W8A16 at every size, batch 256: 5655 against 6324 tok/s, prefill 4096: 297 against 143 ms, and
// the weights' device layout, made for cuBLASLt, replaced it.)
#include <algorithm>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/fp8_device.cuh"
#include "backends/cuda/kernels.h"

namespace redhare::cuda {
namespace {

constexpr int kAStride = 2 * kBK + 64;  // bytes per staged activation row (320: rows g, g + 1 on other banks)
constexpr int kBStride = kBK + 32;      // bytes per staged weight row (160: four rows span all banks)

// MT m16 tiles per warp along M, WM x WN warps, each warp 32 tile columns (four n8 tiles).
template <int MT, int WM, int WN, int S>
struct Fp8MmaConfig {
  static constexpr int kMT = MT, kNT = 4, kWN = WN, kStages = S;
  static constexpr int kBM = WM * MT * 16, kBN = WN * 32, kThreads = WM * WN * 32;
  static constexpr int kABytes = kBM * kAStride, kBBytes = kBN * kBStride, kSBytes = kBN * 4;
  static constexpr int kStageBytes = kABytes + kBBytes + kSBytes;
  static constexpr int kSmem = S * kStageBytes;
};
// Tile shapes by M, chosen by measuring Llama-3.1-8B decode steps on an H200 (bench_cuda): at
// batch 8 the 16-row tile (1295 tok/s; the 64 x 256 one: 992), at 64 the 64 x 256 one (4502;
// 32 x 128: 4366); 17 to 32 rows take the 32-row tile (not measured apart). A 128 x 128 tile
// (8 warps) was slower than widening the weights for cuBLASLt from 256 rows up (5193 against 6322
// tok/s at batch 256; at 127 / 128 rows the two measured 4778 / 4814), which is why products of
// kFp8WidenRows rows and more widen.
using Tile16 = Fp8MmaConfig<1, 1, 4, 4>;     // 16 x 128, 4 warps: M <= 16
using SmallTile = Fp8MmaConfig<2, 1, 4, 3>;  // 32 x 128, 4 warps: M <= 32
using MidTile = Fp8MmaConfig<2, 2, 4, 3>;    // 64 x 128, 8 warps: M > 64
using WideTile = Fp8MmaConfig<4, 1, 8, 3>;   // 64 x 256, 8 warps: M <= 64 (each weight converted once)

// The weight row behind tile column j: j itself, or for the SiLU mode gate row j / 2 (j even)
// and up row half + j / 2 (j odd).
__device__ __forceinline__ int64_t weight_row(int64_t j, int64_t half, bool silu) {
  return silu ? (j >> 1) + (j & 1) * half : j;
}

// Tile columns j and j + 1 (j even) of output row m from their sums: bias, then store, add into
// `out` (mode 1) or, mode 2, out[m, j / 2] = silu(gate) * up. Rounded as the composed ops round.
__device__ __forceinline__ void finish_pair(float v0, float v1, int64_t m, int64_t j, int64_t N,
                                            const float* __restrict__ bias, int mode, float* __restrict__ out) {
  if (mode == 2) {
    const int64_t half = N / 2, o = j / 2;
    out[m * half + o] = swiglu_product(v0, v1, bias, o, half);
    return;
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int64_t c = j + e;
    if (c >= N) break;
    store_product(out + m * N + c, e ? v1 : v0, bias, c, mode == 1);
  }
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float r = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) r = fmaxf(r, partial[i]);
  return r;
}

// One row of activations per block into a[m, :]: the staged values times 2^-e as f16 (exact, see
// row_exponent), and row_scale[m] = 2^e. kVec > 0: the row is read once, kVec float4 per thread
// held in registers (K <= 4 * kVec * blockDim.x, x 16-byte aligned); kVec = 0: any row, read again
// per pass.
constexpr int kStageThreads = 512, kStageVec = 8;

__device__ __forceinline__ void store_staged(uint16_t* dst, float v, float factor) {
  *dst = __half_as_ushort(__float2half_rn(__fmul_rn(v, factor)));
}

template <int kVec>
__global__ void __launch_bounds__(kStageThreads)
fp8_mma_stage_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, int64_t K,
                     uint16_t* __restrict__ a, float* __restrict__ row_scale) {
  const int64_t m = blockIdx.x;
  const float* row = x + m * K;
  uint16_t* dst = a + m * K;
  float inv = 1.0f, mx = 0.0f;
  if constexpr (kVec > 0) {
    const int64_t n4 = K / 4;
    float v[kVec][4];
    double ss = 0;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(i) * kStageThreads;
      const float4 f = j < n4 ? reinterpret_cast<const float4*>(row)[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      v[i][0] = f.x;
      v[i][1] = f.y;
      v[i][2] = f.z;
      v[i][3] = f.w;
#pragma unroll
      for (int q = 0; q < 4; ++q) ss += static_cast<double>(v[i][q]) * v[i][q];
    }
    if (norm_w) inv = rms_inverse(block_sum(ss), K, eps);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(i) * kStageThreads;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        v[i][q] = j < n4 ? staged_value(v[i][q], norm_w, 4 * j + q, inv) : 0.0f;
        mx = fmaxf(mx, fabsf(v[i][q]));
      }
    }
    const int e = row_exponent(block_max(mx));
    const float factor = __int_as_float((127 - e) << 23);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(i) * kStageThreads;
      if (j >= n4) break;
#pragma unroll
      for (int q = 0; q < 4; ++q) store_staged(dst + 4 * j + q, v[i][q], factor);
    }
    if (threadIdx.x == 0) row_scale[m] = __int_as_float((127 + e) << 23);
  } else {
    if (norm_w) {
      double ss = 0;
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) ss += static_cast<double>(row[k]) * row[k];
      inv = rms_inverse(block_sum(ss), K, eps);
    }
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmaxf(mx, fabsf(staged_value(row[k], norm_w, k, inv)));
    const int e = row_exponent(block_max(mx));
    const float factor = __int_as_float((127 - e) << 23);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
      store_staged(dst + k, staged_value(row[k], norm_w, k, inv), factor);
    if (threadIdx.x == 0) row_scale[m] = __int_as_float((127 + e) << 23);
  }
}

// a [M, K] staged activations (f16, row factors row_scale), w [N, K] FP8 (device layout). Block (x, y, z):
// tile columns x * BN.., rows y * BM.., k-tiles [z * tiles_per_split, ...). partial == nullptr:
// the epilogue here; else the sums (row factors applied) to partial[z].
template <class C>
__global__ void __launch_bounds__(C::kThreads, 1)
fp8_mma_kernel(const uint16_t* __restrict__ a, const Fp8Rows w, const float* __restrict__ bias,
               const float* __restrict__ row_scale, int64_t M, int64_t N, int64_t K, int mode, int tiles_per_split,
               float* __restrict__ out, float* __restrict__ partial) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int MT = C::kMT, NT = C::kNT, BM = C::kBM, BN = C::kBN, S = C::kStages;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / C::kWN, wn = warp % C::kWN, g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM, n0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t blocks = K / kBK, half = N / 2;
  const bool silu = mode == 2;
  const int64_t kt0 = static_cast<int64_t>(blockIdx.z) * tiles_per_split;
  const int64_t kt1 = std::min<int64_t>(blocks, kt0 + tiles_per_split);

  // The rows this thread copies are the same for every k-tile: their sources are set once.
  constexpr int kAChunks = BM * 16 / C::kThreads, kBChunks = BN * 8 / C::kThreads;
  static_assert(BM * 16 % C::kThreads == 0 && BN * 8 % C::kThreads == 0, "copy split");
  const uint16_t* a_src[kAChunks];
  bool a_ok[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int c = tid + i * C::kThreads, r = c >> 4, q = c & 15;
    a_ok[i] = m0 + r < M;
    a_src[i] = a + (a_ok[i] ? m0 + r : 0) * K + q * 8;
  }
  const uint8_t* b_src[kBChunks];
  const float* s_src[kBChunks];  // the row's scale of k-tile 0 (chunks q = 0 copy the scales)
  bool b_ok[kBChunks];
#pragma unroll
  for (int i = 0; i < kBChunks; ++i) {
    const int c = tid + i * C::kThreads, r = c >> 3, q = c & 7;
    b_ok[i] = n0 + r < N;
    const int64_t row = weight_row(b_ok[i] ? n0 + r : 0, half, silu);
    b_src[i] = w.row(row) + q * 16;
    s_src[i] = w.scale_ptr(row, 0);
  }
  const uint32_t base = smem_u32(smem);
  auto load_tile = [&](int64_t kt) {
    const uint32_t st = base + static_cast<uint32_t>((kt % S) * C::kStageBytes);
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) {
      const int c = tid + i * C::kThreads;
      cp_async16(st + (c >> 4) * kAStride + (c & 15) * 16, a_src[i] + kt * kBK, a_ok[i]);
    }
#pragma unroll
    for (int i = 0; i < kBChunks; ++i) {
      const int c = tid + i * C::kThreads, r = c >> 3, q = c & 7;
      cp_async16(st + C::kABytes + r * kBStride + q * 16, b_src[i] + kt * kBK, b_ok[i]);
      if (q == 0) cp_async4(st + C::kABytes + C::kBBytes + r * 4, s_src[i] + kt * w.N, b_ok[i]);
    }
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (kt0 + s < kt1) load_tile(kt0 + s);
    cp_async_commit();
  }
  for (int64_t kt = kt0; kt < kt1; ++kt) {
    cp_async_wait<S - 2>();
    __syncthreads();  // tile kt has landed for every thread, and tile kt - 1's stage is free
    if (kt + S - 1 < kt1) load_tile(kt + S - 1);
    cp_async_commit();

    const uint8_t* st = smem + (kt % S) * C::kStageBytes;
    const uint8_t* sa = st + (wm * MT * 16 + g) * kAStride + t * 16;
    const uint8_t* sb = st + C::kABytes + (wn * 32 + g) * kBStride + t * 8;
    const float* ss = reinterpret_cast<const float*>(st + C::kABytes + C::kBBytes) + wn * 32 + 2 * t;
    float part[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[i][j][e] = 0.0f;
#pragma unroll
    for (int c = 0; c < kBK / 32; ++c) {
      // Lane (g, t): rows g and g + 8 of each m16 tile, k 32c + 8t .. + 7 (words: k pairs).
      uint4 af[MT][2];
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          af[i][h] = *reinterpret_cast<const uint4*>(sa + (i * 16 + h * 8) * kAStride + c * 64);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint2 q = *reinterpret_cast<const uint2*>(sb + j * 8 * kBStride + c * 32);
        const uint32_t b0 = e4m3x2_to_f16x2(q.x), b1 = e4m3x2_to_f16x2(q.x >> 16);
        const uint32_t b2 = e4m3x2_to_f16x2(q.y), b3 = e4m3x2_to_f16x2(q.y >> 16);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          // First k16 step: this lane's k 8t, 8t+1 (fragment k 2t, 2t+1) and 8t+2, 8t+3 (2t+8, 2t+9);
          // second: 8t+4 .. 8t+7. A and B use the same map, so the sum is the same.
          mma_f16(part[i][j], af[i][0].x, af[i][1].x, af[i][0].y, af[i][1].y, b0, b1);
          mma_f16(part[i][j], af[i][0].z, af[i][1].z, af[i][0].w, af[i][1].w, b2, b3);
        }
      }
    }
    // The block's sums times its scales: columns 2t and 2t + 1 of each n8 tile.
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const float2 sc = *reinterpret_cast<const float2*>(ss + j * 8);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        acc[i][j][0] = fmaf(part[i][j][0], sc.x, acc[i][j][0]);
        acc[i][j][1] = fmaf(part[i][j][1], sc.y, acc[i][j][1]);
        acc[i][j][2] = fmaf(part[i][j][2], sc.x, acc[i][j][2]);
        acc[i][j][3] = fmaf(part[i][j][3], sc.y, acc[i][j][3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + wm * MT * 16 + i * 16 + h * 8 + g;
      if (m >= M) continue;
      const float rs = row_scale[m];  // a power of two: exact
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int64_t col = n0 + wn * 32 + j * 8 + 2 * t;
        if (col >= N) continue;
        const float v0 = acc[i][j][2 * h] * rs, v1 = acc[i][j][2 * h + 1] * rs;
        if (partial) {
          float* p = partial + (static_cast<int64_t>(blockIdx.z) * M + m) * N + col;
          p[0] = v0;
          if (col + 1 < N) p[1] = v1;
        } else {
          finish_pair(v0, v1, m, col, N, bias, mode, out);
        }
      }
    }
}

// Adds the splits' partial sums of each pair of tile columns in split order, then the epilogue.
__global__ void fp8_mma_reduce_kernel(const float* __restrict__ partial, int splits, const float* __restrict__ bias,
                                      int64_t M, int64_t N, int mode, float* __restrict__ out) {
  const int64_t pairs = (N + 1) / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * pairs) return;
  const int64_t m = idx / pairs, j = 2 * (idx % pairs);
  float v0 = 0.0f, v1 = 0.0f;
  for (int z = 0; z < splits; ++z) {
    const float* p = partial + (static_cast<int64_t>(z) * M + m) * N + j;
    v0 += p[0];
    if (j + 1 < N) v1 += p[1];
  }
  finish_pair(v0, v1, m, j, N, bias, mode, out);
}

// ---- W8A8 activations for cuBLASLt's block-scaled FP8 product ----

// Activations of one row quantized for the W8A8 product: RMS-normalized when asked (f32), then
// per 128-value block scale = amax / 448 (f32 division, correctly rounded) and each value / scale
// rounded to e4m3 (nearest even, saturating). Values to q [rows, K], scales to s [K / 128, rows]
// (cuBLASLt's VEC128_32F layout: block-major). Rows from M to `rows` (padding) are zeros. One
// block of kQuantThreads per row; each warp takes whole 128-value blocks, each lane four values.
constexpr int kQuantThreads = 256;

__global__ void __launch_bounds__(kQuantThreads)
fp8_quantize_act_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, int64_t M,
                        int64_t rows, int64_t K, bool vec, uint8_t* __restrict__ q, float* __restrict__ s) {
  const int64_t m = blockIdx.x, blocks = K / kBK;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint8_t* dst = q + m * K;
  if (m >= M) {
    for (int64_t kb = warp; kb < blocks; kb += kQuantThreads / 32) {
      reinterpret_cast<uint32_t*>(dst + kb * kBK)[lane] = 0u;
      if (lane == 0) s[kb * rows + m] = 0.0f;
    }
    return;
  }
  const float* row = x + m * K;
  float inv = 1.0f;
  if (norm_w) {
    double ss = 0;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) ss += static_cast<double>(row[k]) * row[k];
    inv = rms_inverse(block_sum(ss), K, eps);
  }
  for (int64_t kb = warp; kb < blocks; kb += kQuantThreads / 32) {
    const int64_t k = kb * kBK + lane * 4;
    float v[4];
    if (vec) {
      const float4 f = *reinterpret_cast<const float4*>(row + k);
      v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = row[k + i];
    }
    float mx = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (norm_w) v[i] = __fmul_rn(norm_w[k + i], __fmul_rn(v[i], inv));
      mx = fmaxf(mx, fabsf(v[i]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float scale = __fdiv_rn(mx, 448.0f);
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float sv = scale > 0.0f ? __fdiv_rn(v[i], scale) : 0.0f;
      packed |= static_cast<uint32_t>(__nv_cvt_float_to_fp8(sv, __NV_SATFINITE, __NV_E4M3)) << (8 * i);
    }
    reinterpret_cast<uint32_t*>(dst + kb * kBK)[lane] = packed;
    if (lane == 0) s[kb * rows + m] = scale;
  }
}

// The tile for M rows; where its shared memory does not fit the device (Tile16 needs 102 KB,
// WideTile 183 KB, MidTile 122 KB: too much for sm_86/sm_89's 99 KB, WideTile for A100's 163
// KB too), SmallTile (92 KB, fits every sm_80+ GPU) takes the product.
template <class F>
void with_config(int64_t M, F&& f) {
  const int limit = max_block_smem();
  if (M <= Tile16::kBM && Tile16::kSmem <= limit) f(Tile16{});
  else if (M <= SmallTile::kBM) f(SmallTile{});
  else if (M <= WideTile::kBM && WideTile::kSmem <= limit) f(WideTile{});
  else if (M > WideTile::kBM && MidTile::kSmem <= limit) f(MidTile{});
  else f(SmallTile{});
}

using Fp8MmaKernel = void (*)(const uint16_t*, Fp8Rows, const float*, const float*, int64_t, int64_t, int64_t,
                             int, int, float*, float*);

// The kernel of config C, opted in to its shared memory, and how many of its blocks an SM holds.
template <class C>
std::pair<Fp8MmaKernel, int> kernel_of() {
  const int per_sm = per_device_value(reinterpret_cast<const void*>(fp8_mma_kernel<C>), [] {
    RH_CUDA(cudaFuncSetAttribute(reinterpret_cast<const void*>(fp8_mma_kernel<C>),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    int n = 0;
    RH_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fp8_mma_kernel<C>, C::kThreads, C::kSmem));
    return std::max(n, 1);
  });
  return {fp8_mma_kernel<C>, per_sm};
}

constexpr int64_t align256(int64_t n) { return (n + 255) / 256 * 256; }

}  // namespace

namespace {

// Splits of K for config C: each block pays a fixed cost (its pipeline filling and draining,
// about kBlockOverhead k-tiles' time) and a wave of blocks lasts as long as its longest, so the
// estimate is waves x (k-tiles per split + overhead); the fewest splits that minimize it, each
// keeping at least 4 k-tiles.
template <class C>
void plan_splits(int64_t M, int64_t N, int64_t K, int per_sm, Fp8MmaPlan& p) {
  const int64_t slots = static_cast<int64_t>(sm_count()) * per_sm;
  const int64_t tiles = (M + C::kBM - 1) / C::kBM * ((N + C::kBN - 1) / C::kBN);
  const int64_t blocks = K / kBK;
  constexpr int64_t kBlockOverhead = 3;
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(16, blocks / 4));
  auto cost = [&](int64_t s) {
    const int64_t n = tiles * s, per = (blocks + s - 1) / s;
    return (n + slots - 1) / slots * (per + kBlockOverhead);
  };
  int64_t splits = 1;
  for (int64_t s = 2; s <= most; ++s)
    if (cost(s) < cost(splits)) splits = s;
  p.tiles_per_split = static_cast<int>((blocks + splits - 1) / splits);
  p.splits = static_cast<int>((blocks + p.tiles_per_split - 1) / p.tiles_per_split);
}

void launch_reduce(const float* partial, const Fp8MmaPlan& plan, const float* bias, int64_t M, int64_t N, int mode,
                   float* out, cudaStream_t stream) {
  const int64_t n = M * ((N + 1) / 2);
  fp8_mma_reduce_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(partial, plan.splits, bias, M, N,
                                                                                    mode, out);
  RH_CUDA_LAUNCHED("fp8_mma_reduce_kernel");
}

void check_fp8_product(const void* w, int64_t N, int64_t K, LinearMode mode) {
  RH_CHECK(K % kBK == 0 && K > 0, "FP8 product: a row of ", K, " values is not a whole number of 128-value blocks");
  RH_CHECK(mode != LinearMode::kSiluMul || N % 2 == 0, "FP8 product: SiLU needs an even N, got ", N);
  RH_CHECK(reinterpret_cast<uintptr_t>(w) % 16 == 0, "FP8 product: weights not 16-byte aligned");
}

}  // namespace

Fp8MmaPlan plan_fp8_mma(int64_t M, int64_t N, int64_t K) {
  Fp8MmaPlan p;
  with_config(M, [&](auto c) { plan_splits<decltype(c)>(M, N, K, kernel_of<decltype(c)>().second, p); });
  p.scratch_bytes = align256(M * K * 2) + align256(M * static_cast<int64_t>(sizeof(float))) +
                    (p.splits > 1 ? p.splits * M * N * static_cast<int64_t>(sizeof(float)) : 0);
  return p;
}

void launch_fp8_mma(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                    int64_t N, int64_t K, LinearMode mode, float* out, void* scratch, const Fp8MmaPlan& plan,
                    cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  check_fp8_product(w, N, K, mode);
  auto* a = static_cast<uint16_t*>(scratch);
  auto* row_scale = reinterpret_cast<float*>(static_cast<uint8_t*>(scratch) + align256(M * K * 2));
  float* partial = plan.splits > 1 ? row_scale + align256(M * static_cast<int64_t>(sizeof(float))) / 4 : nullptr;
  const bool vec = K <= 4 * kStageVec * kStageThreads && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const auto stage = vec ? fp8_mma_stage_kernel<kStageVec> : fp8_mma_stage_kernel<0>;
  stage<<<static_cast<unsigned>(M), kStageThreads, 0, stream>>>(x, norm_w, eps, K, a, row_scale);
  RH_CUDA_LAUNCHED("fp8_mma_stage_kernel");
  const int m = static_cast<int>(mode);
  with_config(M, [&](auto c) {
    using C = decltype(c);
    const auto kernel = kernel_of<C>().first;
    const int64_t gy = (M + C::kBM - 1) / C::kBM;
    RH_CHECK(gy < 65536, "FP8 product: M = ", M, " exceeds the grid");
    const dim3 grid(static_cast<unsigned>((N + C::kBN - 1) / C::kBN), static_cast<unsigned>(gy),
                    static_cast<unsigned>(plan.splits));
    kernel<<<grid, C::kThreads, C::kSmem, stream>>>(a, Fp8Rows(w, N, K), bias, row_scale, M, N, K, m,
                                                      plan.tiles_per_split, out, partial);
  });
  RH_CUDA_LAUNCHED("fp8_mma_kernel");
  if (partial) launch_reduce(partial, plan, bias, M, N, m, out, stream);
}

void launch_fp8_quantize_activations(const float* x, const float* norm_w, float eps, int64_t M, int64_t rows,
                                     int64_t K, void* q, float* s, cudaStream_t stream) {
  if (rows == 0) return;
  RH_CHECK(K % kBK == 0 && K > 0, "FP8 activations: a row of ", K, " values is not a whole number of 128-value blocks");
  RH_CHECK(rows >= M, "FP8 activations: ", rows, " rows cannot hold ", M);
  const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  fp8_quantize_act_kernel<<<static_cast<unsigned>(rows), kQuantThreads, 0, stream>>>(
      x, norm_w, eps, M, rows, K, vec, static_cast<uint8_t*>(q), s);
  RH_CUDA_LAUNCHED("fp8_quantize_act_kernel");
}

}  // namespace redhare::cuda
