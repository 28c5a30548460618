// Device helpers of the FP8 (kF8B128) kernels (kernels_fp8_mma.cu, kernels_fp8_decode.cu,
// kernels_quant.cu): the device layout, the f16 mma, e4m3 to f16 conversion, and the activations as the W8A16
// numerics stage them (see kernels_fp8_mma.cu's opening comment).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

namespace redhare::cuda {

constexpr int kBK = 128;  // values per FP8 block (the tensor-core kernels' k-tile)

// kF8B128 weights [N, K] on the device (kernels.h, fp8_blocks_to_device_layout): the e4m3 bytes
// row-major from the start, then the f32 block scales block-major (row n's scale of block kb at
// kb * N + n: cuBLASLt's VEC128_32F layout for the weight operand), then, for block-scaled weights,
// the scales once per 128 x 128 block (cuBLASLt's BLK128x128_32F), then zeros up to the host size.
// Rows start 128-byte aligned; the scales of neighbouring rows share cache lines.
struct Fp8Rows {
  const uint8_t* q;
  const float* s;
  int64_t N, K;
  __host__ __device__ Fp8Rows(const void* w, int64_t n, int64_t k)
      : q(static_cast<const uint8_t*>(w)), s(reinterpret_cast<const float*>(q + n * k)), N(n), K(k) {}
  __device__ __forceinline__ const uint8_t* row(int64_t n) const { return q + n * K; }
  __device__ __forceinline__ const float* scale_ptr(int64_t n, int64_t kb) const { return s + kb * N + n; }
  __device__ __forceinline__ float scale(int64_t n, int64_t kb) const { return __ldg(scale_ptr(n, kb)); }
};

// d += a * b on one m16n8k16 tile (row-major A 16x16, column-major B 16x8, f16 in, f32 C).
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 890
// The integer route from e4m3 to f32 (GPUs before sm_89): the byte's exponent and mantissa moved
// under an f32 sign read as the value times 2^-120 (subnormals included), and times 2^120 is exact.
__device__ __forceinline__ float e4m3_to_f32_int(uint32_t b) {
  return __uint_as_float(((b & 0x80u) << 24) | ((b & 0x7Fu) << 20)) * 1.329227995784916e36f;
}
#endif

// Two e4m3 bytes (low 16 bits of `pair`, first value in the low byte) as two f16, exactly: every
// e4m3 value is a normal f16 or 0. sm_89+: the paired hardware conversion, one instruction.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t pair) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xFFFFu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
#else
  const __half2 p = __floats2half2_rn(e4m3_to_f32_int(pair & 0xFFu), e4m3_to_f32_int((pair >> 8) & 0xFFu));
  return *reinterpret_cast<const uint32_t*>(&p);
#endif
}

// An activation as the kernels see it: x (or its RMSNorm times norm_w, rounded as the norm
// kernels round it) rounded to bf16.
__device__ __forceinline__ float staged_value(float x, const float* __restrict__ norm_w, int64_t k, float inv) {
  const float v = norm_w ? __fmul_rn(norm_w[k], __fmul_rn(x, inv)) : x;
  return __bfloat162float(__float2bfloat16_rn(v));
}

// The f16 staging's row factor: 2^e with the row's largest |value| times 2^-e in [2^15, 2^16), so
// every value within 2^-29 of it is a normal f16 after the (exact) scaling, and its 8 bits fit.
__device__ __forceinline__ int row_exponent(float mx) {
  if (!(mx > 0.0f) || !isfinite(mx)) return 0;
  return min(max(ilogbf(mx) - 15, -100), 112);
}

}  // namespace redhare::cuda
