// Golden tests: redhare against Hugging Face transformers on the tiny random-weight checkpoints
// in fixtures/models (made by tools/make_golden_fixtures.py; transformers' float32 logits at every
// prompt position and its greedy continuation with the top-2 margin of each step).
//
// Tolerance: the checkpoints hold bf16 weights and both sides compute in f32 from identical
// values, so the only differences are summation order and libm rounding: about 1e-6 relative per
// matrix product, compounding over a few layers. We require max |logit - reference| <= 1e-3 with
// logits whose spread is 3 to 10: forty times the largest error observed (2.5e-5, llama3_mqa_tied)
// and two below any real bug (a wrong rope angle, a missed bias or norm moves logits by >0.1).
// Greedy tokens must be identical up to (not including) the first step where transformers' own
// top-2 margin is under 2e-3 (twice the tolerance): from such a near tie on either token is a
// correct answer and the continuations may legitimately part.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "formats/safetensors.h"

namespace redhare {
namespace {

constexpr float kLogitTolerance = 1e-3f;
constexpr float kNearTie = 2e-3f;

std::string fixture_dir(const std::string& name) {
  return std::string(REDHARE_SOURCE_DIR) + "/fixtures/models/" + name;
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(std::string(REDHARE_SOURCE_DIR) + "/fixtures/models"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int32_t> ids_of(const Tensor& t) {
  const int32_t* p = t.data_as<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float m = 0;
  const float* x = a.data_as<float>();
  const float* y = b.data_as<float>();
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

struct GoldenCase {
  std::string fixture;
  bool reference_backend;
};

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, LogitsAndGreedyMatchTransformers) {
  const GoldenCase& gc = GetParam();
  const std::string dir = fixture_dir(gc.fixture);
  auto backend = make_cpu_backend(gc.reference_backend);
  auto model = load_model(dir, *backend);
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  int prompts = 0;
  size_t compared = 0;
  float worst = 0;
  for (int i = 0; golden->has("prompt_" + std::to_string(i)); ++i, ++prompts) {
    const std::string s = std::to_string(i);
    std::vector<int32_t> prompt = ids_of(golden->tensor("prompt_" + s));
    Tensor ref_logits = golden->tensor("logits_" + s);

    Tensor logits = prompt_logits(*model, *backend, prompt);
    const float err = max_abs_diff(logits, ref_logits);
    worst = std::max(worst, err);
    EXPECT_LE(err, kLogitTolerance) << "prompt " << i;

    // The same logits when the prompt arrives in chunks of 5 over the cached prefix, with 4-token
    // KV blocks so chunks straddle block boundaries.
    SequenceOptions chunked;
    chunked.prefill_chunk = 5;
    chunked.block_size = 4;
    Tensor chunk_logits = prompt_logits(*model, *backend, prompt, chunked);
    EXPECT_LE(max_abs_diff(chunk_logits, ref_logits), kLogitTolerance) << "chunked prompt " << i;

    std::vector<int32_t> want = ids_of(golden->tensor("greedy_" + s));
    Tensor margins = golden->tensor("margin_" + s);
    GreedyOptions g;
    g.max_new_tokens = static_cast<int64_t>(want.size());
    g.ignore_eos = true;
    std::vector<int32_t> got = greedy_generate(*model, *backend, prompt, g);
    ASSERT_EQ(got.size(), want.size());
    for (size_t t = 0; t < want.size(); ++t) {
      if (margins.data_as<float>()[t] < kNearTie) break;  // a near tie: either token is right
      ASSERT_EQ(got[t], want[t]) << "prompt " << i << " step " << t;
      ++compared;  // over the fixture's prompts
    }
  }
  // Every fixture's greedy continuations are checked somewhere: prompts whose first step is
  // already a near tie check none.
  EXPECT_GE(compared, 1u) << gc.fixture;
  EXPECT_EQ(prompts, 4) << "fixture " << gc.fixture << " should hold four prompts";
  std::printf("[ golden   ] %s (%s backend): max |logit - transformers| = %.3g, %zu greedy steps identical\n",
              gc.fixture.c_str(), gc.reference_backend ? "reference" : "fast", worst, compared);
}

// The FP8 KV cache (e4m3 with a scale per token and KV head). e4m3 keeps 4 significant bits
// against bf16's 8, so each cached value carries up to 16x the rounding of a bf16 cache, and the
// logits drift accordingly. Measured on these fixtures (fast CPU backend, 4-token blocks, 5-token
// chunks): worst max |logit - transformers| 1.005 with FP8 against 0.075 with bf16, ratios
// 11-36 per prompt. The test allows 1.5 absolute and 64x the bf16 cache's drift on the same
// prompt, and compares greedy tokens up to the first step whose transformers top-2 margin is
// under four times that prompt's FP8 drift.
constexpr float kFp8KvTolerance = 1.5f;
constexpr float kFp8KvOverBf16 = 64.0f;

TEST(GoldenFp8KvCache, LogitsStayCloseToTransformers) {
  auto backend = make_cpu_backend();
  for (const std::string& name : fixture_names()) {
    const std::string dir = fixture_dir(name);
    auto model = load_model(dir, *backend);
    auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
    SequenceOptions fp8;
    fp8.kv_dtype = DType::kF8E4M3;
    fp8.block_size = 4;
    fp8.prefill_chunk = 5;  // later chunks read earlier tokens back from the FP8 cache
    SequenceOptions bf16 = fp8;
    bf16.kv_dtype = DType::kBF16;
    for (int i = 0; golden->has("prompt_" + std::to_string(i)); ++i) {
      const std::string s = std::to_string(i);
      std::vector<int32_t> prompt = ids_of(golden->tensor("prompt_" + s));
      const Tensor ref = golden->tensor("logits_" + s);
      const float err = max_abs_diff(prompt_logits(*model, *backend, prompt, fp8), ref);
      const float bf16_err = max_abs_diff(prompt_logits(*model, *backend, prompt, bf16), ref);
      EXPECT_LE(err, kFp8KvTolerance) << name << " prompt " << i;
      EXPECT_LE(err, kFp8KvOverBf16 * bf16_err) << name << " prompt " << i;
      std::vector<int32_t> want = ids_of(golden->tensor("greedy_" + s));
      Tensor margins = golden->tensor("margin_" + s);
      GreedyOptions g;
      static_cast<SequenceOptions&>(g) = fp8;
      g.max_new_tokens = static_cast<int64_t>(want.size());
      g.ignore_eos = true;
      std::vector<int32_t> got = greedy_generate(*model, *backend, prompt, g);
      ASSERT_EQ(got.size(), want.size());
      for (size_t t = 0; t < want.size(); ++t) {
        if (margins.data_as<float>()[t] < 4 * err) break;
        ASSERT_EQ(got[t], want[t]) << name << " prompt " << i << " step " << t;
      }
    }
  }
}

std::vector<GoldenCase> all_cases() {
  std::vector<GoldenCase> cases;
  for (const std::string& n : fixture_names()) {
    cases.push_back({n, false});
    cases.push_back({n, true});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& p) {
                           return p.param.fixture + (p.param.reference_backend ? "_ref" : "_fast");
                         });

TEST(GoldenFixtures, AllArchitecturesCovered) {
  std::set<std::string> archs;
  for (const std::string& n : fixture_names()) archs.insert(ModelConfig::load(fixture_dir(n)).architecture);
  for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"})
    EXPECT_TRUE(archs.count(a)) << a << " has no golden fixture";
}

}  // namespace
}  // namespace redhare
