// The engine on the CUDA backend: continuous batching with chunked prefill, and forced
// preemption, must give each request transformers' greedy continuation (fixtures/models), just
// as each request alone would.
#include <filesystem>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "engine/engine.h"
#include "formats/safetensors.h"

namespace redhare {
namespace {

using cuda_test::CudaTest;

std::vector<int32_t> ids_of(const Tensor& t) {
  const int32_t* p = t.data_as<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

struct Expected {
  std::vector<int32_t> prompt, greedy;
  std::vector<float> margins;
};

std::vector<Expected> golden_cases(const std::string& dir) {
  auto g = SafetensorsFile::open(dir + "/golden.safetensors");
  std::vector<Expected> out;
  for (int i = 0; g->has("prompt_" + std::to_string(i)); ++i) {
    const std::string s = std::to_string(i);
    Tensor m = g->tensor("margin_" + s);
    out.push_back({ids_of(g->tensor("prompt_" + s)), ids_of(g->tensor("greedy_" + s)),
                   std::vector<float>(m.data_as<float>(), m.data_as<float>() + m.numel())});
  }
  return out;
}

// Token-by-token comparison up to the first step where transformers' own top-2 margin is a
// near-tie (2e-3, as the CPU golden tests).
void expect_greedy(const std::vector<int32_t>& got, const Expected& e, const std::string& what) {
  ASSERT_EQ(got.size(), e.greedy.size()) << what;
  for (size_t t = 0; t < e.greedy.size(); ++t) {
    ASSERT_EQ(got[t], e.greedy[t]) << what << " step " << t;
    if (e.margins[t] < 2e-3f) break;
  }
}

void run_fixture(Backend& gpu, const std::string& name, EngineConfig cfg, bool expect_preemption) {
  const std::string dir = cuda_test::source_dir() + "/fixtures/models/" + name;
  auto model = load_model(dir, gpu);
  std::vector<Expected> cases = golden_cases(dir);
  Engine engine(*model, gpu, cfg);
  std::vector<std::shared_ptr<RequestStream>> streams;
  // Each prompt twice, so the batch holds 8 sequences of mixed lengths.
  for (int rep = 0; rep < 2; ++rep) {
    for (const Expected& e : cases) {
      Request r;
      r.prompt = e.prompt;
      r.sampling.temperature = 0;
      r.sampling.max_tokens = static_cast<int64_t>(e.greedy.size());
      r.sampling.ignore_eos = true;
      streams.push_back(engine.submit(r));
    }
  }
  engine.run_until_idle();
  for (size_t i = 0; i < streams.size(); ++i) {
    std::vector<int32_t> got;
    RequestOutput o;
    while (streams[i]->try_next(&o)) got.insert(got.end(), o.token_ids.begin(), o.token_ids.end());
    expect_greedy(got, cases[i % cases.size()], name + " request " + std::to_string(i));
  }
  EngineStats st = engine.stats();
  EXPECT_EQ(st.blocks_used, 0) << name << ": blocks leaked";
  if (expect_preemption) {
    EXPECT_GT(st.preemptions, 0) << name << ": the test did not preempt";
  }
}

class CudaEngine : public CudaTest {};

TEST_F(CudaEngine, BatchedChunkedPrefillMatchesTransformers) {
  for (const char* name : {"llama_gqa", "llama3_mqa_tied", "mistral_sliding", "qwen2_bias_tied", "qwen3_sharded"}) {
    EngineConfig cfg;
    cfg.max_batched_tokens = 16;  // prompts arrive in chunks, mixed with other sequences' decodes
    cfg.block_size = 4;
    run_fixture(*gpu, name, cfg, false);
  }
}

TEST_F(CudaEngine, PreemptionMatchesTransformers) {
  for (const char* name : {"llama_gqa", "qwen3_mqa_odd"}) {
    EngineConfig cfg;
    cfg.block_size = 4;
    cfg.num_blocks = 24;  // 96 tokens for 8 sequences of up to 56: preemption is unavoidable
    cfg.enable_prefix_caching = false;
    run_fixture(*gpu, name, cfg, true);
  }
}

}  // namespace
}  // namespace redhare
