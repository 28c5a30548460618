// The golden-fixture check of tests/models/test_golden.cpp, for any backend: prompt logits (whole
// and in 5-token chunks over 4-token blocks) against transformers' float32 logits, and greedy
// tokens up to the first near-tie. See that file for how the tolerances were chosen.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "engine/generate.h"
#include "formats/safetensors.h"

namespace redhare::cuda_test {

constexpr float kLogitTolerance = 1e-3f;
constexpr float kNearTie = 2e-3f;

inline std::string fixture_dir(const std::string& name) { return source_dir() + "/fixtures/models/" + name; }

inline std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(source_dir() + "/fixtures/models"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

inline std::vector<int32_t> ids_of(const Tensor& t) {
  const int32_t* p = t.data_as<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

inline float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float m = 0;
  const float* x = a.data_as<float>();
  const float* y = b.data_as<float>();
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    const float d = std::fabs(x[i] - y[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// Runs every prompt of fixture `name` on `backend`; returns the largest logit error seen.
// min_compared: greedy steps that must have been compared over the prompts (0 where the near-tie
// margin may exclude them all).
inline float check_golden_fixture(const std::string& name, Backend& backend,
                                  float tolerance = kLogitTolerance, float near_tie = kNearTie,
                                  size_t min_compared = 1) {
  const std::string dir = fixture_dir(name);
  auto model = load_model(dir, backend);
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  int prompts = 0;
  size_t compared = 0;
  float worst = 0;
  for (int i = 0; golden->has("prompt_" + std::to_string(i)); ++i, ++prompts) {
    const std::string s = std::to_string(i);
    std::vector<int32_t> prompt = ids_of(golden->tensor("prompt_" + s));
    Tensor ref_logits = golden->tensor("logits_" + s);

    const float whole = max_abs_diff(prompt_logits(*model, backend, prompt), ref_logits);
    EXPECT_LE(whole, tolerance) << "prompt " << i;
    SequenceOptions chunked;
    chunked.prefill_chunk = 5;
    chunked.block_size = 4;
    const float chunks = max_abs_diff(prompt_logits(*model, backend, prompt, chunked), ref_logits);
    EXPECT_LE(chunks, tolerance) << "chunked prompt " << i;
    worst = std::max({worst, whole, chunks});

    std::vector<int32_t> want = ids_of(golden->tensor("greedy_" + s));
    Tensor margins = golden->tensor("margin_" + s);
    GreedyOptions g;
    g.max_new_tokens = static_cast<int64_t>(want.size());
    g.ignore_eos = true;
    std::vector<int32_t> got = greedy_generate(*model, backend, prompt, g);
    EXPECT_EQ(got.size(), want.size());
    for (size_t t = 0; t < std::min(want.size(), got.size()); ++t) {
      // A near tie in transformers' own logits: either token is right from this step on.
      if (margins.data_as<float>()[t] < near_tie) break;
      EXPECT_EQ(got[t], want[t]) << "prompt " << i << " step " << t;
      if (got[t] != want[t]) break;
      ++compared;  // over the fixture's prompts
    }
  }
  // Every fixture's greedy continuations are checked somewhere: prompts whose first step is
  // already a near tie check none.
  EXPECT_GE(compared, min_compared) << name;
  std::printf("[ greedy   ] %s: %zu steps identical before the first near tie (under %.3g)\n", name.c_str(),
              compared, near_tie);
  EXPECT_EQ(prompts, 4) << "fixture " << name << " should hold four prompts";
  return worst;
}

}  // namespace redhare::cuda_test
