// The model interface the engine drives, and loading a model from a checkpoint directory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "formats/hf_config.h"

namespace redhare {

// One forward step over tokens of one or more sequences (prefill chunks and decodes mixed).
struct ForwardBatch {
  std::vector<int32_t> token_ids;   // [T]
  std::vector<int32_t> positions;   // [T]
  AttentionBatch attn;              // where each token's K/V goes and what each sequence sees
  std::vector<int32_t> logit_rows;  // token rows whose logits are wanted (e.g. each sequence's last)
  // Rows drawn on the model's device (Backend::sample_rows): the first sampling.size() logit rows
  // are sampled and their tokens written to *sampled; only tokens (and asked-for logprobs) leave
  // the device for them, and forward returns the logits of the remaining rows alone.
  std::vector<RowSampling> sampling;
  std::vector<SampledToken>* sampled = nullptr;
  // Overlapped decoding (Backend::draw_rows_async). from_draw: per token, -1, or the row of the
  // backend's latest async draw whose token is this token's id (token_ids holds a placeholder
  // there); empty when every id is in token_ids. draw_async: every logit row is sampled, by
  // draw_rows_async; *sampled is not written, the caller collects the tokens with
  // Backend::collect_draw.
  std::vector<int32_t> from_draw;
  bool draw_async = false;
};

struct LoadOptions {
  // "auto" reads the checkpoint; "dummy" fills every weight with random values of the right
  // shape, so a real model shape runs without its weights.
  std::string load_format = "auto";
  uint64_t seed = 0;
  // With "dummy": store the matrices in this type instead of the config's (e.g. "q4_k", "q8_0",
  // to benchmark a quantized shape without a quantized checkpoint). Empty = the config's dtype.
  std::string dummy_dtype;
};

class Model {
 public:
  virtual ~Model() = default;
  const ModelConfig& config() const { return config_; }
  // Runs the step, writing the new tokens' K/V into `kv`; returns f32 logits on the host,
  // [logit_rows.size() - sampling.size(), vocab_size] (the rows not sampled on the device).
  virtual Tensor forward(const ForwardBatch& batch, KvCache& kv) = 0;
  // The KV cache shape this model needs; the caller picks num_blocks, block_size and dtype.
  KvCacheSpec kv_spec(int64_t num_blocks, int64_t block_size, DType dtype) const;
  int64_t num_parameters() const { return num_parameters_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t embedding_bytes() const { return embedding_bytes_; }
  // dtype name -> parameter count, as loaded.
  const std::map<std::string, int64_t>& parameters_by_dtype() const { return params_by_dtype_; }

 protected:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  void count_weight(const Tensor& t);

  ModelConfig config_;
  int64_t num_parameters_ = 0;
  int64_t weight_bytes_ = 0;
  int64_t embedding_bytes_ = 0;
  std::map<std::string, int64_t> params_by_dtype_;
};

// Decode steps as backend graphs (CUDA graphs): a step whose sequences each bring one token is
// padded up to a batch-size bucket (1, 2, 4, then multiples of 8 up to kMaxGraphBatch) and a
// block-table width bucket (powers of two), recorded once per bucket pair and replayed after.
// Padding tokens have slot -1 and context 0; their logits rows are dropped. Graphs refer to the
// KV cache's memory, so a step over another cache drops them all.
class DecodeGraphs {
 public:
  static constexpr int64_t kMaxGraphBatch = 256;
  // The step runs into `logits` ([rows, vocab] on the backend), given a batch and cache.
  using StepFn = std::function<void(const ForwardBatch&, KvCache&, Tensor&)>;

  // True when `b` is a decode step the backend can replay (and graphs are on).
  static bool eligible(const ForwardBatch& b, const Backend& backend);
  // Runs `b` through a replayed (first: captured) graph; returns the device logits [T, vocab]
  // (a view of the graph's output, valid until the next run).
  Tensor run(const ForwardBatch& b, KvCache& kv, Backend& backend, int64_t vocab, const StepFn& step);
  static int64_t batch_bucket(int64_t tokens);

 private:
  std::map<int64_t, Tensor> logits_;  // per graph key: the device rows the graph writes
  std::vector<const void*> kv_;        // every K and V pool the graphs were recorded over
};

// Supplies named weights with checked shapes: from a checkpoint, or random (load_format=dummy).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor `name`, which must have `shape`; throws naming the tensor when absent or misshapen.
  virtual Tensor get(const std::string& name, const Shape& shape, float init_scale) = 0;
  virtual bool has(const std::string& name) = 0;
  virtual std::string describe() const = 0;
};

using ModelFactory =
    std::function<std::unique_ptr<Model>(const ModelConfig&, WeightSource&, Backend&)>;

// The architecture registry, keyed by config.json's architectures[0].
void register_architecture(const std::string& name, ModelFactory factory);
std::vector<std::string> supported_architectures();

// Parameter count a config implies, by dtype-independent shapes (for `info` without weights).
int64_t estimate_parameters(const ModelConfig& config);

std::unique_ptr<Model> load_model(const std::string& model_dir, Backend& backend,
                                  const LoadOptions& options = {});

}  // namespace redhare
