// Block-quantized weights on the CPU: reference dequantization and matmul, and fast kernels.
//
// The block layouts are ggml's (as stored in GGUF files): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 hold 32
// values per block with an f16 scale (and min); Q4_K, Q5_K, Q6_K hold 256 values per super-block
// with 6- or 8-bit sub-block scales. F32, F16 and BF16 go through the same entry points so a
// caller can treat every weight type alike.
//
// The fast kernels never expand the weights to floats. They quantize each activation row to 8
// bits (per 32 values for the 32-blocks, per 256 for the K types, scale = max|x| / 127) and take
// integer dot products on the packed blocks; the result differs from the reference by at most
// sum_j |W[r,j]| * scale_of_block(j) / 2 (the activation rounding error), plus float rounding.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace redhare {

// Whether the quant kernels handle weights of this type: f32, f16, bf16 and the block types.
bool quant_supported(DType t);

// Expands `n` elements (a whole number of blocks) of type `t` to f32. Plain and obviously right:
// the fast kernels and the tests compare against it.
void dequantize_row_ref(DType t, const void* src, float* dst, int64_t n);

// y[i * n_rows + r] = sum_j x[i * k + j] * W[r, j] for i < m, r < n_rows, where W is `n_rows`
// contiguous rows of `k` elements of type `t` (k a whole number of blocks). Accumulates in
// double from the dequantized weights and the exact activations.
void quant_matmul_ref(DType t, const void* w, int64_t n_rows, int64_t k, const float* x, int64_t m,
                      float* y);

// The instruction sets the fast kernels are built for.
enum class QuantIsa { kScalar, kAvx2, kAvx512 };
std::string_view quant_isa_name(QuantIsa isa);
// The best one this CPU runs (chosen once from its feature flags).
QuantIsa quant_best_isa();
bool quant_isa_available(QuantIsa isa);

// The fast kernel: same contract as quant_matmul_ref, multithreaded over rows on
// ThreadPool::global(), using quant_best_isa().
void quant_matmul(DType t, const void* w, int64_t n_rows, int64_t k, const float* x, int64_t m,
                  float* y);
// The same on a chosen instruction set (for tests and benchmarks); it must be available.
void quant_matmul_isa(QuantIsa isa, DType t, const void* w, int64_t n_rows, int64_t k,
                      const float* x, int64_t m, float* y);

}  // namespace redhare
