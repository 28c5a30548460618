// The Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM.
//
// One pre-norm decoder: RMSNorm -> attention (GQA/MQA, RoPE, optional q/k/v bias, optional
// per-head q/k RMSNorm, optional sliding window) -> residual -> RMSNorm -> SwiGLU MLP -> residual.
// q/k/v and gate/up projections are fused into one matrix each at load time, so each layer runs
// four matrix products.
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "models/model.h"
#include "models/rope.h"

namespace redhare {
namespace {

struct LayerWeights {
  Tensor input_norm, post_norm;  // f32 [H]
  Tensor qkv, qkv_bias;          // [(Hq + 2 Hkv) D, H], bias f32 or undefined
  Tensor q_norm, k_norm;         // f32 [D] (Qwen3)
  Tensor o, o_bias;              // [H, Hq D]
  Tensor gate_up;                // [2 I, H]
  Tensor down;                   // [H, I]
};

Tensor to_f32_tensor(const Tensor& t) { return Tensor::from_f32(t.to_f32_vector(), t.shape()); }

// Stacks matrices with equal column counts into one new host tensor.
Tensor concat_rows(const std::vector<Tensor>& parts, const std::string& what) {
  DType dt = parts[0].dtype();
  int64_t rows = 0, cols = parts[0].size(-1);
  for (const Tensor& p : parts) {
    if (p.dtype() != dt)
      fail(what, ": the fused parts have different dtypes (", dtype_name(dt), " and ",
           dtype_name(p.dtype()), ")");
    rows += p.dim() == 1 ? p.size(0) : p.size(0);
  }
  Shape shape = parts[0].dim() == 1 ? Shape{rows} : Shape{rows, cols};
  Tensor out = Tensor::empty(dt, shape);
  uint8_t* dst = static_cast<uint8_t*>(out.data());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data(), static_cast<size_t>(p.nbytes()));
    dst += p.nbytes();
  }
  return out;
}

class LlamaModel final : public Model {
 public:
  LlamaModel(const ModelConfig& c, WeightSource& ws, Backend& backend)
      : Model(c), backend_(backend) {
    const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
    const int64_t I = c.intermediate_size, V = c.vocab_size;
    const float sH = 1.0f / std::sqrt(static_cast<float>(H));
    auto get = [&](const std::string& name, const Shape& shape, float scale) {
      Tensor t = ws.get(name, shape, scale);
      count_weight(t);
      return t;
    };
    auto norm = [&](const std::string& name, int64_t n) {
      return backend_.upload(to_f32_tensor(get(name, {n}, 0.0f)));
    };
    embed_ = backend_.upload(get("model.embed_tokens.weight", {V, H}, 1.0f));
    embedding_bytes_ = embed_.nbytes();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LayerWeights w;
      w.input_norm = norm(p + "input_layernorm.weight", H);
      w.post_norm = norm(p + "post_attention_layernorm.weight", H);
      Tensor q = get(p + "self_attn.q_proj.weight", {Hq * D, H}, sH);
      Tensor k = get(p + "self_attn.k_proj.weight", {Hkv * D, H}, sH);
      Tensor v = get(p + "self_attn.v_proj.weight", {Hkv * D, H}, sH);
      w.qkv = backend_.upload(concat_rows({q, k, v}, p + "self_attn qkv"));
      if (c.attention_bias) {
        Tensor qb = to_f32_tensor(get(p + "self_attn.q_proj.bias", {Hq * D}, sH));
        Tensor kb = to_f32_tensor(get(p + "self_attn.k_proj.bias", {Hkv * D}, sH));
        Tensor vb = to_f32_tensor(get(p + "self_attn.v_proj.bias", {Hkv * D}, sH));
        w.qkv_bias = backend_.upload(concat_rows({qb, kb, vb}, p + "self_attn qkv bias"));
      }
      if (c.qk_norm) {
        w.q_norm = norm(p + "self_attn.q_norm.weight", D);
        w.k_norm = norm(p + "self_attn.k_norm.weight", D);
      }
      w.o = backend_.upload(get(p + "self_attn.o_proj.weight", {H, Hq * D},
                                1.0f / std::sqrt(static_cast<float>(Hq * D))));
      // Llama's attention_bias covers o_proj too; Qwen2's does not.
      if (c.attention_bias && ws.has(p + "self_attn.o_proj.bias"))
        w.o_bias = backend_.upload(to_f32_tensor(get(p + "self_attn.o_proj.bias", {H}, sH)));
      Tensor gate = get(p + "mlp.gate_proj.weight", {I, H}, sH);
      Tensor up = get(p + "mlp.up_proj.weight", {I, H}, sH);
      w.gate_up = backend_.upload(concat_rows({gate, up}, p + "mlp gate/up"));
      w.down = backend_.upload(
          get(p + "mlp.down_proj.weight", {H, I}, 1.0f / std::sqrt(static_cast<float>(I))));
      layers_.push_back(std::move(w));
    }
    final_norm_ = norm("model.norm.weight", H);
    if (c.tie_word_embeddings) {
      lm_head_ = embed_;
    } else {
      lm_head_ = backend_.upload(get("lm_head.weight", {V, H}, sH));
    }
    std::vector<float> f = rope_inv_freq(c);
    inv_freq_ = backend_.upload(Tensor::from_f32(f, {static_cast<int64_t>(f.size())}));
    attn_.num_heads = Hq;
    attn_.num_kv_heads = Hkv;
    attn_.head_dim = D;
    attn_.scale = 1.0f / std::sqrt(static_cast<float>(D));
    attn_.sliding_window = c.sliding_window;
  }

  Tensor forward(const ForwardBatch& b, KvCache& kv) override {
    const ModelConfig& c = config_;
    const int64_t T = static_cast<int64_t>(b.token_ids.size());
    RH_CHECK(T > 0 && static_cast<int64_t>(b.positions.size()) == T && b.attn.num_tokens() == T,
             "inconsistent forward batch");
    RH_CHECK(static_cast<int64_t>(kv.layers.size()) == c.num_layers, "kv cache has wrong layer count");
    for (int32_t id : b.token_ids)
      if (id < 0 || id >= c.vocab_size) fail("token id ", id, " is outside the vocabulary (", c.vocab_size, ")");
    RH_CHECK(b.from_draw.empty() || static_cast<int64_t>(b.from_draw.size()) == T, "forward: ", b.from_draw.size(),
             " draw rows for ", T, " tokens");
    Tensor logits;
    if (DecodeGraphs::eligible(b, backend_)) {
      logits = graphs_.run(b, kv, backend_, c.vocab_size,
                           [this](const ForwardBatch& p, KvCache& k, Tensor& out) { step(p, k, out); });
    } else {
      logits = backend_.alloc(DType::kF32, {static_cast<int64_t>(b.logit_rows.size()), c.vocab_size});
      step(b, kv, logits);
    }
    const int64_t sampled = static_cast<int64_t>(b.sampling.size());
    if (b.draw_async) {
      RH_CHECK(sampled > 0 && sampled == logits.size(0), "forward: an async draw of ", sampled, " rows of ",
               logits.size(0));
      backend_.draw_rows_async(logits, b.sampling);
      return Tensor::empty(DType::kF32, {0, c.vocab_size});
    }
    if (sampled == 0) return backend_.to_host(logits);
    RH_CHECK(b.sampled && sampled <= logits.size(0), "forward: ", sampled, " rows to sample of ", logits.size(0));
    *b.sampled = backend_.sample_rows(logits, b.sampling);
    return sampled == logits.size(0) ? Tensor::empty(DType::kF32, {0, c.vocab_size})
                                     : backend_.to_host(logits.slice_rows(sampled, logits.size(0)));
  }

 private:
  // One forward step into `logits` [logit_rows, vocab] on the backend; only backend ops, so that
  // a graph can record it.
  void step(const ForwardBatch& b, KvCache& kv, Tensor& logits) {
    const ModelConfig& c = config_;
    const int64_t T = static_cast<int64_t>(b.token_ids.size());
    const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
    const int64_t I = c.intermediate_size;
    const float eps = static_cast<float>(c.rms_norm_eps);
    Backend& be = backend_;
    // The residual stream stays in `residual`; each norm is folded into the product after it,
    // and the o and down products add into the stream (Backend::fused_linear, Backend::swiglu_mlp).
    Tensor residual = be.alloc(DType::kF32, {T, H});
    Tensor qkv = be.alloc(DType::kF32, {T, (Hq + 2 * Hkv) * D});
    Tensor attn_out = be.alloc(DType::kF32, {T, Hq * D});
    Tensor act = be.alloc(DType::kF32, {T, I});
    if (b.from_draw.empty()) be.embedding(embed_, b.token_ids, residual);
    else be.embedding_drawn(embed_, b.token_ids, b.from_draw, residual);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      LayerWeights& w = layers_[static_cast<size_t>(l)];
      be.fused_linear(residual, &w.input_norm, eps, w.qkv, w.qkv_bias.data() ? &w.qkv_bias : nullptr,
                      LinearOut::kStore, qkv);
      if (c.qk_norm) {
        be.head_rms_norm(qkv, 0, Hq, w.q_norm, eps);
        be.head_rms_norm(qkv, Hq, Hkv, w.k_norm, eps);
      }
      be.rope_attention(qkv, b.positions, inv_freq_, kv.layers[static_cast<size_t>(l)], b.attn, attn_, attn_out);
      be.fused_linear(attn_out, nullptr, 0, w.o, w.o_bias.data() ? &w.o_bias : nullptr, LinearOut::kAccumulate,
                      residual);
      be.swiglu_mlp(residual, w.post_norm, eps, w.gate_up, w.down, act);
    }
    const int64_t R = static_cast<int64_t>(b.logit_rows.size());
    Tensor last = be.alloc(DType::kF32, {R, H});
    be.gather_rows(residual, b.logit_rows, last);
    Tensor normed = be.alloc(DType::kF32, {R, H});
    be.rms_norm(last, final_norm_, eps, normed);
    be.linear(normed, lm_head_, nullptr, logits);
  }
  Backend& backend_;
  DecodeGraphs graphs_;
  Tensor embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<LayerWeights> layers_;
  AttentionParams attn_;
};

}  // namespace

int64_t estimate_parameters(const ModelConfig& c) {
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  int64_t layer = H * (Hq + 2 * Hkv) * D + Hq * D * H + 3 * H * I + 2 * H;
  if (c.attention_bias) layer += (Hq + 2 * Hkv) * D;
  if (c.qk_norm) layer += 2 * D;
  return V * H * (c.tie_word_embeddings ? 1 : 2) + c.num_layers * layer + H;
}

void register_llama_family() {
  ModelFactory f = [](const ModelConfig& c, WeightSource& ws, Backend& be) -> std::unique_ptr<Model> {
    return std::make_unique<LlamaModel>(c, ws, be);
  };
  for (const char* name : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                           "Qwen3ForCausalLM"})
    register_architecture(name, f);
}

}  // namespace redhare
