// Hugging Face config.json and generation_config.json, validated into plain structs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace redhare {

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

// config.json's quantization_config for FP8 checkpoints (quant_method "fp8"): e4m3 weights with
// a dequantization scale per weight_block_size block (DeepSeek-V3 style, `weight_scale_inv`), or,
// without a block size, per tensor or per output channel (`weight_scale`).
struct Fp8Quantization {
  std::vector<int64_t> weight_block_size;  // [rows, cols], or empty
  std::string activation_scheme = "dynamic";
  std::vector<std::string> modules_to_not_convert;  // left in the checkpoint's float type
};

struct ModelConfig {
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Per-frequency divisors from a GGUF's rope_freqs.weight (llama.cpp's form of Llama 3 rope
  // scaling); empty when the model has none.
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2 always)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  int64_t sliding_window = 0;   // 0 = full attention
  std::string hidden_act = "silu";
  DType dtype = DType::kBF16;   // torch_dtype / dtype
  std::optional<Fp8Quantization> fp8;  // quantization_config with quant_method "fp8"
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;

  // Parses config.json text; `source` names the file in errors.
  static ModelConfig parse(const std::string& text, const std::string& source);
  static ModelConfig load(const std::string& model_dir);
};

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> repetition_penalty;
  bool do_sample = false;

  static GenerationConfig parse(const std::string& text, const std::string& source);
  // An absent generation_config.json gives the defaults.
  static GenerationConfig load(const std::string& model_dir);
};

}  // namespace redhare
