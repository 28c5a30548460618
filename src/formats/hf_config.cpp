#include "formats/hf_config.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace redhare {
namespace {

using json = nlohmann::json;

class Reader {
 public:
  Reader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail(source_, ": '", key, "' ", what);
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t integer(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
    if (!has(key)) {
      if (def) return *def;
      bad(key, "is missing");
    }
    const json& v = j_[key];
    if (!v.is_number_integer()) bad(key, "must be an integer");
    return v.get<int64_t>();
  }
  int64_t positive(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
    int64_t v = integer(key, def);
    if (v <= 0 || v > (int64_t{1} << 31)) bad(key, "must be a positive integer, got " + std::to_string(v));
    return v;
  }
  double number(const std::string& key, double def) const {
    if (!has(key)) return def;
    const json& v = j_[key];
    if (!v.is_number()) bad(key, "must be a number");
    return v.get<double>();
  }
  bool boolean(const std::string& key, bool def) const {
    if (!has(key)) return def;
    const json& v = j_[key];
    if (!v.is_boolean()) bad(key, "must be true or false");
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = j_[key];
    if (!v.is_string()) bad(key, "must be a string");
    return v.get<std::string>();
  }
  // eos_token_id may be one integer or a list of them.
  std::vector<int64_t> id_list(const std::string& key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = j_[key];
    if (v.is_number_integer()) {
      out.push_back(v.get<int64_t>());
    } else if (v.is_array()) {
      for (const json& e : v) {
        if (!e.is_number_integer()) bad(key, "must hold integers");
        out.push_back(e.get<int64_t>());
      }
    } else {
      bad(key, "must be an integer or a list of integers");
    }
    return out;
  }

 private:
  const json& j_;
  std::string source_;
};

json parse_object(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(source, ": not valid JSON");
  if (!j.is_object()) fail(source, ": not a JSON object");
  return j;
}

void parse_rope(const json& j, const std::string& source, ModelConfig& c) {
  // transformers 4.x writes rope_theta + rope_scaling; 5.x writes one rope_parameters object.
  const json* rope = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) rope = &j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) rope = &j["rope_scaling"];
  Reader top(j, source);
  c.rope_theta = top.number("rope_theta", 10000.0);
  if (!rope) return;
  Reader r(*rope, source + " rope parameters");
  c.rope_theta = r.number("rope_theta", c.rope_theta);
  std::string type = r.string("rope_type", r.string("type", "default"));
  c.rope_scaling.type = type;
  if (type == "default") return;
  c.rope_scaling.factor = r.number("factor", 1.0);
  if (type == "linear") {
    if (c.rope_scaling.factor <= 0) r.bad("factor", "must be positive");
    return;
  }
  if (type == "llama3") {
    c.rope_scaling.low_freq_factor = r.number("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = r.number("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        r.positive("original_max_position_embeddings", 8192);
    if (c.rope_scaling.factor <= 0 || c.rope_scaling.low_freq_factor <= 0 ||
        c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
      r.bad("factor", "llama3 scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0");
    return;
  }
  fail(source, ": rope scaling type '", type, "' is not supported (supported: default, linear, llama3)");
}

}  // namespace

ModelConfig ModelConfig::parse(const std::string& text, const std::string& source) {
  json j = parse_object(text, source);
  Reader r(j, source);
  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() || j["architectures"].empty() ||
      !j["architectures"][0].is_string())
    r.bad("architectures", "must be a non-empty list of names");
  c.architecture = j["architectures"][0].get<std::string>();
  c.model_type = r.string("model_type", "");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_layers = r.positive("num_hidden_layers");
  c.num_heads = r.positive("num_attention_heads");
  c.num_kv_heads = r.positive("num_key_value_heads", c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail(source, ": num_attention_heads (", c.num_heads, ") is not a multiple of num_key_value_heads (",
         c.num_kv_heads, ")");
  if (r.has("head_dim")) {
    c.head_dim = r.positive("head_dim");
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail(source, ": hidden_size (", c.hidden_size, ") is not a multiple of num_attention_heads (",
           c.num_heads, ") and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) r.bad("head_dim", "must be even for rotary embeddings");
  c.vocab_size = r.positive("vocab_size");
  c.max_position_embeddings = r.positive("max_position_embeddings", 2048);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "must be positive");
  parse_rope(j, source, c);
  if (!(c.rope_theta > 0)) r.bad("rope_theta", "must be positive");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.hidden_act = r.string("hidden_act", "silu");
  if (c.hidden_act != "silu")
    r.bad("hidden_act", "is '" + c.hidden_act + "'; only 'silu' is supported");
  std::string dt = r.string("dtype", r.string("torch_dtype", "bfloat16"));
  if (!dtype_from_torch_name(dt, &c.dtype)) r.bad("torch_dtype", "'" + dt + "' is not supported");
  c.eos_token_ids = r.id_list("eos_token_id");
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id");
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    const std::string where = source + ": quantization_config";
    if (!q.is_object()) fail(where, " must be an object");
    const std::string method = q.value("quant_method", std::string());
    if (method != "fp8")
      fail(where, ".quant_method '", method, "' is not supported (redhare loads \"fp8\" checkpoints)");
    Fp8Quantization f;
    if (q.contains("fmt") && q["fmt"] != "e4m3") fail(where, ".fmt must be \"e4m3\", got ", q["fmt"].dump());
    if (q.contains("activation_scheme")) {
      if (!q["activation_scheme"].is_string()) fail(where, ".activation_scheme must be a string");
      f.activation_scheme = q["activation_scheme"].get<std::string>();
      if (f.activation_scheme != "dynamic" && f.activation_scheme != "static")
        fail(where, ".activation_scheme '", f.activation_scheme, "' is not dynamic or static");
    }
    if (q.contains("weight_block_size") && !q["weight_block_size"].is_null()) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0)
        fail(where, ".weight_block_size must be two positive integers, got ", b.dump());
      f.weight_block_size = {b[0].get<int64_t>(), b[1].get<int64_t>()};
    }
    for (const char* key : {"modules_to_not_convert", "ignored_layers"}) {
      if (!q.contains(key) || q[key].is_null()) continue;
      if (!q[key].is_array()) fail(where, ".", key, " must be a list of module names");
      for (const json& m : q[key]) {
        if (!m.is_string()) fail(where, ".", key, " must be a list of module names");
        f.modules_to_not_convert.push_back(m.get<std::string>());
      }
    }
    c.fp8 = f;
  }

  const std::string& a = c.architecture;
  if (a == "Qwen2ForCausalLM") {
    c.attention_bias = true;
    if (r.boolean("use_sliding_window", false)) c.sliding_window = r.positive("sliding_window");
  } else if (a == "Qwen3ForCausalLM") {
    c.attention_bias = r.boolean("attention_bias", false);
    c.qk_norm = true;
    if (r.boolean("use_sliding_window", false)) c.sliding_window = r.positive("sliding_window");
  } else if (a == "MistralForCausalLM") {
    c.attention_bias = false;
    if (r.has("sliding_window")) c.sliding_window = r.positive("sliding_window");
  } else {
    c.attention_bias = r.boolean("attention_bias", false);
    if (r.boolean("mlp_bias", false)) r.bad("mlp_bias", "true is not supported");
  }
  return c;
}

ModelConfig ModelConfig::load(const std::string& model_dir) {
  std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  return parse(read_text_file(path, 16u << 20), path);
}

GenerationConfig GenerationConfig::parse(const std::string& text, const std::string& source) {
  json j = parse_object(text, source);
  Reader r(j, source);
  GenerationConfig g;
  g.eos_token_ids = r.id_list("eos_token_id");
  if (r.has("bos_token_id")) g.bos_token_id = r.integer("bos_token_id");
  if (r.has("temperature")) g.temperature = r.number("temperature", 1.0);
  if (r.has("top_p")) g.top_p = r.number("top_p", 1.0);
  if (r.has("top_k")) g.top_k = r.integer("top_k");
  if (r.has("repetition_penalty")) g.repetition_penalty = r.number("repetition_penalty", 1.0);
  g.do_sample = r.boolean("do_sample", false);
  return g;
}

GenerationConfig GenerationConfig::load(const std::string& model_dir) {
  std::filesystem::path p = std::filesystem::path(model_dir) / "generation_config.json";
  if (!std::filesystem::exists(p)) return GenerationConfig{};
  return parse(read_text_file(p.string(), 16u << 20), p.string());
}

}  // namespace redhare
