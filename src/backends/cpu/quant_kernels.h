// Internals shared by the quant kernel files: the 8-bit activation blocks and the per-ISA
// tables of row dot products.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace redhare::quant {

// A quantized activation row for the 32-value weight blocks: block b is x ~= d[b] * q[32b..],
// and sum[b] = sum(q of block b), so the weight offsets (-8 for Q4_0, -16 for Q5_0) and mins
// (Q4_1, Q5_1) fold in without touching the values again. The values of all blocks are stored
// first and contiguously so that one 512-bit load covers two blocks; then the k / 32 scales, the
// k / 32 sums, and each block's -sum repeated 8 times: loaded as the starting value of a 32-bit
// lane accumulator, it takes the Q4_0 offset off with no extra instruction.
struct ActRow32 {
  const int8_t* q;
  const float* d;
  const int32_t* sum;
  const int32_t* neg_sum8;
};
inline ActRow32 act_row32(const void* act, int64_t k) {
  const auto* q = static_cast<const int8_t*>(act);
  const auto* d = reinterpret_cast<const float*>(q + k);
  const auto* sum = reinterpret_cast<const int32_t*>(d + k / 32);
  return {q, d, sum, sum + k / 32};
}

// An activation block for the 256-value K types; `bsums` are the sums of each 16 values, which
// is the granularity of the K types' offsets and mins.
struct ActBlock256 {
  float d;
  int16_t bsums[16];
  int8_t q[256];
};

// Values per activation block for weights of type t (32 or 256), or 0 for the float types,
// which use the activations as they are.
int act_block_elems(DType t);
// Bytes of quantized activations for one row of k values.
int64_t act_row_bytes(DType t, int64_t k);
// Quantizes one activation row of k values (a whole number of blocks) for weights of type t.
void quantize_act_row(DType t, const float* x, int64_t k, void* out);

// Dot product of one weight row (k values) with one prepared activation row: for the float
// types `act` is the f32 row itself; for the block types it is quantize_act_row's output.
using RowDot = float (*)(const uint8_t* w, const void* act, int64_t k);

// Quantizes one activation row of k values for the 32-value or the 256-value weight blocks, with
// the same result as quantize_act_row.
using QuantizeRow = void (*)(const float* x, int64_t k, void* out);

struct KernelTable {
  RowDot dot[static_cast<int>(DType::kCount)] = {};
  QuantizeRow quantize32 = nullptr;
  QuantizeRow quantize256 = nullptr;
};

// Built in quant_avx2.cpp and quant_avx512.cpp, each with its own target attributes; only
// called after the CPU has been checked for the features.
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();

}  // namespace redhare::quant
