// The Backend interface: memory and the ops the models need.
//
// Models call only this interface and never see how a backend runs (threads, CUDA streams).
// Activations are f32 on the CPU backend; weights stay in their checkpoint dtype (bf16, f16, f32,
// and block types) and are converted inside the matrix kernels. Every CPU op has a plain reference
// implementation (cpu/ref_ops.h) that the op tests compare the fast one against.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "backends/sampling.h"
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
//
// An FP8 cache (dtype kF8E4M3) stores each token's K (and V) vector of one KV head as e4m3
// bytes x / s with s = max|x| / 448 (s = 1 for an all-zero vector), rounded to nearest even, and
// keeps s in f32 in k_scale / v_scale [num_blocks, block_size, num_kv_heads]; a value reads back
// as e4m3 * s (store_kv_fp8 / load_kv_fp8). 1 + 4 / head_dim bytes per value instead of 2.
struct KvCacheLayer {
  Tensor k;
  Tensor v;
  Tensor k_scale;  // FP8 caches only
  Tensor v_scale;
};

inline constexpr float kKvFp8Max = 448.0f;
// One head vector of D values into e4m3 bytes and its scale (see KvCacheLayer).
void store_kv_fp8(const float* x, int64_t D, uint8_t* dst, float* scale);
void load_kv_fp8(const uint8_t* src, float scale, int64_t D, float* out);

struct KvCacheSpec {
  int64_t num_layers = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 16;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
  int64_t bytes_per_block() const {
    const int64_t scale_bytes = dtype == DType::kF8E4M3 ? 4 : 0;  // one f32 per (token, KV head)
    return 2 * num_layers * block_size * num_kv_heads * (head_dim * dtype_info(dtype).block_bytes + scale_bytes);
  }
};

// A KV cache element type by its setting name: f32, bf16, f16 or fp8 (e4m3 with per-head scales;
// "f8_e4m3" is accepted too). Anything else is an error naming the choices.
DType parse_kv_cache_dtype(const std::string& name);

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

// What fused_linear does with its product p = x' @ w^T (+ bias).
enum class LinearOut {
  kStore,       // out = p
  kAccumulate,  // out += p (a residual add)
  kSiluMul,     // out = silu(p[:, :I]) * p[:, I:] for w = [2I, K], out = [T, I] (SwiGLU)
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
  // A matrix product with its neighbours in a decoder layer folded in: x' = rms_norm(x,
  // *norm_weight, eps) when norm_weight is given, else x; then out is written as `mode` says.
  // The default composes the plain ops; a backend may run the whole of it as one kernel (the
  // CUDA decode path does), rounding each step as the composition does.
  virtual void fused_linear(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w,
                            const Tensor* bias, LinearOut mode, Tensor& out);
  // A decoder layer's gated MLP, added to the residual stream: residual += down(h) with
  // h = silu(g) * u and [g | u] = gate_up(rms_norm(residual, norm_weight)); gate_up: [2I, H],
  // down: [H, I]. act [T, I] f32 is scratch for h. The default composes two fused_linear calls
  // through act; a backend may keep h in another form where the down product would round it to
  // that form anyway (the CUDA backend's tensor-core path keeps it in the weights' 16-bit type).
  virtual void swiglu_mlp(Tensor& residual, const Tensor& norm_weight, float eps, const Tensor& gate_up,
                          const Tensor& down, Tensor& act);
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
  // rope() on the q and k heads of qkv (heads [0, num_heads + num_kv_heads) of head_dim, angles
  // positions[t] * inv_freq[i]), then attention(): one call, so that a backend may rotate K in
  // the same pass that stores it, or rotate inside its attention kernel. Afterwards the q and k
  // heads of qkv are unspecified (rotated in place, or left as they were). The default composes
  // the two ops.
  virtual void rope_attention(Tensor& qkv, const std::vector<int32_t>& positions, const Tensor& inv_freq,
                              KvCacheLayer& cache, const AttentionBatch& batch, const AttentionParams& params,
                              Tensor& out);

  // Draws one token from each of the first rows.size() rows of f32 logits [R, vocab], as
  // sample_row_reference() does; only tokens (and asked-for logprobs) come back to the host.
  // The default copies the rows to the host and runs the reference.
  virtual std::vector<SampledToken> sample_rows(const Tensor& logits, const std::vector<RowSampling>& rows);

  // Overlapped decoding: a host may queue step N + 1 before it has read step N's tokens.
  // draw_rows_async() issues sample_rows()'s draw and returns; the next step's embedding_drawn()
  // takes token t's id from row from_draw[t] of the latest async draw where from_draw[t] >= 0
  // (ids[t] is a placeholder there), before the host has seen it; collect_draw() waits for the
  // oldest async draw not yet collected and returns its tokens as sample_rows() would. At most
  // kMaxDrawsInFlight draws may wait to be collected. The defaults draw at once and keep the
  // tokens (the same results, nothing overlapped); overlaps_draws() says whether the backend
  // really runs ahead.
  static constexpr int kMaxDrawsInFlight = 2;
  virtual bool overlaps_draws() const { return false; }
  virtual void draw_rows_async(const Tensor& logits, const std::vector<RowSampling>& rows);
  virtual std::vector<SampledToken> collect_draw();
  virtual void embedding_drawn(const Tensor& table, const std::vector<int32_t>& ids,
                               const std::vector<int32_t>& from_draw, Tensor& out);

  // Graphs: a forward step's ops recorded once and replayed (CUDA graphs). Replays read the
  // step's index arrays from fixed device buffers, so before every capture and replay the model
  // stages them with graph_stage (which also checks them against `kv`, since a replay runs no op
  // checks). Ops issued between graph_capture_begin and graph_capture_end are recorded, not run;
  // their index arrays must equal the staged ones. Padding tokens are allowed in a staged batch:
  // slot -1, and a sequence of one such token may have context 0 (see attention()).
  // A backend without graphs keeps these defaults.
  virtual bool supports_graphs() const { return false; }
  // from_draw: embedding_drawn()'s rows of the latest async draw (-1: the id in token_ids).
  // draw: the draw that will follow the replay, where the replay may make it itself (see
  // graph_capture_draw): the first greedy_rows logit rows, every one plain greedy, drawn by
  // draw_rows_async when `async`, else by sample_rows. Zero rows: no such draw.
  struct GraphDraw {
    int64_t greedy_rows = 0;
    bool async = false;
  };
  virtual void graph_stage(const std::vector<int32_t>& token_ids, const std::vector<int32_t>& from_draw,
                           const std::vector<int32_t>& positions, const AttentionBatch& attn,
                           const std::vector<int32_t>& rows, const KvCache& kv, const GraphDraw& draw);
  virtual void graph_capture_begin();
  // Called last in a capture, with the captured step's logits: a backend may record there the
  // greedy draw graph_stage announces, so that a replay staged with one draws its tokens inside
  // the graph; the draw_rows_async or sample_rows call that follows, on the same logits and rows,
  // then only hands them over. Draws that do not match are made as usual. Default: nothing.
  virtual void graph_capture_draw(const Tensor& /*logits*/) {}
  virtual void graph_capture_end(int64_t key);
  // Ends a capture that failed part-way; nothing is kept.
  virtual void graph_capture_abort() {}
  // Launches the graph recorded under `key`; false when there is none (never captured, or
  // dropped by graph_clear or by staging that needed larger buffers).
  virtual bool graph_replay(int64_t /*key*/) { return false; }
  virtual void graph_clear() {}

 private:
  // The default async draws: their tokens, drawn at once, until collected; the latest's ids.
  std::deque<std::vector<SampledToken>> drawn_;
  std::vector<int32_t> latest_draw_;
};

// The CPU backend: `reference` selects the plain scalar ops instead of the fast ones.
std::unique_ptr<Backend> make_cpu_backend(bool reference = false);
// Block-quantized (GGUF) weights on the CPU: by default activations stay f32 and weights are
// dequantized in registers, matching the float model; `on` switches to 8-bit activations with
// integer dot products (llama.cpp's approach: faster prefill, logits off by a few tenths).
void set_cpu_int8_activations(bool on);

}  // namespace redhare
