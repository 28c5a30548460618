#include "models/fp8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace redhare {

Tensor pack_fp8_weight(const Tensor& weight, const Tensor& scale, const std::vector<int64_t>& block,
                       const std::string& what) {
  if (weight.dtype() != DType::kF8E4M3 || weight.dim() != 2)
    fail(what, ": an FP8 weight must be a 2-D f8_e4m3 tensor, is ", weight.str());
  const int64_t N = weight.size(0), K = weight.size(1);
  if (K % 128 != 0)
    fail(what, ": FP8 weights need rows of a multiple of 128 values (redhare keeps them in 128-value "
               "blocks), this one has ", K);
  if (!dtype_info(scale.dtype()).is_float || is_block_quantized(scale.dtype()) || scale.dtype() == DType::kF8E4M3 ||
      scale.dtype() == DType::kF8E5M2)
    fail(what, ": the FP8 scale must be f32, bf16 or f16, is ", scale.str());
  const std::vector<float> s = scale.to_f32_vector();
  for (float v : s)
    if (!std::isfinite(v) || v < 0) fail(what, ": FP8 scale ", v, " is not a finite non-negative number");
  // The scale of (row, 128-value block): an index into s.
  int64_t bn = 0, bk = 0, scols = 0;
  enum { kBlock, kChannel, kTensor } kind;
  if (!block.empty()) {
    bn = block[0];
    bk = block[1];
    if (bk % 128 != 0)
      fail(what, ": FP8 weight_block_size [", bn, ", ", bk, "]: the column block must be a multiple of 128");
    const int64_t srows = (N + bn - 1) / bn;
    scols = (K + bk - 1) / bk;
    if (scale.dim() != 2 || scale.size(0) != srows || scale.size(1) != scols)
      fail(what, ": FP8 scale has shape ", shape_str(scale.shape()), ", expected [", srows, ", ", scols,
           "] for a [", N, ", ", K, "] weight in ", bn, "x", bk, " blocks");
    kind = kBlock;
  } else if (scale.numel() == 1) {
    kind = kTensor;
  } else if (scale.numel() == N && (scale.dim() == 1 || (scale.dim() == 2 && scale.size(1) == 1))) {
    kind = kChannel;
  } else {
    fail(what, ": FP8 scale has shape ", shape_str(scale.shape()), "; without weight_block_size it must hold one "
               "value or one per output row (", N, ")");
  }
  const uint8_t* src = static_cast<const uint8_t*>(weight.data());
  // NaN codes (S.1111.111) are refused: no checkpoint needs them, and the GPU's integer
  // conversion reads them as 480.
  std::atomic<int64_t> nan_at{-1};
  ThreadPool::global().parallel_for(N * K, 1 << 20, [&](int, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if ((src[i] & 0x7F) == 0x7F) {
        nan_at.store(i);
        return;
      }
  });
  if (nan_at.load() >= 0)
    fail(what, ": the FP8 weight holds a NaN code at [", nan_at.load() / K, ", ", nan_at.load() % K, "]");
  Tensor out = Tensor::empty(DType::kF8B128, {N, K});
  uint8_t* dst = static_cast<uint8_t*>(out.data());
  const int64_t blocks = K / 128;
  ThreadPool::global().parallel_for(N, 64, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        float sc = 0;
        if (kind == kBlock) sc = s[static_cast<size_t>((r / bn) * scols + (b * 128) / bk)];
        else if (kind == kChannel) sc = s[static_cast<size_t>(r)];
        else sc = s[0];
        uint8_t* o = dst + (r * blocks + b) * 144;
        std::memcpy(o, src + r * K + b * 128, 128);
        std::memcpy(o + 128, &sc, 4);
        std::memset(o + 132, 0, 12);
      }
    }
  });
  return out;
}

Fp8Quantized quantize_fp8_blocks(const Tensor& weight, int64_t block) {
  RH_CHECK(weight.dim() == 2 && block > 0, "quantize_fp8_blocks: ", weight.str());
  const int64_t N = weight.size(0), K = weight.size(1);
  if (K % block != 0) fail("FP8 conversion: a row of ", K, " values is not a multiple of the block (", block, ")");
  const std::vector<float> w = weight.to_f32_vector();
  for (size_t i = 0; i < w.size(); ++i)
    if (!std::isfinite(w[i]))
      fail("FP8 conversion: the weight holds a non-finite value at [", static_cast<int64_t>(i) / K, ", ",
           static_cast<int64_t>(i) % K, "]");
  const int64_t srows = (N + block - 1) / block, scols = K / block;
  Fp8Quantized q;
  q.weight = Tensor::empty(DType::kF8E4M3, {N, K});
  q.scale = Tensor::empty(DType::kF32, {srows, scols});
  uint8_t* qw = static_cast<uint8_t*>(q.weight.data());
  float* qs = q.scale.data_as<float>();
  ThreadPool::global().parallel_for(srows * scols, 1, [&](int, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t br = t / scols, bc = t % scols;
      const int64_t r_end = std::min(N, (br + 1) * block);
      float amax = 0;
      for (int64_t r = br * block; r < r_end; ++r)
        for (int64_t c = bc * block; c < (bc + 1) * block; ++c) {
          amax = std::max(amax, std::fabs(w[static_cast<size_t>(r * K + c)]));
        }
      // 448 is the largest finite e4m3 value; an all-zero tile keeps scale 1 (any scale would do).
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      qs[t] = scale;
      for (int64_t r = br * block; r < r_end; ++r)
        for (int64_t c = bc * block; c < (bc + 1) * block; ++c)
          qw[r * K + c] = f32_to_f8e4m3(w[static_cast<size_t>(r * K + c)] / scale);
    }
  });
  return q;
}

bool is_fp8_quantizable(const std::string& name) {
  if (name.rfind("model.layers.", 0) != 0) return false;
  static const char* kSuffixes[] = {".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
                                    ".self_attn.o_proj.weight", ".mlp.gate_proj.weight",    ".mlp.up_proj.weight",
                                    ".mlp.down_proj.weight"};
  for (const char* s : kSuffixes) {
    const size_t n = std::strlen(s);
    if (name.size() > n && name.compare(name.size() - n, n, s) == 0) return true;
  }
  return false;
}

Fp8ConvertReport convert_checkpoint_to_fp8(const std::string& model_dir, const std::string& out_dir,
                                           int64_t block, bool force) {
  namespace fs = std::filesystem;
  if (block <= 0 || block % 128 != 0) fail("FP8 conversion: the block must be a positive multiple of 128, got ", block);

  const ModelConfig config = ModelConfig::load(model_dir);  // validates the model first
  if (config.fp8) fail(model_dir, ": the checkpoint is already FP8");
  std::ifstream cf(fs::path(model_dir) / "config.json");
  std::stringstream text;
  text << cf.rdbuf();
  nlohmann::ordered_json cj = nlohmann::ordered_json::parse(text.str());

  if (fs::exists(out_dir) && fs::equivalent(model_dir, out_dir))
    fail("FP8 conversion: the output directory is the input directory (", out_dir, ")");
  if (fs::exists(fs::path(out_dir) / "model.safetensors") && !force)
    fail(out_dir, " already holds model.safetensors (use --force to overwrite)");
  fs::create_directories(out_dir);

  Checkpoint ckpt = Checkpoint::open(model_dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Fp8ConvertReport r;
  for (const std::string& name : ckpt.names()) {
    Tensor t = ckpt.get(name);
    r.bytes_in += t.nbytes();
    if (is_fp8_quantizable(name) && t.dim() == 2 && t.size(1) % block == 0) {
      Fp8Quantized q = quantize_fp8_blocks(t, block);
      r.bytes_out += q.weight.nbytes() + q.scale.nbytes();
      tensors.emplace_back(name, std::move(q.weight));
      tensors.emplace_back(name + "_scale_inv", std::move(q.scale));
      ++r.quantized;
    } else {
      if (is_fp8_quantizable(name)) r.left_unquantized.push_back(name);
      r.bytes_out += t.nbytes();
      tensors.emplace_back(name, std::move(t));
      ++r.kept;
    }
  }
  if (r.quantized == 0)
    fail(model_dir, ": no projection weight could be quantized (rows must be a multiple of ", block, " values)");
  save_safetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});

  cj["quantization_config"] = {{"quant_method", "fp8"},
                               {"fmt", "e4m3"},
                               {"activation_scheme", "dynamic"},
                               {"weight_block_size", {block, block}}};
  std::ofstream(fs::path(out_dir) / "config.json") << cj.dump(2) << "\n";
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json", "chat_template.jinja"})
    if (fs::exists(fs::path(model_dir) / f))
      fs::copy_file(fs::path(model_dir) / f, fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
  return r;
}

}  // namespace redhare
