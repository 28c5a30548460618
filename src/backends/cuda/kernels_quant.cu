// Block-quantized (GGUF) weights with f32 activations: linear and embedding lookup.
//
// The weights stay packed on the device. Every kernel dequantizes in registers exactly as the
// CPU reference does (backends/cpu/quant_ref.cpp: the same products and sums, each rounded once,
// spelled with __fmul_rn/__fadd_rn so nvcc cannot fuse them), so a dequantized weight is bitwise
// the reference's and only the f32 summation order differs from cpu::ref::linear.
//
// The unit of work is 8 consecutive values of a row: lane l of a warp takes values 8l..8l+7 of
// each 256-value step. Four lanes then share one 32-value sub-block and eight sub-blocks make
// the step: 8 blocks of the 32-value types or exactly one super-block of the K types, so one
// mapping serves every type. Each lane's activations are two float4 loads that the warp reads as
// one contiguous kilobyte, and its weight bytes come in as 32-bit words: a warp's loads of one
// step fall on a few contiguous cache lines. (A lane per whole block would make the activation
// loads 128-byte strided, 32 cache lines per warp load, and that, not DRAM, would bound a decode.)
//
// Block rows are only 2-byte aligned (Q8_0 blocks are 34 bytes), so 4-byte fields are read as
// two aligned words joined with a funnel shift. That may read up to 4 bytes past a block's last
// byte: the backend pads block-quantized allocations (kBlockPadBytes) so the last block can.
//
// Two linear kernels, as for the plain weight types (kernels_linear.cu):
// - M <= 4 (decode): a warp per weight row (four rows when N >= kQuantGemvWideRows), streamed
//   once against all M activation rows, two steps' loads issued before any is used.
// - M > 4: 64x64 output tiles; each 32-wide K slice of W is dequantized into shared memory as f32
//   (one 8-value unit per thread) and multiplied like an f32 tile.
// FP8 (kF8B128) weights, in their device layout (fp8_device.cuh), have their own decode kernel
// here, for M <= kFp8GemvMaxRows (8; in tensor-core mode only where the W8A16 decode kernel of
// kernels_fp8_decode.cu does not fit, M <= 4, and the W8A16 mma kernel takes over from 5 rows);
// more rows in exact mode take the tiled kernel through Fp8Src. fp8_to_bf16_kernel widens them for
// cuBLASLt (tensor-core mode, W8A16, from kFp8WidenRows rows).
#include <algorithm>

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/fp8_device.cuh"
#include "backends/cuda/kernels.h"

namespace redhare::cuda {
namespace {

// ---- loads from the packed blocks ----

__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p))));
}

__device__ __forceinline__ uint32_t word_at(const uint8_t* p, int64_t i) {
  return __ldg(reinterpret_cast<const unsigned int*>(p) + i);
}

// 4 bytes at any address, as a little-endian word.
__device__ __forceinline__ uint32_t u32_at(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint8_t* base = reinterpret_cast<const uint8_t*>(a & ~uintptr_t{3});
  return __funnelshift_r(word_at(base, 0), word_at(base, 1), static_cast<unsigned>(a & 3) * 8);
}

// 8 bytes at any address: three aligned words, two funnel shifts.
__device__ __forceinline__ void u64_at(const uint8_t* p, uint32_t& lo, uint32_t& hi) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint8_t* base = reinterpret_cast<const uint8_t*>(a & ~uintptr_t{3});
  const unsigned sh = static_cast<unsigned>(a & 3) * 8;
  const uint32_t w0 = word_at(base, 0), w1 = word_at(base, 1), w2 = word_at(base, 2);
  lo = __funnelshift_r(w0, w1, sh);
  hi = __funnelshift_r(w1, w2, sh);
}

// 8 bytes at an 8-byte aligned address (fields of the 16-byte multiple K blocks).
__device__ __forceinline__ void u64_aligned(const uint8_t* p, uint32_t& lo, uint32_t& hi) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
  lo = v.x;
  hi = v.y;
}

// Byte i (0..7) of the 8 bytes lo|hi.
__device__ __forceinline__ uint32_t byte_of(uint32_t lo, uint32_t hi, int i) {
  return ((i < 4 ? lo : hi) >> (8 * (i & 3))) & 0xFFu;
}

// ---- one 8-value unit of each block type ----
//
// dequant8(b, unit, part, v): values 32 * unit + 8 * part .. + 7 of the block at `b` (unit is
// the 32-value sub-block, always 0 for the 32-value types). Layouts: see quant_ref.cpp.

struct Q8_0 {
  static constexpr int kElems = 32, kBytes = 34;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int, int part, float* v) {
    const float d = half_at(b);
    uint32_t lo, hi;
    u64_at(b + 2 + 8 * part, lo, hi);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      v[i] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(byte_of(lo, hi, i))));
  }
};

// The 32-value 4- and 5-bit types keep value j in the low nibble of byte j and value j + 16 in
// its high nibble: parts 0-1 read the low nibbles of bytes 0-15, parts 2-3 the high ones.
__device__ __forceinline__ void nibbles8(const uint8_t* qs, int part, int* q) {
  uint32_t lo, hi;
  u64_at(qs + 8 * (part & 1), lo, hi);
  const int shift = 4 * (part >> 1);
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] = static_cast<int>((byte_of(lo, hi, i) >> shift) & 0xFu);
}

struct Q4_0 {
  static constexpr int kElems = 32, kBytes = 18;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int, int part, float* v) {
    const float d = half_at(b);
    int q[8];
    nibbles8(b + 2, part, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fmul_rn(d, static_cast<float>(q[i] - 8));
  }
};

struct Q4_1 {
  static constexpr int kElems = 32, kBytes = 20;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int, int part, float* v) {
    const float d = half_at(b), m = half_at(b + 2);
    int q[8];
    nibbles8(b + 4, part, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fadd_rn(__fmul_rn(d, static_cast<float>(q[i])), m);
  }
};

// The fifth bit of value j is bit j of the 32-bit word qh.
__device__ __forceinline__ void add_fifth_bits(uint32_t qh, int part, int* q) {
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] |= static_cast<int>(((qh >> (8 * part + i)) & 1u) << 4);
}

struct Q5_0 {
  static constexpr int kElems = 32, kBytes = 22;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int, int part, float* v) {
    const float d = half_at(b);
    int q[8];
    nibbles8(b + 6, part, q);
    add_fifth_bits(u32_at(b + 2), part, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fmul_rn(d, static_cast<float>(q[i] - 16));
  }
};

struct Q5_1 {
  static constexpr int kElems = 32, kBytes = 24;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int, int part, float* v) {
    const float d = half_at(b), m = half_at(b + 2);
    int q[8];
    nibbles8(b + 8, part, q);
    add_fifth_bits(u32_at(b + 4), part, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fadd_rn(__fmul_rn(d, static_cast<float>(q[i])), m);
  }
};

// Q4_K/Q5_K: the 6-bit scale and min of sub-block s from the 12 packed bytes at `s12`
// (unpack_k_scales in quant_ref.cpp). Their blocks (144 and 176 bytes) keep the 16-byte alignment
// of the weights (checked by the launcher), so these fields are read with aligned loads.
__device__ __forceinline__ void k_scale_min(const uint8_t* s12, int s, float& sc, float& mn) {
  const uint32_t w0 = word_at(s12, 0), w1 = word_at(s12, 1), w2 = word_at(s12, 2);
  auto byte = [&](int i) { return ((i < 4 ? w0 : i < 8 ? w1 : w2) >> (8 * (i & 3))) & 0xFFu; };
  uint32_t a, m;
  if (s < 4) {
    a = byte(s) & 63u;
    m = byte(s + 4) & 63u;
  } else {
    a = (byte(s + 4) & 0xFu) | ((byte(s - 4) >> 6) << 4);
    m = (byte(s + 4) >> 4) | ((byte(s) >> 6) << 4);
  }
  sc = static_cast<float>(a);
  mn = static_cast<float>(m);
}

struct Q4_K {
  static constexpr int kElems = 256, kBytes = 144;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int unit, int part, float* v) {
    const float d = half_at(b), dmin = half_at(b + 2);
    float sc, mn;
    k_scale_min(b + 4, unit, sc, mn);
    // The reference's d * sc[s] * q - dmin * mn[s], left to right, each step rounded.
    const float ds = __fmul_rn(d, sc), dm = __fmul_rn(dmin, mn);
    uint32_t lo, hi;
    u64_aligned(b + 16 + 32 * (unit >> 1) + 8 * part, lo, hi);
    const int shift = 4 * (unit & 1);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      v[i] = __fsub_rn(__fmul_rn(ds, static_cast<float>((byte_of(lo, hi, i) >> shift) & 0xFu)), dm);
  }
};

struct Q5_K {
  static constexpr int kElems = 256, kBytes = 176;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int unit, int part, float* v) {
    const float d = half_at(b), dmin = half_at(b + 2);
    float sc, mn;
    k_scale_min(b + 4, unit, sc, mn);
    const float ds = __fmul_rn(d, sc), dm = __fmul_rn(dmin, mn);
    uint32_t hlo, hhi, lo, hi;
    u64_aligned(b + 16 + 8 * part, hlo, hhi);  // bit `unit` of byte l: fifth bit of value l
    u64_aligned(b + 48 + 32 * (unit >> 1) + 8 * part, lo, hi);
    const int shift = 4 * (unit & 1);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = ((byte_of(lo, hi, i) >> shift) & 0xFu) | (((byte_of(hlo, hhi, i) >> unit) & 1u) << 4);
      v[i] = __fsub_rn(__fmul_rn(ds, static_cast<float>(q)), dm);
    }
  }
};

struct Q6_K {
  static constexpr int kElems = 256, kBytes = 210;
  __device__ __forceinline__ static void dequant8(const uint8_t* b, int unit, int part, float* v) {
    const int h = unit >> 2, g = unit & 3;  // half of the super-block, 32-value group in it
    const float d = half_at(b + 208);
    const auto sc = static_cast<int8_t>(__ldg(b + 192 + 8 * h + 2 * g + (part >> 1)));
    const float ds = __fmul_rn(d, static_cast<float>(sc));
    uint32_t llo, lhi, hlo, hhi;
    u64_at(b + 64 * h + 32 * (g & 1) + 8 * part, llo, lhi);
    u64_at(b + 128 + 32 * h + 8 * part, hlo, hhi);
    const int lshift = 4 * (g >> 1), hshift = 2 * g;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int q = static_cast<int>(((byte_of(llo, lhi, i) >> lshift) & 0xFu) |
                                     (((byte_of(hlo, hhi, i) >> hshift) & 3u) << 4));
      v[i] = __fmul_rn(ds, static_cast<float>(q - 32));
    }
  }
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 890
// An e4m3 byte placed in the top byte of a word keeps its sign at bit 31; moving exponent and
// mantissa down four bits reads as the value times 2^-120, for normal and subnormal codes alike
// (f32 keeps the subnormals); multiplying by 2^120 is exact.
__device__ __forceinline__ float e4m3_byte_scaled(uint32_t word, int k) {
  const uint32_t t = __byte_perm(word, 0u, 0x0444u | (static_cast<uint32_t>(k) << 12));
  return __uint_as_float((t & 0x80000000u) | ((t >> 4) & 0x07F00000u)) * 1.329227995784916e36f;  // 2^120
}
#endif

// The four e4m3 values of a word as f32, exactly. sm_89+ converts two at a time to f16 in one
// instruction (f16 holds every e4m3 value) and widens them on the FP32 pipe; older GPUs use the
// integer route.
__device__ __forceinline__ void e4m3x4_to_f32(uint32_t word, float* v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word & 0xFFFFu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
  v[0] = a.x;
  v[1] = a.y;
  v[2] = b.x;
  v[3] = b.y;
#else
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = e4m3_byte_scaled(word, k);
#endif
}

// Values k..k+7 (k a multiple of 8) of weight row n, by the kernels below: rows of packed blocks
// of type Q...
template <class Q>
struct BlockRows {
  const uint8_t* w;
  int64_t row_bytes;
  __device__ __forceinline__ void dequant8(int64_t n, int64_t k, float* v) const {
    const int within = static_cast<int>(k % Q::kElems);
    Q::dequant8(w + n * row_bytes + k / Q::kElems * Q::kBytes, within >> 5, (within & 31) >> 3, v);
  }
};

// ... or FP8 weights in the device layout (fp8_device.cuh): each e4m3 value times its block scale.
struct Fp8Src {
  Fp8Rows rows;
  __device__ __forceinline__ void dequant8(int64_t n, int64_t k, float* v) const {
    const float scale = rows.scale(n, k / kBK);
    uint32_t lo, hi;
    u64_aligned(rows.row(n) + k, lo, hi);
    e4m3x4_to_f32(lo, v);
    e4m3x4_to_f32(hi, v + 4);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fmul_rn(v[i], scale);
  }
};

// Eight activations at x[k..k+7]; `vec`: 16-byte aligned.
__device__ __forceinline__ void load_x8(const float* x, bool vec, float* a) {
  if (vec) {
    const float4 p = __ldg(reinterpret_cast<const float4*>(x));
    const float4 q = __ldg(reinterpret_cast<const float4*>(x) + 1);
    a[0] = p.x; a[1] = p.y; a[2] = p.z; a[3] = p.w;
    a[4] = q.x; a[5] = q.y; a[6] = q.z; a[7] = q.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = __ldg(x + i);
  }
}

// ---- decode GEMV ----

constexpr int kGemvWarps = 8;
constexpr int kGemvUnroll = 2;  // 256-value steps whose loads are in flight together

// R weight rows per warp: each lane's activations are loaded once for all R rows. With one row
// per warp, the activation loads (4 bytes per value against 0.5-1 bytes of weights) kept the L1
// busier than DRAM (H100, Q4_0: 26% of copy bandwidth); large N uses R = 4.
template <class Src, int M, int R>
__global__ void __launch_bounds__(kGemvWarps * 32)
quant_gemv_kernel(const float* __restrict__ x, const Src w, const float* __restrict__ bias, int64_t N, int64_t K,
                  bool x_vec, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5)) * R;
  if (n0 >= N) return;  // whole warps leave together: the shuffles below stay full
  int64_t rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rows[r] = n0 + r < N ? n0 + r : N - 1;  // tail rows: not stored
  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += 256 * kGemvUnroll) {
    float v[kGemvUnroll][R][8];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t k = k0 + 256 * u + 8 * lane;
      // K is a whole number of blocks, so a unit is either wholly inside the row or past it.
      if (k < K) {
#pragma unroll
        for (int r = 0; r < R; ++r) w.dequant8(rows[r], k, v[u][r]);
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t k = k0 + 256 * u + 8 * lane;
      if (k >= K) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float a[8];
        load_x8(x + m * K + k, x_vec, a);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[m][r] = fmaf(a[i], v[u][r][i], acc[m][r]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s = warp_sum(acc[m][r]);
      if (lane == 0 && n0 + r < N) out[m * N + n0 + r] = bias ? s + bias[n0 + r] : s;
    }
}

// ---- tiled GEMM for M > 4 ----

constexpr int kTile = 64, kSlice = 32, kTileThreads = 256;

template <class Src>
__global__ void __launch_bounds__(kTileThreads)
quant_tiled_kernel(const float* __restrict__ x, const Src w, const float* __restrict__ bias, int64_t M, int64_t N,
                   int64_t K, float* __restrict__ out) {
  // [k][row]: the multiply reads 4 consecutive rows of one k as a float4; +4 keeps rows aligned.
  __shared__ __align__(16) float xs[kSlice][kTile + 4];
  __shared__ __align__(16) float ws[kSlice][kTile + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  // Each thread dequantizes one 8-value unit of one weight row per slice.
  const int wr = tid / 4, wpart = tid % 4;
  const bool w_row = n0 + wr < N;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kSlice) {  // K is a multiple of 32
#pragma unroll
    for (int i = 0; i < kTile * kSlice / kTileThreads; ++i) {
      const int e = tid + i * kTileThreads, r = e / kSlice, kk = e % kSlice;
      xs[kk][r] = m0 + r < M ? x[(m0 + r) * K + k0 + kk] : 0.0f;
    }
    float v[8];
    if (w_row) {
      w.dequant8(n0 + wr, k0 + 8 * wpart, v);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) ws[8 * wpart + i][wr] = v[i];
    __syncthreads();
    tile_accumulate_4x4(xs, ws, ty, tx, acc);
    __syncthreads();
  }
  tile_store_4x4(acc, m0, n0, ty, tx, M, N, bias, out);
}

// ---- embedding ----

template <class Q>
__global__ void quant_embedding_kernel(const BlockRows<Q> table, const int32_t* __restrict__ ids, int64_t hidden,
                                       float* __restrict__ out, const int32_t* __restrict__ from,
                                       const int32_t* __restrict__ drawn) {
  const int64_t row = lookup_id(ids, from, drawn, blockIdx.x);
  float* o = out + static_cast<int64_t>(blockIdx.x) * hidden;
  for (int64_t k = 8 * static_cast<int64_t>(threadIdx.x); k < hidden; k += 8 * static_cast<int64_t>(blockDim.x)) {
    float v[8];
    table.dequant8(row, k, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[k + i] = v[i];
  }
}

// ---- launchers ----

template <class Q>
void check_weights(const void* w, int64_t K, const char* op) {
  RH_CHECK(K % Q::kElems == 0, op, ": a row of ", K, " values is not a whole number of ", Q::kElems,
           "-value blocks");
  // u32_at rounds addresses down to 4 bytes: below an unaligned base it would read outside.
  // (K blocks also read their fields with aligned loads; device allocations are 256-aligned.)
  RH_CHECK(reinterpret_cast<uintptr_t>(w) % 16 == 0, op, ": block-quantized weights must be 16-byte aligned");
}

template <class Src, int R>
void gemv_rows(const float* x, const Src& w, const float* bias, int64_t M, int64_t N, int64_t K, bool x_vec,
               float* out, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>((N + kGemvWarps * R - 1) / (kGemvWarps * R));
  const int threads = kGemvWarps * 32;
  switch (M) {
    case 1: quant_gemv_kernel<Src, 1, R><<<grid, threads, 0, stream>>>(x, w, bias, N, K, x_vec, out); break;
    case 2: quant_gemv_kernel<Src, 2, R><<<grid, threads, 0, stream>>>(x, w, bias, N, K, x_vec, out); break;
    case 3: quant_gemv_kernel<Src, 3, R><<<grid, threads, 0, stream>>>(x, w, bias, N, K, x_vec, out); break;
    default: quant_gemv_kernel<Src, 4, R><<<grid, threads, 0, stream>>>(x, w, bias, N, K, x_vec, out); break;
  }
  RH_CUDA_LAUNCHED("quant_gemv_kernel");
}

// The products on weights read through `w` (BlockRows or Fp8Src).
template <class Src>
void linear_from(const float* x, const Src& w, const float* bias, int64_t M, int64_t N, int64_t K, float* out,
                 cudaStream_t stream) {
  if (M <= 4) {
    // Activation rows are 16-byte aligned when x is: K is a multiple of 32.
    const bool x_vec = reinterpret_cast<uintptr_t>(x) % 16 == 0;
    // Four rows per warp only where that still leaves thousands of warps to hide DRAM latency.
    if (N >= kQuantGemvWideRows) gemv_rows<Src, 4>(x, w, bias, M, N, K, x_vec, out, stream);
    else gemv_rows<Src, 1>(x, w, bias, M, N, K, x_vec, out, stream);
    return;
  }
  RH_CHECK((M + kTile - 1) / kTile < 65536, "linear: M = ", M, " exceeds the grid");
  dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  quant_tiled_kernel<Src><<<grid, kTileThreads, 0, stream>>>(x, w, bias, M, N, K, out);
  RH_CUDA_LAUNCHED("quant_tiled_kernel");
}

template <class Q>
void linear_typed(const float* x, const uint8_t* w, const float* bias, int64_t M, int64_t N, int64_t K,
                  float* out, cudaStream_t stream) {
  check_weights<Q>(w, K, "linear");
  linear_from(x, BlockRows<Q>{w, K / Q::kElems * Q::kBytes}, bias, M, N, K, out, stream);
}

template <class Q>
void embedding_typed(const uint8_t* table, const int32_t* ids, int64_t tokens, int64_t hidden, float* out,
                     cudaStream_t stream, const int32_t* from, const int32_t* drawn) {
  check_weights<Q>(table, hidden, "embedding");
  const BlockRows<Q> rows{table, hidden / Q::kElems * Q::kBytes};
  const int threads = static_cast<int>(std::min<int64_t>(256, (hidden / 8 + 31) / 32 * 32));
  quant_embedding_kernel<Q><<<static_cast<unsigned>(tokens), threads, 0, stream>>>(rows, ids, hidden, out, from, drawn);
  RH_CUDA_LAUNCHED("quant_embedding_kernel");
}

// ---- FP8 decode GEMV ----
//
// A warp per weight row of FP8 blocks (device layout, fp8_device.cuh: 128 e4m3 values per block,
// the blocks' scales in their own table). Lane l takes bytes 4l..4l+3 of every block: one 4-byte
// load per block, so a warp reads each block's 128 value bytes as one cache line, and its four
// activations are one float4 that the warp reads as one contiguous 512-byte run (lanes a whole
// 16-byte chunk apart would read the activations at
// a 64-byte stride, four times the shared-memory wavefronts: that, not DRAM, bounded the first
// version of this kernel at a third of the bandwidth). The block scale is one broadcast load.
// kFp8Unroll blocks are loaded before any is used: a 4096-wide row in one round.
//
// Each byte becomes an f32 exactly (e4m3x4_to_f32) and is multiplied by its scale, rounded once,
// so the weight is bit for bit the CPU reference's.
constexpr int kFp8Warps = 8, kFp8Unroll = 32;

// The decode product of M <= 8 activation rows on kF8B128 rows (each weight byte read once for all
// M; in tensor-core mode only M <= 4 where launch_fp8_decode declines (its staged activations do
// not fit in shared memory, or unaligned pointers): at 8 rows the mma kernel measured faster, 1071
// against 907 tok/s for a Llama-3.1-8B decode step on an H200), with Backend::fused_linear's folds
// as the bf16 kernel has them (kernels_linear.cu): norm_w stages each activation row's RMSNorm in
// shared memory first; mode 1 adds into `out` (the residual), mode 2 (R = 2) streams rows n and
// n + N/2 together and writes silu(gate) * up. Each rounded as the composed ops round.
// R weight rows per warp share each activation load: the float4 of activations a lane reads per
// block is four times the bytes of its FP8 weights, and read once per row it, not DRAM, bounded
// the product. kSilu: R / 2 gate rows from P n (P = R / 2) and the up rows N / 2 below them;
// else R consecutive rows from R n.
template <int M, int R, bool kSilu>
__global__ void __launch_bounds__(kFp8Warps * 32)
fp8_gemv_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, const Fp8Rows w,
                const float* __restrict__ bias, int64_t N, int64_t K, int mode, float* __restrict__ out) {
  extern __shared__ __align__(16) float xs[];
  const float* xin = x;
  if (norm_w) {
    stage_rms_norm<M>(x, norm_w, eps, K, xs);
    __syncthreads();
    xin = xs;
  }
  const int lane = threadIdx.x & 31;
  const int64_t cols = kSilu ? N / 2 : N;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kFp8Warps + (threadIdx.x >> 5);  // warp's group
  constexpr int P = kSilu ? R / 2 : R;  // outputs per warp
  const int64_t first = n * P;
  if (first >= cols) return;  // whole warps leave together
  const int64_t blocks = K / 128;
  int64_t rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    // Rows past the end are clamped to the last one and never written.
    rows[r] = kSilu ? std::min<int64_t>(first + r % P, cols - 1) + (r / P) * cols : std::min<int64_t>(first + r, N - 1);
  }
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  constexpr int U = kFp8Unroll / R;
  for (int64_t b0 = 0; b0 < blocks; b0 += U) {
    uint32_t q[R][U];
    float scale[R][U];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t b = b0 + u;
        if (b < blocks) {
          q[r][u] = __ldcs(reinterpret_cast<const unsigned int*>(w.row(rows[r]) + b * kBK) + lane);
          scale[r][u] = w.scale(rows[r], b);
        } else {
          q[r][u] = 0;
          scale[r][u] = 0.0f;
        }
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t b = b0 + u;
      if (b >= blocks) break;
      float wv[R][4];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        e4m3x4_to_f32(q[r][u], wv[r]);
#pragma unroll
        for (int i = 0; i < 4; ++i) wv[r][i] = __fmul_rn(wv[r][i], scale[r][u]);
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4 a = *reinterpret_cast<const float4*>(xin + m * K + b * 128 + 4 * lane);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][m] += a.x * wv[r][0] + a.y * wv[r][1] + a.z * wv[r][2] + a.w * wv[r][3];
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = warp_sum(acc[r][m]);
    if (lane != 0) continue;
    if constexpr (kSilu) {
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int64_t o = first + p;
        if (o >= cols) break;
        out[m * cols + o] = swiglu_product(s[p], s[P + p], bias, o, cols);
      }
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t o = first + r;
        if (o >= N) break;
        store_product(out + m * N + o, s[r], bias, o, mode == 1);
      }
    }
  }
}

template <int R, bool kSilu>
void launch_fp8_gemv(const float* x, const float* norm_w, float eps, const Fp8Rows& w, const float* bias, int64_t M,
                     int64_t N, int64_t K, int mode, float* out, cudaStream_t stream) {
  const int64_t outputs = kSilu ? N / 2 : N, per_warp = kSilu ? R / 2 : R;
  const int64_t groups = (outputs + per_warp - 1) / per_warp;  // one per warp
  const unsigned grid = static_cast<unsigned>((groups + kFp8Warps - 1) / kFp8Warps);
  const size_t smem = norm_w ? static_cast<size_t>(M * K) * sizeof(float) : 0;
  auto go = [&](auto kernel) {
    if (smem > 0) allow_staged_shared_memory(reinterpret_cast<const void*>(kernel));
    kernel<<<grid, kFp8Warps * 32, smem, stream>>>(x, norm_w, eps, w, bias, N, K, mode, out);
  };
  switch (M) {
    case 1: go(fp8_gemv_kernel<1, R, kSilu>); break;
    case 2: go(fp8_gemv_kernel<2, R, kSilu>); break;
    case 3: go(fp8_gemv_kernel<3, R, kSilu>); break;
    case 4: go(fp8_gemv_kernel<4, R, kSilu>); break;
    case 5: go(fp8_gemv_kernel<5, R, kSilu>); break;
    case 6: go(fp8_gemv_kernel<6, R, kSilu>); break;
    case 7: go(fp8_gemv_kernel<7, R, kSilu>); break;
    default: go(fp8_gemv_kernel<8, R, kSilu>); break;
  }
  RH_CUDA_LAUNCHED("fp8_gemv_kernel");
}

// FP8 [N, K] (device layout) to bf16 [N, K]: each weight as the CPU reference computes it (e4m3
// value times scale in f32), then rounded to bf16. A thread per 4 values.
__global__ void fp8_to_bf16_kernel(const Fp8Rows w, __nv_bfloat16* __restrict__ out) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= w.N * w.K) return;
  const int64_t r = i / w.K, c = i % w.K;
  const uint32_t word = __ldg(reinterpret_cast<const unsigned int*>(w.q + i));
  const float scale = w.scale(r, c / kBK);
  float v[4];
  e4m3x4_to_f32(word, v);
#pragma unroll
  for (int k = 0; k < 4; ++k) out[i + k] = __float2bfloat16_rn(__fmul_rn(v[k], scale));
}

// Calls f(Q{}) with the layout struct of `t`.
template <class F>
void with_block_type(DType t, F&& f) {
  switch (t) {
    case DType::kQ8_0: f(Q8_0{}); break;
    case DType::kQ4_0: f(Q4_0{}); break;
    case DType::kQ4_1: f(Q4_1{}); break;
    case DType::kQ5_0: f(Q5_0{}); break;
    case DType::kQ5_1: f(Q5_1{}); break;
    case DType::kQ4_K: f(Q4_K{}); break;
    case DType::kQ5_K: f(Q5_K{}); break;
    case DType::kQ6_K: f(Q6_K{}); break;
    default: fail("CUDA backend: no kernel for ", dtype_name(t), " weights");
  }
}

}  // namespace

bool quant_kernel_supported(DType t) {
  switch (t) {
    case DType::kQ8_0: case DType::kQ4_0: case DType::kQ4_1: case DType::kQ5_0:
    case DType::kQ5_1: case DType::kQ4_K: case DType::kQ5_K: case DType::kQ6_K: case DType::kF8B128:
      return true;
    default:
      return false;
  }
}

void launch_fp8_to_bf16(const void* w, int64_t N, int64_t K, void* out, cudaStream_t stream) {
  RH_CHECK(K % 128 == 0, "FP8 weights: a row of ", K, " values is not a whole number of 128-value blocks");
  const int64_t threads = 256, n4 = N * K / 4;
  if (n4 == 0) return;
  fp8_to_bf16_kernel<<<static_cast<unsigned>((n4 + threads - 1) / threads), threads, 0, stream>>>(
      Fp8Rows(w, N, K), static_cast<__nv_bfloat16*>(out));
  RH_CUDA_LAUNCHED("fp8_to_bf16_kernel");
}

bool launch_fused_fp8_gemv(const float* x, const float* norm_w, float eps, const void* w, const float* bias,
                           int64_t M, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (M < 1 || M > kFp8GemvMaxRows || N == 0 || K % 128 != 0) return false;
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  if (norm_w && M * K * static_cast<int64_t>(sizeof(float)) > kGemvMaxStagedBytes) return false;
  if (mode == LinearMode::kSiluMul && N % 2 != 0) return false;
  const Fp8Rows wb(w, N, K);
  if (mode == LinearMode::kSiluMul) launch_fp8_gemv<4, true>(x, norm_w, eps, wb, bias, M, N, K, 2, out, stream);
  else launch_fp8_gemv<4, false>(x, norm_w, eps, wb, bias, M, N, K, mode == LinearMode::kAccumulate ? 1 : 0, out, stream);
  return true;
}

void launch_quant_linear(const float* x, const void* w, DType w_type, const float* bias, int64_t M,
                         int64_t N, int64_t K, float* out, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  if (w_type == DType::kF8B128) {
    RH_CHECK(K % kBK == 0, "linear: a row of ", K, " FP8 values is not a whole number of 128-value blocks");
    RH_CHECK(reinterpret_cast<uintptr_t>(w) % 16 == 0, "linear: FP8 weights must be 16-byte aligned");
    if (!launch_fused_fp8_gemv(x, nullptr, 0.0f, w, bias, M, N, K, LinearMode::kStore, out, stream))
      linear_from(x, Fp8Src{Fp8Rows(w, N, K)}, bias, M, N, K, out, stream);
    return;
  }
  with_block_type(w_type, [&](auto q) {
    linear_typed<decltype(q)>(x, static_cast<const uint8_t*>(w), bias, M, N, K, out, stream);
  });
}

void launch_quant_embedding(const void* table, DType type, const int32_t* ids, int64_t tokens, int64_t hidden,
                            float* out, cudaStream_t stream, const int32_t* from, const int32_t* drawn) {
  if (tokens == 0 || hidden == 0) return;
  with_block_type(type, [&](auto q) {
    embedding_typed<decltype(q)>(static_cast<const uint8_t*>(table), ids, tokens, hidden, out, stream, from, drawn);
  });
}

}  // namespace redhare::cuda
