// FP8 checkpoints: block quantization (redhare convert), loading block/channel/tensor-scaled e4m3
// weights into kF8B128, and a converted model against the same weights dequantized to f32.
//
// Tolerance of the model comparison: the FP8 path dequantizes each weight to exactly the f32
// value the reference holds (e4m3 value times scale, rounded once), so only the summation order
// of the fast kernels differs from the reference backend: 1e-4 on logits of spread ~3, as the
// other fast-versus-reference model tests.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>

#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"
#include "core/error.h"
#include "engine/generate.h"
#include "formats/safetensors.h"
#include "models/fp8.h"

namespace redhare {
namespace {

namespace fs = std::filesystem;

std::mt19937& rng() {
  static std::mt19937 r(8128);
  return r;
}

Tensor random_bf16(Shape shape, float scale) {
  Tensor f = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < f.numel(); ++i) f.data_as<float>()[i] = d(rng());
  Tensor t = Tensor::empty(DType::kBF16, shape);
  convert_from_f32(f.data_as<float>(), DType::kBF16, t.data(), f.numel());
  return t;
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/redhare_fp8_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A random Llama checkpoint whose projection rows are multiples of 128 values.
void write_llama(const std::string& dir) {
  const int64_t H = 128, I = 256, Hq = 4, Hkv = 2, D = 32, L = 2, V = 300;
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                      {"hidden_size", H}, {"intermediate_size", I}, {"num_hidden_layers", L},
                      {"num_attention_heads", Hq}, {"num_key_value_heads", Hkv}, {"head_dim", D},
                      {"vocab_size", V}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  std::ofstream(dir + "/config.json") << c.dump(1);
  std::vector<std::pair<std::string, Tensor>> t;
  const float sH = 1.0f / std::sqrt(static_cast<float>(H));
  t.emplace_back("model.embed_tokens.weight", random_bf16({V, H}, 1.0f));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.emplace_back(p + "input_layernorm.weight", random_bf16({H}, 0.1f));
    t.emplace_back(p + "post_attention_layernorm.weight", random_bf16({H}, 0.1f));
    t.emplace_back(p + "self_attn.q_proj.weight", random_bf16({Hq * D, H}, sH));
    t.emplace_back(p + "self_attn.k_proj.weight", random_bf16({Hkv * D, H}, sH));
    t.emplace_back(p + "self_attn.v_proj.weight", random_bf16({Hkv * D, H}, sH));
    t.emplace_back(p + "self_attn.o_proj.weight", random_bf16({H, Hq * D}, sH));
    t.emplace_back(p + "mlp.gate_proj.weight", random_bf16({I, H}, sH));
    t.emplace_back(p + "mlp.up_proj.weight", random_bf16({I, H}, sH));
    t.emplace_back(p + "mlp.down_proj.weight", random_bf16({H, I}, 1.0f / 16));
  }
  // Norm weights near 1.
  for (auto& [name, ten] : t)
    if (name.find("norm") != std::string::npos) {
      std::vector<float> v = ten.to_f32_vector();
      for (float& x : v) x += 1.0f;
      convert_from_f32(v.data(), DType::kBF16, ten.data(), ten.numel());
    }
  t.emplace_back("model.norm.weight", random_bf16({H}, 0.1f));
  t.emplace_back("lm_head.weight", random_bf16({V, H}, sH));
  save_safetensors(dir + "/model.safetensors", t);
}

// The FP8 checkpoint with every e4m3 weight multiplied out by its block scale into f32, written
// as a plain checkpoint: the reference the FP8 model must reproduce.
void write_dequantized(const std::string& fp8_dir, const std::string& out_dir, int64_t block) {
  Checkpoint ck = Checkpoint::open(fp8_dir);
  std::vector<std::pair<std::string, Tensor>> out;
  for (const std::string& n : ck.names()) {
    if (n.size() > 10 && n.compare(n.size() - 10, 10, "_scale_inv") == 0) continue;
    Tensor t = ck.get(n);
    if (t.dtype() != DType::kF8E4M3) {
      out.emplace_back(n, t);
      continue;
    }
    Tensor s = ck.get(n + "_scale_inv");
    const int64_t N = t.size(0), K = t.size(1);
    Tensor f = Tensor::empty(DType::kF32, {N, K});
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c = 0; c < K; ++c)
        f.data_as<float>()[r * K + c] = f8e4m3_to_f32(static_cast<const uint8_t*>(t.data())[r * K + c]) *
                                         s.data_as<float>()[(r / block) * s.size(1) + c / block];
    out.emplace_back(n, f);
  }
  save_safetensors(out_dir + "/model.safetensors", out);
  nlohmann::json c = nlohmann::json::parse(std::ifstream(fp8_dir + "/config.json"));
  c.erase("quantization_config");
  std::ofstream(out_dir + "/config.json") << c.dump(1);
}

TEST(Fp8, QuantizeBlocksKeepsEveryValueWithinHalfAnE4m3Step) {
  Tensor w = random_bf16({200, 256}, 0.05f);
  std::vector<float> wf = w.to_f32_vector();
  wf[5 * 256 + 7] = 3.0f;  // one outlier: only its 128x128 tile gets a larger scale
  convert_from_f32(wf.data(), DType::kBF16, w.data(), w.numel());
  Fp8Quantized q = quantize_fp8_blocks(w, 128);
  ASSERT_EQ(q.scale.shape(), (Shape{2, 2}));
  const float* s = q.scale.data_as<float>();
  for (int64_t br = 0; br < 2; ++br)
    for (int64_t bc = 0; bc < 2; ++bc) {
      float amax = 0;
      for (int64_t r = br * 128; r < std::min<int64_t>(200, (br + 1) * 128); ++r)
        for (int64_t c = bc * 128; c < (bc + 1) * 128; ++c) amax = std::max(amax, std::fabs(wf[r * 256 + c]));
      EXPECT_FLOAT_EQ(s[br * 2 + bc], amax / 448.0f);
    }
  for (int64_t r = 0; r < 200; ++r)
    for (int64_t c = 0; c < 256; ++c) {
      const float scale = s[(r / 128) * 2 + c / 128];
      const float back = f8e4m3_to_f32(static_cast<const uint8_t*>(q.weight.data())[r * 256 + c]) * scale;
      const float v = wf[r * 256 + c];
      // e4m3 keeps 3 mantissa bits (half a step: 1/16 of the value); below 2^-6 steps are 2^-9.
      EXPECT_LE(std::fabs(back - v), std::max(std::fabs(v) / 16, 0.001953125f * scale / 2) * 1.0001f)
          << r << "," << c;
    }
  EXPECT_THROW(quantize_fp8_blocks(random_bf16({4, 100}, 1.0f), 128), Error);
}

TEST(Fp8, PackedBlocksDequantizeToValueTimesScaleForEveryScaleLayout) {
  const int64_t N = 130, K = 256;
  Tensor w = Tensor::empty(DType::kF8E4M3, {N, K});
  auto* wb = static_cast<uint8_t*>(w.data());
  // Every finite e4m3 code, both signs (bit 0 cleared: never the NaN codes 0x7F and 0xFF).
  for (int64_t i = 0; i < w.numel(); ++i) wb[i] = static_cast<uint8_t>(((i * 37) % 256) & 0xFE);
  struct Layout {
    Tensor scale;
    std::vector<int64_t> block;
  };
  std::vector<float> blocks = {0.5f, 2.0f, 0.25f, 4.0f};  // [2, 2] for 128x128 blocks
  std::vector<float> channels(N);
  for (int64_t r = 0; r < N; ++r) channels[static_cast<size_t>(r)] = 0.01f * static_cast<float>(r + 1);
  const Layout layouts[] = {{Tensor::from_f32(blocks, {2, 2}), {128, 128}},
                            {Tensor::from_f32(channels, {N, 1}), {}},
                            {Tensor::from_f32({0.125f}, {1}), {}}};
  for (const Layout& l : layouts) {
    Tensor packed = pack_fp8_weight(w, l.scale, l.block, "test");
    ASSERT_EQ(packed.dtype(), DType::kF8B128);
    std::vector<float> row(K);
    for (int64_t r = 0; r < N; ++r) {
      dequantize_row_ref(DType::kF8B128, static_cast<const uint8_t*>(packed.data()) + r * dtype_bytes(DType::kF8B128, K),
                         row.data(), K);
      for (int64_t c = 0; c < K; ++c) {
        const float sc = !l.block.empty() ? blocks[static_cast<size_t>((r / 128) * 2 + c / 128)]
                         : l.scale.numel() == 1 ? 0.125f : channels[static_cast<size_t>(r)];
        ASSERT_EQ(row[static_cast<size_t>(c)], f8e4m3_to_f32(wb[r * K + c]) * sc) << r << "," << c;
      }
    }
  }
}

TEST(Fp8, InconsistentScalesAndShapesAreLoadErrors) {
  Tensor w = Tensor::empty(DType::kF8E4M3, {130, 256});
  std::memset(w.data(), 0, static_cast<size_t>(w.nbytes()));
  auto message = [&](const Tensor& s, const std::vector<int64_t>& b) {
    try {
      pack_fp8_weight(w, s, b, "layer.w");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(Tensor::from_f32({1, 1, 1}, {3}), {128, 128}).find("expected [2, 2]"), std::string::npos);
  EXPECT_NE(message(Tensor::from_f32({1, 1, 1}, {3}), {}).find("one per output row"), std::string::npos);
  EXPECT_NE(message(Tensor::from_f32({-1}, {1}), {}).find("not a finite non-negative"), std::string::npos);
  EXPECT_NE(message(Tensor::from_f32({NAN}, {1}), {}).find("not a finite non-negative"), std::string::npos);
  EXPECT_NE(message(Tensor::from_f32({1, 1, 1, 1}, {2, 2}), {128, 64}).find("multiple of 128"), std::string::npos);
  static_cast<uint8_t*>(w.data())[300] = 0xFF;  // a NaN code
  EXPECT_NE(message(Tensor::from_f32({1}, {1}), {}).find("NaN code at [1, 44]"), std::string::npos);
  static_cast<uint8_t*>(w.data())[300] = 0;
  Tensor narrow = Tensor::empty(DType::kF8E4M3, {4, 100});
  EXPECT_THROW(pack_fp8_weight(narrow, Tensor::from_f32({1}, {1}), {}, "w"), Error);
  EXPECT_EQ(message(Tensor::from_f32({1}, {1}), {}), "no error");
}

TEST(Fp8, ConfigErrorsNameTheField) {
  const std::string base = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10, )";
  auto parse_error = [&](const std::string& q) {
    try {
      ModelConfig::parse(base + "\"quantization_config\": " + q + "}", "config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(parse_error(R"({"quant_method": "gptq"})").find("quant_method 'gptq' is not supported"), std::string::npos);
  EXPECT_NE(parse_error(R"({"quant_method": "fp8", "weight_block_size": [128]})").find("weight_block_size"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"quant_method": "fp8", "fmt": "e5m2"})").find("fmt"), std::string::npos);
  EXPECT_EQ(parse_error(R"({"quant_method": "fp8", "weight_block_size": [128, 128]})"), "no error");
  ModelConfig c = ModelConfig::parse(base + R"("quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128],
      "modules_to_not_convert": ["lm_head"]}})", "config.json");
  ASSERT_TRUE(c.fp8.has_value());
  EXPECT_EQ(c.fp8->weight_block_size, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(c.fp8->modules_to_not_convert, (std::vector<std::string>{"lm_head"}));
}

TEST(Fp8, ConvertedModelMatchesItsDequantizedWeightsInF32) {
  const std::string src = temp_dir("src"), fp8 = temp_dir("fp8"), ref = temp_dir("ref");
  write_llama(src);
  const Fp8ConvertReport report = convert_checkpoint_to_fp8(src, fp8);
  EXPECT_EQ(report.quantized, 2 * 7);
  EXPECT_TRUE(report.left_unquantized.empty());
  EXPECT_THROW(convert_checkpoint_to_fp8(src, fp8), Error);  // refuses to overwrite
  EXPECT_THROW(convert_checkpoint_to_fp8(fp8, temp_dir("again")), Error);  // already FP8
  write_dequantized(fp8, ref, 128);

  auto fast = make_cpu_backend(false), slow = make_cpu_backend(true);
  auto model = load_model(fp8, *fast);
  auto reference = load_model(ref, *slow);
  // Every projection weight is held as FP8 blocks: 2 layers x (128x(4+2+2)*32 + 128x128 + 3x128x256).
  const int64_t fp8_params = 2 * (128 * 256 + 128 * 128 + 3 * 128 * 256);
  EXPECT_EQ(model->parameters_by_dtype().at("f8_e4m3_b128"), fp8_params);

  const std::vector<int32_t> prompt = {3, 17, 250, 9, 41, 5, 77, 120, 2, 64, 199};
  const Tensor a = prompt_logits(*model, *fast, prompt), b = prompt_logits(*reference, *slow, prompt);
  float worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::fabs(a.data_as<float>()[i] - b.data_as<float>()[i]));
  EXPECT_LE(worst, 1e-4f);
  GreedyOptions g;
  g.max_new_tokens = 16;
  g.ignore_eos = true;
  EXPECT_EQ(greedy_generate(*model, *fast, prompt, g), greedy_generate(*reference, *slow, prompt, g));

  // A scale that does not fit its weight is a load error naming the tensor.
  Checkpoint ck = Checkpoint::open(fp8);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : ck.names())
    tensors.emplace_back(n, n == "model.layers.0.mlp.up_proj.weight_scale_inv" ? Tensor::from_f32({1, 1, 1}, {1, 3})
                                                                               : ck.get(n));
  const std::string bad = temp_dir("bad");
  save_safetensors(bad + "/model.safetensors", tensors);
  fs::copy_file(fp8 + "/config.json", bad + "/config.json");
  try {
    load_model(bad, *fast);
    ADD_FAILURE() << "a misshapen scale loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << e.what();
  }
}

TEST(Fp8, FastLinearOnFp8BlocksMatchesTheReference) {
  const int64_t N = 37, K = 384;
  Tensor w = Tensor::empty(DType::kF8E4M3, {N, K});
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < w.numel(); ++i) {
    int v = byte(rng());
    if ((v & 0x7F) == 0x7F) v = 0;  // no NaNs
    static_cast<uint8_t*>(w.data())[i] = static_cast<uint8_t>(v);
  }
  std::vector<float> ch(N);
  for (float& v : ch) v = 0.001f * static_cast<float>(1 + byte(rng()));
  Tensor packed = pack_fp8_weight(w, Tensor::from_f32(ch, {N}), {}, "w");
  Tensor x = Tensor::empty(DType::kF32, {9, K});
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = nd(rng());
  for (int64_t M : {1, 4, 9}) {
    Tensor xm = x.slice_rows(0, M);
    Tensor ref = Tensor::empty(DType::kF32, {M, N}), fast = Tensor::empty(DType::kF32, {M, N});
    cpu::ref::linear(xm, packed, nullptr, ref);
    cpu::fast::linear(xm, packed, nullptr, fast);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      const double d = fast.data_as<float>()[i] - ref.data_as<float>()[i];
      num += d * d;
      den += static_cast<double>(ref.data_as<float>()[i]) * ref.data_as<float>()[i];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-5) << "M=" << M;
  }
}

}  // namespace
}  // namespace redhare
