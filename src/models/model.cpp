#include "models/model.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>

#include "core/error.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "formats/safetensors.h"
#include "models/fp8.h"
#include "models/gguf_model.h"

namespace redhare {

void register_llama_family();  // models/llama.cpp

namespace {

std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> r;
  return r;
}

void ensure_builtin_registered() {
  static std::once_flag once;
  std::call_once(once, [] { register_llama_family(); });
}

class CheckpointWeights final : public WeightSource {
 public:
  CheckpointWeights(const std::string& dir, const ModelConfig& config)
      : ckpt_(Checkpoint::open(dir)), fp8_(config.fp8) {}
  bool has(const std::string& name) override { return ckpt_.has(name); }
  Tensor get(const std::string& name, const Shape& shape, float) override {
    Tensor t = ckpt_.get(name);
    if (t.shape() != shape)
      fail(ckpt_.dir(), ": tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ",
           shape_str(shape), " from config.json");
    if (t.dtype() == DType::kF8E4M3) return fp8_weight(name, t);
    if (!dtype_info(t.dtype()).is_float || t.dtype() == DType::kF8E5M2)
      fail(ckpt_.dir(), ": tensor '", name, "' is ", dtype_name(t.dtype()),
           "; redhare loads f32, f16, bf16 and (with an fp8 quantization_config) f8_e4m3 weights");
    return t;
  }
  std::string describe() const override { return ckpt_.dir(); }

 private:
  // An e4m3 weight and its scale (`<name>_scale_inv` with block scales, `<name>_scale` per tensor
  // or channel), packed into kF8B128.
  Tensor fp8_weight(const std::string& name, const Tensor& t) {
    const std::string what = ckpt_.dir() + ": tensor '" + name + "'";
    if (!fp8_)
      fail(what, " is f8_e4m3 but config.json has no quantization_config with quant_method \"fp8\"");
    std::string scale_name;
    for (const char* suffix : {"_scale_inv", "_scale"})
      if (ckpt_.has(name + suffix)) {
        scale_name = name + suffix;
        break;
      }
    if (scale_name.empty()) fail(what, " is f8_e4m3 but the checkpoint has neither ", name, "_scale_inv nor ", name, "_scale");
    return pack_fp8_weight(t, ckpt_.get(scale_name), fp8_->weight_block_size, what);
  }

  Checkpoint ckpt_;
  std::optional<Fp8Quantization> fp8_;
};

// Random weights in the config's dtype: uniform in [-scale, scale] (norm weights get ~1), drawn in
// parallel with a counter-based generator so the result does not depend on the thread count.
class DummyWeights final : public WeightSource {
 public:
  DummyWeights(DType dtype, uint64_t seed, std::optional<DType> block_dtype)
      : dtype_(dtype), seed_(seed), block_(block_dtype) {}
  bool has(const std::string&) override { return true; }
  Tensor get(const std::string& name, const Shape& shape, float scale) override {
    // FP8 as checkpoints ship it: the projection weights only (embeddings and LM head stay).
    if (block_ && shape.size() == 2 && scale > 0 && shape[1] % dtype_info(*block_).block_elems == 0 &&
        (*block_ != DType::kF8B128 || is_fp8_quantizable(name)))
      return random_blocks(name, shape, scale);
    Tensor t = Tensor::empty(dtype_, shape);
    const uint64_t stream = std::hash<std::string>{}(name) ^ seed_;
    const int64_t n = t.numel();
    const bool is_norm = scale <= 0;
    ThreadPool::global().parallel_for(n, 1 << 16, [&](int, int64_t i0, int64_t i1) {
      std::vector<float> buf(static_cast<size_t>(std::min<int64_t>(i1 - i0, 1 << 16)));
      for (int64_t b = i0; b < i1; b += static_cast<int64_t>(buf.size())) {
        int64_t cnt = std::min<int64_t>(static_cast<int64_t>(buf.size()), i1 - b);
        for (int64_t i = 0; i < cnt; ++i) {
          uint64_t z = (stream + static_cast<uint64_t>(b + i)) * 0x9E3779B97F4A7C15ull;
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
          z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
          z ^= z >> 31;
          float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
          buf[static_cast<size_t>(i)] = is_norm ? 1.0f + 0.1f * u : scale * u;
        }
        convert_from_f32(buf.data(), dtype_,
                         static_cast<uint8_t*>(t.data()) + dtype_bytes(dtype_, b), cnt);
      }
    });
    return t;
  }
  std::string describe() const override { return "dummy weights"; }

 private:
  // Random packed blocks of a GGUF or FP8 type whose scale fields hold a small positive value, so
  // the weights are finite and of about `scale` in size: enough to time the kernels on real layouts.
  Tensor random_blocks(const std::string& name, const Shape& shape, float scale) {
    const DType t = *block_;
    Tensor out = Tensor::empty(t, shape);
    const int64_t bytes = out.nbytes(), bb = dtype_info(t).block_bytes;
    uint8_t* p = static_cast<uint8_t*>(out.data());
    const uint64_t stream = std::hash<std::string>{}(name) ^ seed_;
    ThreadPool::global().parallel_for(bytes / 8, 1 << 16, [&](int, int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        uint64_t z = (stream + static_cast<uint64_t>(i)) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
        z ^= z >> 29;
        std::memcpy(p + i * 8, &z, 8);
      }
    });
    if (t == DType::kF8B128) {
      // FP8 blocks: no NaN codes, and an f32 scale making values of about `scale`.
      const float s = scale / 448.0f;
      for (int64_t b = 0; b < bytes / bb; ++b) {
        for (int64_t i = 0; i < 128; ++i)
          if ((p[b * bb + i] & 0x7F) == 0x7F) p[b * bb + i] = 0;
        std::memcpy(p + b * bb + 128, &s, 4);
      }
      return out;
    }
    const bool has_min = t == DType::kQ4_1 || t == DType::kQ5_1 || t == DType::kQ4_K || t == DType::kQ5_K;
    const int64_t d_offset = t == DType::kQ6_K ? 208 : 0;
    const uint16_t d = f32_to_f16(scale / 16.0f), m = f32_to_f16(-scale / 2.0f);
    for (int64_t b = 0; b < bytes / bb; ++b) {
      std::memcpy(p + b * bb + d_offset, &d, 2);
      if (has_min) std::memcpy(p + b * bb + 2, &m, 2);
    }
    return out;
  }

  DType dtype_;
  uint64_t seed_;
  std::optional<DType> block_;
};

std::optional<DType> parse_dummy_dtype(const std::string& name) {
  if (name.empty()) return std::nullopt;
  for (int i = 0; i < static_cast<int>(DType::kCount); ++i) {
    DType t = static_cast<DType>(i);
    if (dtype_name(t) == name && is_block_quantized(t)) return t;
  }
  fail("dummy dtype '", name, "' is not a block type (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, f8_e4m3_b128)");
}

}  // namespace

KvCacheSpec Model::kv_spec(int64_t num_blocks, int64_t block_size, DType dtype) const {
  KvCacheSpec s;
  s.num_layers = config_.num_layers;
  s.num_blocks = num_blocks;
  s.block_size = block_size;
  s.num_kv_heads = config_.num_kv_heads;
  s.head_dim = config_.head_dim;
  s.dtype = dtype;
  return s;
}

void Model::count_weight(const Tensor& t) {
  num_parameters_ += t.numel();
  weight_bytes_ += t.nbytes();
  params_by_dtype_[std::string(dtype_name(t.dtype()))] += t.numel();
}

void register_architecture(const std::string& name, ModelFactory factory) {
  registry()[name] = std::move(factory);
}

std::vector<std::string> supported_architectures() {
  ensure_builtin_registered();
  std::vector<std::string> out;
  for (const auto& [name, f] : registry()) out.push_back(name);
  return out;
}

std::unique_ptr<Model> load_model(const std::string& model_dir, Backend& backend,
                                  const LoadOptions& options) {
  ensure_builtin_registered();
  const std::string gguf_path = find_gguf_file(model_dir);
  std::shared_ptr<GgufFile> gguf;
  ModelConfig config;
  if (!gguf_path.empty()) {
    gguf = std::make_shared<GgufFile>(GgufFile::open(gguf_path));
    config = config_from_gguf(*gguf);
  } else {
    config = ModelConfig::load(model_dir);
  }
  auto it = registry().find(config.architecture);
  if (it == registry().end()) {
    std::string names;
    for (const auto& [name, f] : registry()) names += (names.empty() ? "" : ", ") + name;
    fail(model_dir, "/config.json: architecture '", config.architecture,
         "' is not supported (supported: ", names, ")");
  }
  std::unique_ptr<WeightSource> weights;
  if (options.load_format == "dummy") {
    weights = std::make_unique<DummyWeights>(config.dtype, options.seed, parse_dummy_dtype(options.dummy_dtype));
  } else if (gguf && (options.load_format == "auto" || options.load_format == "gguf")) {
    weights = gguf_weight_source(gguf, config);
  } else if (options.load_format == "auto" || options.load_format == "safetensors") {
    weights = std::make_unique<CheckpointWeights>(model_dir, config);
  } else {
    fail("load_format '", options.load_format, "' is not one of auto, safetensors, gguf, dummy");
  }
  log_info("loading ", config.architecture, " from ", weights->describe(), " on ", backend.name());
  return it->second(config, *weights, backend);
}


bool DecodeGraphs::eligible(const ForwardBatch& b, const Backend& backend) {
  const int64_t T = static_cast<int64_t>(b.token_ids.size());
  if (!backend.supports_graphs() || T == 0 || T > kMaxGraphBatch || b.attn.num_seqs != T) return false;
  if (static_cast<int64_t>(b.logit_rows.size()) != T) return false;
  for (int64_t i = 0; i < T; ++i)
    if (b.attn.query_start[static_cast<size_t>(i) + 1] != i + 1 || b.logit_rows[static_cast<size_t>(i)] != i) return false;
  return true;
}

int64_t DecodeGraphs::batch_bucket(int64_t tokens) {
  if (tokens <= 2) return tokens;
  if (tokens <= 4) return 4;
  return (tokens + 7) / 8 * 8;
}

Tensor DecodeGraphs::run(const ForwardBatch& b, KvCache& kv, Backend& backend, int64_t vocab,
                         const StepFn& step) {
  const int64_t T = static_cast<int64_t>(b.token_ids.size());
  const int64_t B = batch_bucket(T);
  int64_t W = 16;
  while (W < b.attn.max_blocks) W *= 2;
  // A new cache can reuse some of the old one's addresses (a pool hands freed memory back), so
  // every layer's pools are compared, not one pointer.
  std::vector<const void*> pools;
  for (const KvCacheLayer& l : kv.layers) {
    pools.push_back(l.k.data());
    pools.push_back(l.v.data());
    pools.push_back(l.k_scale.data());
    pools.push_back(l.v_scale.data());
  }
  if (pools != kv_) {
    backend.graph_clear();
    logits_.clear();
    kv_ = std::move(pools);
  }
  ForwardBatch p;
  p.token_ids = b.token_ids;
  p.token_ids.resize(static_cast<size_t>(B), 0);
  // Always given, so that the recorded embedding reads the draw rows whichever a replay has.
  p.from_draw = b.from_draw;
  p.from_draw.resize(static_cast<size_t>(B), -1);
  p.positions = b.positions;
  p.positions.resize(static_cast<size_t>(B), 0);
  p.attn.num_seqs = static_cast<int32_t>(B);
  p.attn.max_blocks = static_cast<int32_t>(W);
  p.attn.context_lens = b.attn.context_lens;
  p.attn.context_lens.resize(static_cast<size_t>(B), 0);
  p.attn.slot_mapping = b.attn.slot_mapping;
  p.attn.slot_mapping.resize(static_cast<size_t>(B), -1);
  p.attn.block_tables.assign(static_cast<size_t>(B * W), 0);
  for (int64_t s = 0; s < T; ++s)
    std::copy_n(b.attn.block_tables.begin() + s * b.attn.max_blocks, b.attn.max_blocks,
                p.attn.block_tables.begin() + s * W);
  p.attn.query_start.resize(static_cast<size_t>(B) + 1);
  p.logit_rows.resize(static_cast<size_t>(B));
  for (int64_t i = 0; i <= B; ++i) p.attn.query_start[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  for (int64_t i = 0; i < B; ++i) p.logit_rows[static_cast<size_t>(i)] = static_cast<int32_t>(i);

  // Every row drawn greedily: the replay may draw them itself (Backend::graph_capture_draw).
  Backend::GraphDraw draw;
  if (static_cast<int64_t>(b.sampling.size()) == T &&
      std::all_of(b.sampling.begin(), b.sampling.end(), [](const RowSampling& r) { return r.plain_greedy(); }))
    draw = {T, b.draw_async};
  backend.graph_stage(p.token_ids, p.from_draw, p.positions, p.attn, p.logit_rows, kv, draw);
  const int64_t key = B << 32 | W;
  Tensor& logits = logits_[key];
  if (!logits.data()) logits = backend.alloc(DType::kF32, {B, vocab});
  if (!backend.graph_replay(key)) {
    backend.graph_capture_begin();
    try {
      step(p, kv, logits);  // every temporary is freed inside the capture
      backend.graph_capture_draw(logits);
    } catch (...) {
      backend.graph_capture_abort();
      throw;
    }
    backend.graph_capture_end(key);
    RH_CHECK(backend.graph_replay(key), "graph ", key, " missing right after its capture");
  }
  // The first T rows: the padding's are never copied back.
  return Tensor(DType::kF32, {T, vocab}, logits.data(), logits.owner(), logits.device());
}

}  // namespace redhare
