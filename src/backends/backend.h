// The Backend interface: memory and the ops the models need.
//
// Models call only this interface and never see how a backend runs (threads, CUDA streams).
// Activations are f32 on the CPU backend; weights stay in their checkpoint dtype (bf16, f16, f32,
// and block types) and are converted inside the matrix kernels. Every CPU op has a plain reference
// implementation (cpu/ref_ops.h) that the op tests compare the fast one against.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace redhare {

// Where each token of one forward step sits in the paged KV cache, and which cached tokens each
// sequence attends to. Host-side; a device backend uploads what it needs.
struct AttentionBatch {
  int32_t num_seqs = 0;
  std::vector<int32_t> query_start;   // [num_seqs + 1]: sequence s owns token rows [qs[s], qs[s+1])
  std::vector<int32_t> context_lens;  // [num_seqs]: cached tokens after this step, new ones included
  std::vector<int32_t> block_tables;  // [num_seqs * max_blocks]: physical block of each logical one
  int32_t max_blocks = 0;
  std::vector<int32_t> slot_mapping;  // [num_tokens]: block * block_size + offset of each new token

  int32_t num_tokens() const { return query_start.empty() ? 0 : query_start.back(); }
};

// One layer's K and V pools: [num_blocks, block_size, num_kv_heads, head_dim] each.
struct KvCacheLayer {
  Tensor k;
  Tensor v;
};

struct KvCacheSpec {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 16;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
  int64_t bytes_per_block() const {
    return 2 * num_layers * block_size * num_kv_heads * head_dim *
           dtype_info(dtype).block_bytes;
  }
};

struct KvCache {
  KvCacheSpec spec;
  std::vector<KvCacheLayer> layers;
};

struct AttentionParams {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;
  int64_t sliding_window = 0;  // 0 = attend to the whole context
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // Memory. alloc() returns zeroed memory; upload() makes a host tensor usable by the ops
  // (a no-op on the CPU); to_host() copies back.
  virtual Tensor alloc(DType dtype, Shape shape) = 0;
  virtual Tensor upload(const Tensor& host) = 0;
  virtual Tensor to_host(const Tensor& t) = 0;
  virtual KvCache alloc_kv_cache(const KvCacheSpec& spec);
  // Memory this backend could still allocate (CPU: the system's available memory).
  virtual int64_t free_memory_bytes() const = 0;

  // out[t, :] = table[ids[t], :] (any plain float dtype table, f32 out).
  virtual void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) = 0;
  // out = x / rms(x) * weight, per row.
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // residual += x; out = rms_norm(residual). The residual add fused with the next norm.
  virtual void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                            Tensor& out) = 0;
  // In place: RMSNorm over each of `num_heads` heads of width weight.numel() starting at column
  // head_offset * head_dim of every row (Qwen3's per-head q/k norm).
  virtual void head_rms_norm(Tensor& x, int64_t head_offset, int64_t num_heads,
                             const Tensor& weight, float eps) = 0;
  // out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]).
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) = 0;
  // out[t, i] = silu(gu[t, i]) * gu[t, I + i], gu = [T, 2I].
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;
  // In place, rotate-half RoPE on heads [0, num_heads) of width head_dim in each row of x, with
  // angle positions[t] * inv_freq[i].
  virtual void rope(Tensor& x, int64_t num_heads, int64_t head_dim,
                    const std::vector<int32_t>& positions, const Tensor& inv_freq) = 0;
  // out += x.
  virtual void add(Tensor& out, const Tensor& x) = 0;
  // out[i, :] = x[rows[i], :].
  virtual void gather_rows(const Tensor& x, const std::vector<int32_t>& rows, Tensor& out) = 0;
  // Writes the K and V of each new token (columns after the q heads of the fused qkv rows) into
  // their slots, then computes causal attention of each query over its sequence's cached K/V.
  // qkv: [T, (H + 2 * Hkv) * D], out: [T, H * D].
  virtual void attention(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,
                         const AttentionParams& params, Tensor& out) = 0;
};

// The CPU backend: `reference` selects the plain scalar ops instead of the fast ones.
std::unique_ptr<Backend> make_cpu_backend(bool reference = false);
// Block-quantized (GGUF) weights on the CPU: by default activations stay f32 and weights are
// dequantized in registers, matching the float model; `on` switches to 8-bit activations with
// integer dot products (llama.cpp's approach: faster prefill, logits off by a few tenths).
void set_cpu_int8_activations(bool on);

}  // namespace redhare
