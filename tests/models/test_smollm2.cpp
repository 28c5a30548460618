// The built-in default model, the real SmolLM2-135M-Instruct GGUF (Q4_1 weights, Q8_0 tied
// embeddings), against transformers loading the same GGUF (dequantized to float, run in float32;
// fixtures/smollm2/golden.safetensors, made by tools/make_smollm2_fixture.py).
//
// Tolerance: redhare dequantizes the same blocks to the same f32 values and computes in f32, so
// differences are summation order over 30 layers. We require max |logit - reference| <= 2e-3 on
// logits of magnitude ~25 (measured: under 1e-4), and identical greedy tokens up to the first
// step where transformers' top-2 margin is under 4e-3.
//
// The model file comes from scripts/fetch_default_model.sh (run by the test command); if it is
// missing the test fails and says so.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "formats/safetensors.h"
#include "models/assets.h"
#include "models/gguf_model.h"
#include "text/jinja/chat_template.h"

namespace redhare {
namespace {

constexpr float kLogitTolerance = 2e-3f;
constexpr float kNearTie = 4e-3f;

std::vector<int32_t> ids_of(const Tensor& t) {
  const int32_t* p = t.data_as<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

TEST(SmolLM2, MatchesTransformersOnTheRealGguf) {
  const std::string path = default_model_path();
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: run scripts/fetch_default_model.sh";
  auto backend = make_cpu_backend();
  auto model = load_model(path, *backend);
  TextAssets assets = load_text_assets(path, model->config());
  ASSERT_TRUE(assets.tokenizer);
  ASSERT_FALSE(assets.chat_template.empty());
  auto golden = SafetensorsFile::open(std::string(REDHARE_SOURCE_DIR) + "/fixtures/smollm2/golden.safetensors");
  auto conversations = nlohmann::ordered_json::parse(golden->header().metadata.at("conversations"));
  int checked = 0;
  for (size_t i = 0; i < conversations.size(); ++i, ++checked) {
    const std::string s = std::to_string(i);
    std::vector<int32_t> prompt = ids_of(golden->tensor("prompt_" + s));
    // Our tokenizer and chat template give the prompt transformers built.
    std::string text = jinja::apply_chat_template(assets.chat_template, conversations[i], nullptr, true, nullptr,
                                                  assets.bos_token, assets.eos_token);
    EXPECT_EQ(assets.tokenizer->encode(text, false), prompt) << "conversation " << i;

    Tensor logits = prompt_logits(*model, *backend, prompt);
    Tensor ref = golden->tensor("logits_" + s);
    const int64_t V = ref.numel();
    ASSERT_EQ(logits.size(1), V);
    const float* last = logits.data_as<float>() + (logits.size(0) - 1) * V;
    float worst = 0;
    for (int64_t v = 0; v < V; ++v) worst = std::max(worst, std::fabs(last[v] - ref.data_as<float>()[v]));
    EXPECT_LE(worst, kLogitTolerance) << "conversation " << i;

    std::vector<int32_t> want = ids_of(golden->tensor("greedy_" + s));
    const float* margins = golden->tensor("margin_" + s).data_as<float>();
    GreedyOptions g;
    g.max_new_tokens = static_cast<int64_t>(want.size());
    g.ignore_eos = true;
    std::vector<int32_t> got = greedy_generate(*model, *backend, prompt, g);
    for (size_t t = 0; t < want.size(); ++t) {
      ASSERT_EQ(got[t], want[t]) << "conversation " << i << " step " << t;
      if (margins[t] < kNearTie) break;
    }
  }
  EXPECT_EQ(checked, 4);
}

TEST(SmolLM2, FastAndReferenceBackendsAgreeOnQuantizedWeights) {
  const std::string path = default_model_path();
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: run scripts/fetch_default_model.sh";
  auto fast = make_cpu_backend(false);
  auto ref = make_cpu_backend(true);
  auto mf = load_model(path, *fast);
  auto mr = load_model(path, *ref);
  std::vector<int32_t> prompt = {1, 4093, 198, 19556, 905, 2, 198, 1, 520, 9531, 198};
  Tensor a = prompt_logits(*mf, *fast, prompt), b = prompt_logits(*mr, *ref, prompt);
  float worst = 0;
  for (int64_t k = 0; k < a.numel(); ++k) worst = std::max(worst, std::fabs(a.data_as<float>()[k] - b.data_as<float>()[k]));
  EXPECT_LE(worst, kLogitTolerance);
}

}  // namespace
}  // namespace redhare
