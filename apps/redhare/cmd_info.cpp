// redhare info: what a model is and what it needs, read from config.json and the checkpoint
// headers (no weights are loaded).
#include <cstdio>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "apps/redhare/cli.h"
#include "apps/redhare/commands.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "models/model.h"

namespace redhare::app {
namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  return buf;
}

}  // namespace

int cmd_info(const std::vector<std::string>& args) {
  CLI::App app{"Architecture, parameter count, dtypes and memory needed by a model.", "redhare info"};
  std::string model_dir, kv_dtype_name = "bf16";
  bool json = false;
  app.add_option("--model", model_dir, "model directory")->required();
  app.add_option("--kv-dtype", kv_dtype_name, "KV cache element type for the memory estimate (f32, bf16, f16, fp8)")
      ->capture_default_str();
  app.add_flag("--json", json, "print JSON");
  if (int rc = parse_args(app, args); rc >= 0) return rc;

  ModelConfig c = ModelConfig::load(model_dir);
  const DType kv_dtype = parse_kv_cache_dtype(kv_dtype_name);

  std::map<std::string, int64_t> by_dtype;
  int64_t params = 0, weight_bytes = 0;
  bool from_checkpoint = std::filesystem::exists(std::filesystem::path(model_dir) / "model.safetensors") ||
                         std::filesystem::exists(std::filesystem::path(model_dir) / "model.safetensors.index.json");
  if (from_checkpoint) {
    Checkpoint ck = Checkpoint::open(model_dir);
    auto ends_with = [](const std::string& s, const std::string& suffix) {
      return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    for (const std::string& n : ck.names()) {
      Tensor t = ck.get(n);
      weight_bytes += t.nbytes();
      // An FP8 weight's scales are bytes to hold, not parameters of the model.
      if (c.fp8 && (ends_with(n, "weight_scale_inv") || ends_with(n, "weight_scale") || ends_with(n, "input_scale")))
        continue;
      by_dtype[std::string(dtype_name(t.dtype()))] += t.numel();
      params += t.numel();
    }
  } else {
    params = estimate_parameters(c);
    by_dtype[std::string(dtype_name(c.dtype))] = params;
    weight_bytes = dtype_bytes(c.dtype, params);
  }
  KvCacheSpec one_token;
  one_token.num_layers = c.num_layers;
  one_token.num_blocks = 1;
  one_token.block_size = 1;
  one_token.num_kv_heads = c.num_kv_heads;
  one_token.head_dim = c.head_dim;
  one_token.dtype = kv_dtype;
  const int64_t kv_per_token = one_token.bytes_per_block();
  const int64_t kv_full = kv_per_token * c.max_position_embeddings;
  bool supported = false;
  for (const std::string& a : supported_architectures()) supported = supported || a == c.architecture;

  if (json) {
    nlohmann::json j = {{"architecture", c.architecture},
                        {"supported", supported},
                        {"parameters", params},
                        {"parameters_by_dtype", by_dtype},
                        {"weight_bytes", weight_bytes},
                        {"weights_from", from_checkpoint ? "checkpoint" : "config estimate"},
                        {"layers", c.num_layers},
                        {"hidden_size", c.hidden_size},
                        {"heads", c.num_heads},
                        {"kv_heads", c.num_kv_heads},
                        {"head_dim", c.head_dim},
                        {"vocab_size", c.vocab_size},
                        {"max_position_embeddings", c.max_position_embeddings},
                        {"kv_dtype", kv_dtype_name},
                        {"kv_bytes_per_token", kv_per_token},
                        {"memory_one_full_context_bytes", weight_bytes + kv_full}};
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("architecture      %s%s\n", c.architecture.c_str(), supported ? "" : " (not supported by this build)");
  std::printf("parameters        %lld (%.2f B)%s\n", static_cast<long long>(params), static_cast<double>(params) / 1e9,
              from_checkpoint ? "" : " estimated from config.json");
  for (const auto& [dt, n] : by_dtype) std::printf("  %-15s %lld\n", dt.c_str(), static_cast<long long>(n));
  std::printf("shape             %lld layers, hidden %lld, %lld heads / %lld kv heads of %lld, vocab %lld\n",
              static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
              static_cast<long long>(c.head_dim), static_cast<long long>(c.vocab_size));
  std::printf("weights           %s\n", human_bytes(static_cast<double>(weight_bytes)).c_str());
  std::printf("kv cache (%s)   %s per token, %s for one %lld-token context\n", kv_dtype_name.c_str(),
              human_bytes(static_cast<double>(kv_per_token)).c_str(), human_bytes(static_cast<double>(kv_full)).c_str(),
              static_cast<long long>(c.max_position_embeddings));
  std::printf("memory needed     %s (weights + one full context)\n",
              human_bytes(static_cast<double>(weight_bytes + kv_full)).c_str());
  return 0;
}

}  // namespace redhare::app
