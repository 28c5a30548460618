// Per-ISA entry points of the f32-activation matrix kernel (see linear_kernel.inl).
// wtype: 0 = f32, 1 = bf16, 2 = f16 weights. Computes rows [n0, n1) of y[M, N];
// scratch holds 4 * K floats.
#pragma once

#include <cstdint>

namespace redhare::cpu {

using LinearRangeFn = void (*)(int wtype, const void* w, const float* x, int64_t M, int64_t K,
                               float* y, int64_t N, const float* bias, int64_t n0, int64_t n1,
                               float* scratch);

void linear_range_avx512(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                         int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch);
void linear_range_avx2(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                       int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch);
void linear_range_scalar(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                         int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch);

// The best kernel this CPU runs; `name` receives "avx512", "avx2" or "scalar".
LinearRangeFn select_linear_kernel(const char** name = nullptr);

// Block-quantized weights with f32 activations (see linear_kernel.inl). qtype selects a SIMD
// dequantization; any other type goes through `fallback`. row_bytes is one packed row; scratch
// holds 4 * K floats.
enum QuantCode { kQuantOther = 0, kQuantQ8_0 = 1, kQuantQ4_0 = 2, kQuantQ4_1 = 3, kQuantQ4_K = 4 };
using DequantRowFn = void (*)(const void* src, float* dst, int64_t n);
using LinearBlockFn = void (*)(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                               const float* x, int64_t M, int64_t K, float* y, int64_t N,
                               const float* bias, int64_t n0, int64_t n1, float* scratch);
void linear_range_block_avx512(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                               const float* x, int64_t M, int64_t K, float* y, int64_t N,
                               const float* bias, int64_t n0, int64_t n1, float* scratch);
void linear_range_block_avx2(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                             const float* x, int64_t M, int64_t K, float* y, int64_t N,
                             const float* bias, int64_t n0, int64_t n1, float* scratch);
void linear_range_block_scalar(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                               const float* x, int64_t M, int64_t K, float* y, int64_t N,
                               const float* bias, int64_t n0, int64_t n1, float* scratch);
LinearBlockFn select_linear_block_kernel();

}  // namespace redhare::cpu
