// CPU ops, each in two versions with one signature: `ref` is the plain, single-threaded,
// double-accumulating definition that tests trust; `fast` is what the CPU backend runs
// (threaded, vectorized, kernels picked from the CPU's features at run time).
#pragma once

#include <vector>

#include "backends/backend.h"

namespace redhare::cpu {

#define REDHARE_CPU_OPS                                                                          \
  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);            \
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);                 \
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,         \
                    Tensor& out);                                                               \
  void head_rms_norm(Tensor& x, int64_t head_offset, int64_t num_heads, const Tensor& weight,   \
                     float eps);                                                                \
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out);               \
  void silu_mul(const Tensor& gate_up, Tensor& out);                                            \
  void rope(Tensor& x, int64_t num_heads, int64_t head_dim, const std::vector<int32_t>& positions, \
            const Tensor& inv_freq);                                                            \
  void add(Tensor& out, const Tensor& x);                                                       \
  void attention(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,           \
                 const AttentionParams& params, Tensor& out);

namespace ref {
REDHARE_CPU_OPS
}
namespace fast {
REDHARE_CPU_OPS
}
#undef REDHARE_CPU_OPS

// Shape checks shared by both versions; a failure is a bug in the caller.
void check_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& out);
void check_attention(const Tensor& qkv, const KvCacheLayer& cache, const AttentionBatch& batch,
                     const AttentionParams& params, const Tensor& out);
// One token's K or V row (Hkv heads of D values, f32) into slot `slot` of a cache pool of any
// cache dtype (FP8 pools quantize each head with its own scale, see KvCacheLayer).
void store_kv_row(const float* x, Tensor& pool, Tensor& scales, int64_t slot, int64_t Hkv, int64_t D);
// Head kvh of slot `slot` as f32.
void load_kv_head(const Tensor& pool, const Tensor& scales, int64_t slot, int64_t kvh, int64_t Hkv, int64_t D,
                  float* out);
void set_int8_activations(bool on);
// Copies row `row` of a 2-D tensor (plain float or block-quantized) into dst as f32.
void row_to_f32(const Tensor& t, int64_t row, float* dst);

}  // namespace redhare::cpu
