// `redhare bench offline`: a model loaded in this process, its Engine on a background thread,
// and a Sender that times requests from their RequestStream.
#pragma once

#include <atomic>
#include <memory>

#include "apps/redhare/bench.h"
#include "engine/engine.h"
#include "models/assets.h"
#include "models/gguf_model.h"

namespace redhare::app::bench {

// Engine settings; cmd_bench fills the defaults from `redhare serve`'s settings schema, so that
// offline and served figures come from the same engine configuration.
struct OfflineOptions {
  std::string model;
  std::string tokenizer_dir;
  std::string load_format = "auto";
  int threads = 0;
  int64_t max_running = 64;
  int64_t max_batched_tokens = 512;
  double kv_cache_gb = 1;
  std::string kv_cache_dtype = "bf16";
  bool prefix_caching = true;
  std::string device = "auto";
  std::string precision = "bf16";
  std::string lower_bit_float = "auto";  // infer.raise_lower_bit_float_to
};

class OfflineEngine {
 public:
  explicit OfflineEngine(const OfflineOptions& o);
  ~OfflineEngine();
  OfflineEngine(const OfflineEngine&) = delete;
  OfflineEngine& operator=(const OfflineEngine&) = delete;

  // The model's tokenizer (when it has one) and vocabulary size, for building workloads.
  TokenSource tokens() const;
  SenderFactory sender_factory(bool ignore_eos, double temperature);
  const ModelConfig& config() const { return model_->config(); }

 private:
  std::vector<int32_t> prompt_ids(const BenchPrompt& p) const;

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  TextAssets assets_;
  std::unique_ptr<Engine> engine_;
  std::atomic<int64_t> counter_{0};
};

}  // namespace redhare::app::bench
