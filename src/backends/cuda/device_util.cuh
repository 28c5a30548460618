// Device helpers shared by the kernel files: element loads/stores and block reductions.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace redhare::cuda {

// Exact widening: bf16 is the high half of an f32, f16 converts exactly.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round-to-nearest-even narrowing, as the CPU's convert_from_f32 does, so caches match bitwise.
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). Every thread gets the same
// value, summed in the same order, so the result does not depend on which thread reads it.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T partial[32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T total = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) total += partial[i];
  return total;
}



// One k-slice of a 64x64 output tile held as f32 in shared memory ([k][row] layout, rows padded
// to kStride): thread (ty, tx) adds its 4x4 block of products to acc. Shared by the float-weight
// and block-quantized tiled kernels, which differ only in how the weight tile is filled.
template <int kSliceN, int kStride>
__device__ __forceinline__ void tile_accumulate_4x4(const float (&xs)[kSliceN][kStride],
                                                    const float (&ws)[kSliceN][kStride], int ty, int tx,
                                                    float (&acc)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < kSliceN; ++kk) {
    const float4 a = *reinterpret_cast<const float4*>(&xs[kk][ty * 4]);
    const float4 b = *reinterpret_cast<const float4*>(&ws[kk][tx * 4]);
    const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
  }
}

// Writes thread (ty, tx)'s 4x4 block of the tile at (m0, n0) to out[M, N], adding bias[n].
__device__ __forceinline__ void tile_store_4x4(const float (&acc)[4][4], int64_t m0, int64_t n0, int ty, int tx,
                                               int64_t M, int64_t N, const float* bias, float* out) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n < N) out[m * N + n] = bias ? acc[i][j] + bias[n] : acc[i][j];
    }
  }
}

// The token id an embedding lookup reads for row t: ids[t], or where from is given and
// from[t] >= 0, row from[t] of the latest draw still on the device (launch_embedding,
// launch_quant_embedding).
__device__ __forceinline__ int32_t lookup_id(const int32_t* ids, const int32_t* from, const int32_t* drawn, int64_t t) {
  const int32_t src = from ? from[t] : -1;
  return src >= 0 ? drawn[src] : ids[t];
}

// The RMSNorm factor of n values whose squares sum to ss (summed in double), rounded as every
// norm kernel and the CPU reference round it.
__device__ __forceinline__ float rms_inverse(double ss, int64_t n, float eps) {
  return static_cast<float>(1.0 / sqrt(ss / static_cast<double>(n) + eps));
}

// The norm weights one thread of a decode product's block scales by in stage_rms_norm (its
// float4s k = threadIdx.x + i * blockDim.x), loaded before the block waits for its activations:
// they are constant, so their L2 round trip overlaps the previous kernel instead of following
// the sum of squares. `held` is false where they do not fit (stage_rms_norm loads them itself).
struct HeldNormWeights {
  static constexpr int kN = 4;  // float4s per thread: K up to 4 * 4 * blockDim.x
  float4 v[kN];
  bool held = false;
};

__device__ __forceinline__ HeldNormWeights hold_norm_weights(const float* __restrict__ norm_w, int64_t K) {
  HeldNormWeights h;
  const int64_t K4 = K / 4;
  h.held = norm_w != nullptr && K % 4 == 0 && reinterpret_cast<uintptr_t>(norm_w) % 16 == 0 &&
           K4 <= HeldNormWeights::kN * static_cast<int64_t>(blockDim.x);
  if (h.held) {
    const float4* wv = reinterpret_cast<const float4*>(norm_w);
#pragma unroll
    for (int i = 0; i < HeldNormWeights::kN; ++i) {
      const int64_t k = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
      h.v[i] = k < K4 ? wv[k] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
  return h;
}

// RMSNorm's scaling of four elements, rounded as rms_norm_kernel rounds: w * (v * inv).
__device__ __forceinline__ float4 scale4(const float4& v, const float4& w, float inv) {
  return make_float4(__fmul_rn(w.x, __fmul_rn(v.x, inv)), __fmul_rn(w.y, __fmul_rn(v.y, inv)),
                     __fmul_rn(w.z, __fmul_rn(v.z, inv)), __fmul_rn(w.w, __fmul_rn(v.w, inv)));
}

// The decode products' norm prologue: RMSNorm of M rows of K activations, times norm_w, into
// shared memory `xs` ([M][K], 16-byte aligned). Every thread of the block takes part; the caller
// syncs after. Each row is read once, with 16-byte loads where x and norm_w allow (all of them
// issued before the first is used): the row goes to `xs` as it is and its squares into the sum,
// then each thread scales the elements it staged itself. (Reading the row twice with 4-byte
// loads, the sum's loads each waited on in turn, took ~7.5 us of the 8B qkv product's 22.)
template <int M>
__device__ __forceinline__ void stage_rms_norm(const float* __restrict__ x, const float* __restrict__ norm_w,
                                               float eps, int64_t K, float* __restrict__ xs,
                                               const HeldNormWeights* held = nullptr) {
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(norm_w) % 16 == 0;
  const int64_t K4 = K / 4;
  for (int m = 0; m < M; ++m) {
    double ss = 0;
    if (vec) {
      const float4* xv = reinterpret_cast<const float4*>(x + m * K);
      float4* sv = reinterpret_cast<float4*>(xs + m * K);
#pragma unroll 4
      for (int64_t k = threadIdx.x; k < K4; k += blockDim.x) {
        const float4 v = xv[k];
        sv[k] = v;
        ss += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
              static_cast<double>(v.w) * v.w;
      }
    } else {
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = x[m * K + k];
        xs[m * K + k] = v;
        ss += static_cast<double>(v) * v;
      }
    }
    const float inv = rms_inverse(block_sum(ss), K, eps);
    if (vec && held != nullptr && held->held) {
      float4* sv = reinterpret_cast<float4*>(xs + m * K);
#pragma unroll
      for (int i = 0; i < HeldNormWeights::kN; ++i) {
        const int64_t k = threadIdx.x + static_cast<int64_t>(i) * blockDim.x;
        if (k >= K4) break;
        sv[k] = scale4(sv[k], held->v[i], inv);
      }
    } else if (vec) {
      const float4* wv = reinterpret_cast<const float4*>(norm_w);
      float4* sv = reinterpret_cast<float4*>(xs + m * K);
#pragma unroll 4
      for (int64_t k = threadIdx.x; k < K4; k += blockDim.x) {
        sv[k] = scale4(sv[k], wv[k], inv);
      }
    } else {
      for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
        xs[m * K + k] = __fmul_rn(norm_w[k], __fmul_rn(xs[m * K + k], inv));
    }
  }
}

// silu(g) * u, rounded as the CPU reference rounds it (expf, not __expf: the intrinsic is off by
// several ulp for large |g|; no contraction).
__device__ __forceinline__ float silu_times(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

// The epilogue of a product's output column o, shared by the decode and FP8 kernels and rounded
// as the composed ops round: the column sum s plus bias[o] (when there is a bias), stored to *out
// or, accumulating, added to what *out holds (the residual add, one f32 addition).
__device__ __forceinline__ void store_product(float* __restrict__ out, float s, const float* __restrict__ bias,
                                              int64_t o, bool accumulate) {
  const float v = bias ? s + bias[o] : s;
  *out = accumulate ? __fadd_rn(*out, v) : v;
}

// The SwiGLU epilogue of output column o: silu(gate) * up from the gate and up sums, their biases
// at o and o + cols.
__device__ __forceinline__ float swiglu_product(float gate, float up, const float* __restrict__ bias, int64_t o,
                                                int64_t cols) {
  return silu_times(bias ? gate + bias[o] : gate, bias ? up + bias[o + cols] : up);
}

// Asynchronous global -> shared copies (sm_80+), used by the tiled tensor-core kernels.
// Whether the (value, index) candidate (v, i) comes before (bv, bi) in a search for the first
// largest value: a larger value, or an equal one at a smaller index (std::max_element's pick).
__device__ __forceinline__ bool first_largest_beats(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 (or 4) bytes global -> shared without passing through registers; !valid writes zeros and
// reads nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

}  // namespace redhare::cuda
