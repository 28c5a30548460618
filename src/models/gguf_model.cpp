#include "models/gguf_model.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/error.h"

namespace redhare {

std::string find_gguf_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::path(path).extension() == ".gguf" ? path : std::string();
  if (!fs::is_directory(path, ec) || fs::exists(fs::path(path) / "config.json")) return "";
  std::string found;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    if (e.path().extension() != ".gguf") continue;
    if (!found.empty()) fail(path, ": holds more than one .gguf file; name the one to load");
    found = e.path().string();
  }
  return found;
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  ModelConfig c;
  c.model_type = arch;
  if (arch == "llama") c.architecture = "LlamaForCausalLM";
  else if (arch == "qwen2") c.architecture = "Qwen2ForCausalLM";
  else if (arch == "qwen3") c.architecture = "Qwen3ForCausalLM";
  else fail(f.name(), ": GGUF architecture '", arch, "' is not supported (supported: llama, qwen2, qwen3)");
  const std::string p = arch + ".";
  c.hidden_size = f.get_u32(p + "embedding_length");
  c.intermediate_size = f.get_u32(p + "feed_forward_length");
  c.num_layers = f.get_u32(p + "block_count");
  c.num_heads = f.get_u32(p + "attention.head_count");
  c.num_kv_heads = f.get_u32(p + "attention.head_count_kv", static_cast<uint32_t>(c.num_heads));
  c.head_dim = f.get_u32(p + "attention.key_length", static_cast<uint32_t>(c.num_heads ? c.hidden_size / c.num_heads : 0));
  c.max_position_embeddings = f.get_u32(p + "context_length", 2048);
  c.rms_norm_eps = f.get_f32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  c.rope_theta = f.get_f32(p + "rope.freq_base", 10000.0f);
  if (f.contains(p + "rope.scaling.type")) {
    std::string t = f.get_string(p + "rope.scaling.type");
    if (t == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = f.get_f32(p + "rope.scaling.factor", 1.0f);
    } else if (t != "none") {
      fail(f.name(), ": rope scaling '", t, "' in GGUF is not supported");
    }
  }
  if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
    // Llama 3 rope scaling as llama.cpp stores it: one divisor per frequency.
    if (rf->ggml_type != 0 || rf->numel != static_cast<int64_t>(c.head_dim / 2))
      fail(f.name(), ": rope_freqs.weight must be ", c.head_dim / 2, " f32 values");
    Tensor t = f.tensor(*rf);
    c.rope_freq_factors.assign(t.data_as<float>(), t.data_as<float>() + t.numel());
    for (float v : c.rope_freq_factors)
      if (!(v > 0)) fail(f.name(), ": rope_freqs.weight holds a non-positive factor");
  }
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) fail(f.name(), ": no token_embd.weight tensor");
  c.vocab_size = embd->shape[0];
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2" || f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = arch == "qwen3";
  if (f.contains("tokenizer.ggml.eos_token_id")) c.eos_token_ids.push_back(f.get_u32("tokenizer.ggml.eos_token_id"));
  if (f.contains("tokenizer.ggml.bos_token_id")) c.bos_token_id = f.get_u32("tokenizer.ggml.bos_token_id");
  c.dtype = DType::kBF16;  // only used for dummy weights
  for (int64_t v : {c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim})
    if (v <= 0) fail(f.name(), ": model dimensions in the metadata must be positive");
  if (c.num_heads % c.num_kv_heads != 0) fail(f.name(), ": head_count is not a multiple of head_count_kv");
  if (c.head_dim % 2 != 0) fail(f.name(), ": head dimension must be even");
  return c;
}

namespace {

// llama.cpp's converter interleaves the two rotary halves of each q/k head (it rotates adjacent
// pairs); redhare, like transformers, rotates halves. Row 2j + h of a converted head is row
// h * D/2 + j of the original, so the original order is restored by moving rows back.
Tensor unpermute_heads(const Tensor& w, int64_t heads, const std::string& what) {
  const int64_t rows = w.size(0), D = rows / heads;
  if (rows % heads != 0 || D % 2 != 0) fail(what, ": cannot split ", rows, " rows into ", heads, " heads");
  const int64_t row_bytes = dtype_bytes(w.dtype(), w.shape().size() == 2 ? w.size(1) : 1);
  Tensor out = Tensor::empty(w.dtype(), w.shape());
  const uint8_t* src = static_cast<const uint8_t*>(w.data());
  uint8_t* dst = static_cast<uint8_t*>(out.data());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < D / 2; ++j)
      for (int64_t half = 0; half < 2; ++half)
        std::memcpy(dst + (h * D + half * D / 2 + j) * row_bytes, src + (h * D + 2 * j + half) * row_bytes,
                    static_cast<size_t>(row_bytes));
  return out;
}

class GgufWeights final : public WeightSource {
 public:
  GgufWeights(std::shared_ptr<GgufFile> f, const ModelConfig& c) : file_(std::move(f)), config_(c) {}

  bool has(const std::string& name) override { return file_->find_tensor(gguf_name(name)) != nullptr; }

  Tensor get(const std::string& name, const Shape& shape, float) override {
    const std::string g = gguf_name(name);
    const GgufTensorInfo* info = file_->find_tensor(g);
    if (!info) fail(file_->name(), ": no tensor '", g, "' (for ", name, ")");
    Tensor t = file_->tensor(*info);
    // GGUF stores some 1-D tensors of a 2-D parameter's size and vice versa; only the element
    // layout matters, so accept any shape with the same rows and columns.
    if (t.shape() != shape) {
      if (t.numel() != Shape_numel(shape) || t.shape().back() != shape.back())
        fail(file_->name(), ": tensor '", g, "' has shape ", shape_str(t.shape()), ", expected ", shape_str(shape));
      t = t.reshape(shape);
    }
    if (config_.model_type == "llama") {
      if (name.find("self_attn.q_proj.weight") != std::string::npos) return unpermute_heads(t, config_.num_heads, g);
      if (name.find("self_attn.k_proj.weight") != std::string::npos) return unpermute_heads(t, config_.num_kv_heads, g);
    }
    return t;
  }
  std::string describe() const override { return file_->name(); }

 private:
  static int64_t Shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }
  static std::string gguf_name(const std::string& hf) {
    static const std::map<std::string, std::string> kTop = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                            {"model.norm.weight", "output_norm.weight"},
                                                            {"lm_head.weight", "output.weight"}};
    static const std::map<std::string, std::string> kLayer = {
        {"input_layernorm.weight", "attn_norm.weight"},      {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},            {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},            {"self_attn.o_proj.bias", "attn_output.bias"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"},   {"self_attn.k_norm.weight", "attn_k_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},         {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    if (auto it = kTop.find(hf); it != kTop.end()) return it->second;
    const std::string prefix = "model.layers.";
    if (hf.rfind(prefix, 0) == 0) {
      size_t dot = hf.find('.', prefix.size());
      std::string layer = hf.substr(prefix.size(), dot - prefix.size());
      if (auto it = kLayer.find(hf.substr(dot + 1)); it != kLayer.end()) return "blk." + layer + "." + it->second;
    }
    return hf;
  }

  std::shared_ptr<GgufFile> file_;
  ModelConfig config_;
};

}  // namespace

std::unique_ptr<WeightSource> gguf_weight_source(std::shared_ptr<GgufFile> file, const ModelConfig& config) {
  return std::make_unique<GgufWeights>(std::move(file), config);
}

}  // namespace redhare

namespace redhare {

std::string default_model_path() {
  std::string home;
  if (const char* h = std::getenv("REDHARE_HOME"); h && *h) home = h;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) home = std::string(x) + "/redhare";
  else if (const char* u = std::getenv("HOME"); u && *u) home = std::string(u) + "/.cache/redhare";
  else home = ".cache/redhare";
  return home + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string require_default_model() {
  std::string p = default_model_path();
  if (!std::filesystem::exists(p))
    fail("no model given and the default model is not at ", p,
         "; run scripts/fetch_default_model.sh, or name a model (models.ckpt_dir=DIR / --model DIR)");
  return p;
}

}  // namespace redhare
