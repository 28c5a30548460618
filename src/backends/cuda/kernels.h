// Launchers of the CUDA kernels, one per Backend op. Pointers are device memory; every launcher
// enqueues on `stream` and checks the launch. Shapes were checked by the caller (cuda_backend.cpp).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "core/dtype.h"

namespace redhare::cuda {

// The weight and KV element types the kernels are compiled for.
enum class Elem : int { kF32, kF16, kBF16 };

void launch_embedding(const void* table, Elem type, const int32_t* ids, int64_t tokens,
                      int64_t hidden, float* out, cudaStream_t stream);
// residual == nullptr: out = rms_norm(x). Otherwise residual += x first, then out = rms_norm(residual).
void launch_rms_norm(float* residual, const float* x, const float* weight, float eps, int64_t rows,
                     int64_t n, float* out, cudaStream_t stream);
void launch_head_rms_norm(float* x, int64_t rows, int64_t cols, int64_t first_col,
                          int64_t num_heads, int64_t head_dim, const float* weight, float eps,
                          cudaStream_t stream);
void launch_linear(const float* x, const void* w, Elem w_type, const float* bias, int64_t M,
                   int64_t N, int64_t K, float* out, cudaStream_t stream);
// Block-quantized (GGUF) weights, f32 activations and output (kernels_quant.cu). Rows hold K / block
// values in whole blocks; the pointer must be 16-byte aligned and kBlockPadBytes past its end must be
// readable (the kernels load whole aligned words around unaligned fields).
constexpr int64_t kBlockPadBytes = 16;
// From this many output rows the decode kernel gives each warp four weight rows (see
// kernels_quant.cu); the tests cover both sides.
constexpr int64_t kQuantGemvWideRows = 8192;
bool quant_kernel_supported(DType t);
void launch_quant_linear(const float* x, const void* w, DType w_type, const float* bias, int64_t M,
                         int64_t N, int64_t K, float* out, cudaStream_t stream);
// out[t, :] = dequantized table row ids[t] (bitwise the CPU reference's values).
void launch_quant_embedding(const void* table, DType type, const int32_t* ids, int64_t tokens,
                            int64_t hidden, float* out, cudaStream_t stream);
void launch_silu_mul(const float* gate_up, int64_t tokens, int64_t inter, float* out,
                     cudaStream_t stream);
void launch_rope(float* x, int64_t tokens, int64_t cols, int64_t num_heads, int64_t head_dim,
                 const int32_t* positions, const float* inv_freq, cudaStream_t stream);
void launch_add(float* out, const float* x, int64_t n, cudaStream_t stream);
void launch_gather_rows(const float* x, const int32_t* rows, int64_t num_rows, int64_t cols,
                        float* out, cudaStream_t stream);

// Device copies of an AttentionBatch's index arrays (see cuda_backend.cpp for the packing).
struct AttentionMeta {
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs * max_blocks]
  const int32_t* slot_mapping;  // [tokens]
  const int32_t* token_seq;     // [tokens]: the sequence each token row belongs to
  int32_t max_blocks;
  int32_t tokens;
};

struct AttentionShape {
  int32_t num_heads, num_kv_heads, head_dim, block_size;
  float scale;
  int32_t sliding_window;  // 0 = whole context
};

// Stores each new token's K and V (columns after the q heads of its qkv row) into its slot, then
// computes causal attention of every query over its sequence's cached keys.
void launch_attention(const float* qkv, void* k_cache, void* v_cache, Elem kv_type,
                      const AttentionMeta& meta, const AttentionShape& shape, float* out,
                      cudaStream_t stream);

}  // namespace redhare::cuda
