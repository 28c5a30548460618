#include "server/settings.h"

#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "core/mapped_file.h"

namespace redhare {
namespace {

using json = nlohmann::json;

json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(yaml_to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: always a string
      if (s == "true" || s == "True") return true;
      if (s == "false" || s == "False") return false;
      if (s == "null" || s == "~") return nullptr;
      try {
        size_t used = 0;
        long long v = std::stoll(s, &used);
        if (used == s.size()) return v;
        double d = std::stod(s, &used);
        if (used == s.size()) return d;
      } catch (const std::exception&) {
      }
      return s;
    }
  }
  return nullptr;
}

}  // namespace

const std::vector<SettingDef>& Settings::schema() {
  static const std::vector<SettingDef> kSchema = {
      {"serve.host", "string", "127.0.0.1", "address to listen on"},
      {"serve.port", "int", 21002, "port to listen on"},
      {"serve.api_keys", "list", json::array(),
       "accepted API keys, each {key: ..., priority: N} (smaller N runs first); empty = no auth"},
      {"serve.max_body_bytes", "int", 8 << 20, "largest request body accepted (413 above)"},
      {"serve.http_threads", "int", 256, "HTTP worker threads (one per open streaming request)"},
      {"serve.read_timeout_s", "int", 30, "seconds a client may take to send its request"},
      {"serve.drain_timeout_s", "int", 60, "on SIGTERM, seconds to let running requests finish"},
      {"serve.model_name", "string", "", "model id reported by /v1/models (default: the directory name)"},
      {"models.ckpt_dir", "string", "", "model: a directory (config.json + safetensors + tokenizer.json) or a .gguf file; empty = the default SmolLM2-135M-Instruct"},
      {"models.load_format", "string", "auto", "auto (read the checkpoint) or dummy (random weights)"},
      {"models.tokenizer_dir", "string", "", "directory of tokenizer.json (default: models.ckpt_dir)"},
      {"infer.max_reqs", "int", 64, "most requests running at once"},
      {"infer.max_seq_len", "int", 0, "context length limit (0 = the model's)"},
      {"infer.max_batched_tokens", "int", 512, "tokens per engine step (prefill chunk budget)"},
      {"infer.max_waiting", "int", 1024, "requests queued before new ones get 429"},
      {"infer.cache_type", "string", "bf16", "KV cache element type: f32, bf16, f16 or fp8 (e4m3 with a scale per token and KV head: half the memory of bf16)"},
      {"infer.block_size", "int", 16, "tokens per KV block"},
      {"infer.kv_cache_bytes", "int", 1ll << 30, "KV cache size when infer.memory_utilization is 0"},
      {"infer.memory_utilization", "float", 0.0,
       "fraction of the memory left after the weights that the KV cache takes (0 = infer.kv_cache_bytes on the CPU, 0.9 on a GPU)"},
      {"infer.device", "string", "auto", "auto (the first GPU if there is one, else the CPU), cpu, cuda or cuda:N"},
      {"infer.matmul_precision", "string", "bf16",
       "GPU matrix products of prefill and batched steps: bf16 (activations rounded to bf16, tensor cores) or f32 (exact, several times slower)"},
      {"infer.raise_lower_bit_float_to", "string", "auto",
       "GPU products on FP8 weights (tensor-core mode): bf16 (W8A16: weights raised to 16 bits in the kernels), "
       "fp8 (W8A8: activations quantized to e4m3 per row and 128-value block, cuBLASLt's block-scaled FP8 "
       "product, Hopper; every product) or auto (fp8 there for products of 16 rows and more, else bf16)"},
      {"infer.use_cuda_graph", "bool", true, "replay decode steps from CUDA graphs (one per batch-size bucket)"},
      {"infer.prefix_caching", "bool", true, "reuse the KV of shared prompt prefixes"},
      {"infer.overlap_steps", "string", "auto",
       "queue each decode step before the previous step's tokens are read, hiding the host's work between steps: "
       "auto (where the backend runs ahead: GPUs), on or off"},
      {"infer.threads", "int", 0, "CPU threads for the model (0 = all)"},
      {"infer.cpu_int8_activations", "bool", false,
       "GGUF block weights on the CPU: 8-bit activations with integer dot products (about 2-3x faster decode, logits off by a few tenths) instead of exact f32"},
      {"request.max_new_tokens", "int", 1024, "max_tokens when a request gives none"},
      {"log.level", "string", "info", "debug, info, warn or error"},
  };
  return kSchema;
}

Settings::Settings() {
  for (const SettingDef& d : schema()) values_[d.key] = d.default_value;
}

void Settings::set(const std::string& key, const json& value, const std::string& source) {
  const SettingDef* def = nullptr;
  for (const SettingDef& d : schema())
    if (d.key == key) def = &d;
  if (!def) fail(source, ": unknown setting '", key, "' (redhare serve --help lists them)");
  bool ok = (def->type == "string" && value.is_string()) || (def->type == "int" && value.is_number_integer()) ||
            (def->type == "float" && value.is_number()) || (def->type == "bool" && value.is_boolean()) ||
            (def->type == "list" && value.is_array());
  if (!ok) fail(source, ": setting '", key, "' must be a ", def->type, ", got ", value.dump());
  values_[key] = def->type == "float" ? json(value.get<double>()) : value;
}

void Settings::load_yaml_text(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(source, ": not valid YAML: ", e.what());
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) fail(source, ": expected sections (serve:, models:, infer:, ...)");
  for (const auto& section : root) {
    std::string name = section.first.as<std::string>();
    if (!section.second.IsMap()) fail(source, ": section '", name, "' must hold key: value pairs");
    for (const auto& kv : section.second) set(name + "." + kv.first.as<std::string>(), yaml_to_json(kv.second), source);
  }
}

void Settings::load_yaml_file(const std::string& path) { load_yaml_text(read_text_file(path, 1 << 20), path); }

void Settings::apply_override(const std::string& a) {
  size_t eq = a.find('=');
  if (eq == std::string::npos || eq == 0) fail("override '", a, "' must look like section.key=value");
  std::string key = a.substr(0, eq), value = a.substr(eq + 1);
  json v;
  try {
    v = yaml_to_json(YAML::Load(value));
  } catch (const YAML::Exception& e) {
    fail("override '", a, "': value is not valid YAML: ", e.what());
  }
  // A string setting takes the text as written ("serve.host=0.0.0.0", "models.ckpt_dir=123").
  for (const SettingDef& d : schema())
    if (d.key == key && d.type == "string" && !v.is_string()) v = value;
  set(key, v, "command line");
}

const json& Settings::get(const std::string& key) const {
  auto it = values_.find(key);
  RH_CHECK(it != values_.end(), "no setting ", key);
  return it->second;
}

std::string Settings::help_text() {
  std::ostringstream os;
  os << "settings (section.key=value on the command line, or sections in --config FILE):\n";
  for (const SettingDef& d : schema()) {
    // (Built with a stream: GCC 12 warns falsely on concatenating short strings here.)
    std::ostringstream def;
    if (d.default_value.is_string()) def << '"' << d.default_value.get<std::string>() << '"';
    else def << d.default_value.dump();
    os << "  " << d.key << std::string(d.key.size() < 26 ? 26 - d.key.size() : 1, ' ') << d.type
       << std::string(d.type.size() < 8 ? 8 - d.type.size() : 1, ' ') << "default " << def.str() << "\n"
       << "      " << d.help << "\n";
  }
  return os.str();
}

}  // namespace redhare
