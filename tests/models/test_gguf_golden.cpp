// A llama GGUF as llama.cpp's converter writes it (q/k rows interleaved for pairwise rotation,
// Llama 3 rope scaling as rope_freqs.weight divisors, tied embeddings, BF16 tensors), made from the
// llama3_mqa_tied golden fixture by tools/gguf/make_llama_gguf_fixture.py, must give the logits
// transformers computed for the safetensors original (same tolerance as test_golden.cpp).
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "formats/safetensors.h"
#include "models/gguf_model.h"

namespace redhare {
namespace {

TEST(GgufGolden, ConvertedLlama3MatchesTransformers) {
  const std::string root = REDHARE_SOURCE_DIR;
  auto backend = make_cpu_backend();
  auto model = load_model(root + "/fixtures/gguf/llama3_mqa_tied.gguf", *backend);
  EXPECT_FALSE(model->config().rope_freq_factors.empty());
  EXPECT_TRUE(model->config().tie_word_embeddings);
  auto golden = SafetensorsFile::open(root + "/fixtures/models/llama3_mqa_tied/golden.safetensors");
  for (int i = 0; i < 4; ++i) {
    const std::string s = std::to_string(i);
    Tensor p = golden->tensor("prompt_" + s);
    std::vector<int32_t> prompt(p.data_as<int32_t>(), p.data_as<int32_t>() + p.numel());
    Tensor ref = golden->tensor("logits_" + s);
    Tensor got = prompt_logits(*model, *backend, prompt);
    ASSERT_EQ(got.numel(), ref.numel());
    float worst = 0;
    for (int64_t k = 0; k < got.numel(); ++k)
      worst = std::max(worst, std::fabs(got.data_as<float>()[k] - ref.data_as<float>()[k]));
    EXPECT_LE(worst, 1e-3f) << "prompt " << i;
    Tensor want = golden->tensor("greedy_" + s);
    GreedyOptions g;
    g.max_new_tokens = want.numel();
    g.ignore_eos = true;
    std::vector<int32_t> out = greedy_generate(*model, *backend, prompt, g);
    const float* margins = golden->tensor("margin_" + s).data_as<float>();
    for (int64_t t = 0; t < want.numel(); ++t) {
      ASSERT_EQ(out[static_cast<size_t>(t)], want.data_as<int32_t>()[t]) << "prompt " << i << " step " << t;
      if (margins[t] < 2e-3f) break;
    }
  }
}

TEST(GgufGolden, RopeFactorsAreReadFromTheFile) {
  // The fixture's low frequencies are divided by the llama3 factor (8): the divisors must reach
  // the config, one per frequency.
  const std::string root = REDHARE_SOURCE_DIR;
  GgufFile f = GgufFile::open(root + "/fixtures/gguf/llama3_mqa_tied.gguf");
  ModelConfig c = config_from_gguf(f);
  ASSERT_EQ(c.rope_freq_factors.size(), static_cast<size_t>(c.head_dim / 2));
  EXPECT_TRUE(std::any_of(c.rope_freq_factors.begin(), c.rope_freq_factors.end(), [](float v) { return v > 1.5f; }));
}

}  // namespace
}  // namespace redhare
