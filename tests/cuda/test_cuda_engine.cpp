// The engine on the CUDA backend: continuous batching with chunked prefill, and forced
// preemption, must give each request transformers' greedy continuation (fixtures/models), just
// as each request alone would.
#include <filesystem>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "engine/sampler.h"
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

// Overlapped decoding on the GPU (graph replays reading their ids from the previous draw on the
// device): every request's stream is what stepping one at a time gives, for greedy, seeded
// sampling with logprobs, and sequences stopped by EOS or a stop token (whose queued step's token
// is dropped).
struct Stream {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  FinishReason reason = FinishReason::kNone;
  bool operator==(const Stream& o) const { return ids == o.ids && logprobs == o.logprobs && reason == o.reason; }
};

std::vector<Stream> run_overlap_case(Backend& gpu, Model& model, const std::vector<Request>& rs, EngineConfig cfg,
                                     EngineStats* stats) {
  Engine engine(model, gpu, cfg);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Request& r : rs) streams.push_back(engine.submit(r));
  engine.run_until_idle();
  std::vector<Stream> out;
  for (auto& s : streams) {
    Stream st;
    RequestOutput o;
    while (s->try_next(&o)) {
      st.ids.insert(st.ids.end(), o.token_ids.begin(), o.token_ids.end());
      for (const TokenLogprob& lp : o.logprobs) st.logprobs.push_back(lp.logprob);
      if (o.finished) st.reason = o.finish_reason;
    }
    out.push_back(st);
  }
  *stats = engine.stats();
  return out;
}

TEST_F(CudaEngine, OverlappedStepsGiveTheSameStreams) {
  EXPECT_TRUE(gpu->overlaps_draws());
  const std::string dir = cuda_test::source_dir() + "/fixtures/models/llama_gqa";
  auto model = load_model(dir, *gpu);
  std::vector<Expected> cases = golden_cases(dir);
  std::vector<Request> rs;
  int32_t eos = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    Request r;
    r.prompt = cases[i].prompt;
    r.sampling.max_tokens = static_cast<int64_t>(cases[i].greedy.size());
    r.sampling.ignore_eos = true;
    r.sampling.temperature = 0;
    rs.push_back(r);  // greedy
    r.sampling.temperature = 0.8f;
    r.sampling.top_p = 0.9f;
    r.sampling.seed = 7 + i;
    r.sampling.logprobs = 2;
    rs.push_back(r);  // seeded sampling with logprobs
  }
  Request stop = rs[0];
  stop.sampling.stop_token_ids = {cases[0].greedy[3]};
  rs.push_back(stop);
  Request eos_r = rs[2];
  eos_r.sampling.ignore_eos = false;
  eos = cases[1].greedy[2];
  rs.push_back(eos_r);
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.eos_token_ids = {eos};
  EngineStats off_stats, on_stats;
  cfg.overlap = EngineConfig::Overlap::kOff;
  const std::vector<Stream> off = run_overlap_case(*gpu, *model, rs, cfg, &off_stats);
  cfg.overlap = EngineConfig::Overlap::kAuto;  // on: the CUDA backend runs ahead
  const std::vector<Stream> on = run_overlap_case(*gpu, *model, rs, cfg, &on_stats);
  ASSERT_EQ(on.size(), off.size());
  for (size_t i = 0; i < on.size(); ++i) {
    EXPECT_EQ(on[i].ids, off[i].ids) << "request " << i;
    EXPECT_EQ(on[i].logprobs, off[i].logprobs) << "request " << i;
    EXPECT_EQ(on[i].reason, off[i].reason) << "request " << i;
  }
  // The greedy streams are transformers' continuations.
  for (size_t i = 0; i < cases.size(); ++i) expect_greedy(on[2 * i].ids, cases[i], "overlapped greedy " + std::to_string(i));
  EXPECT_EQ(on.back().reason, FinishReason::kStop);
  EXPECT_EQ(on[on.size() - 2].reason, FinishReason::kStop);
  EXPECT_EQ(off_stats.overlapped_steps, 0);
  EXPECT_GT(on_stats.overlapped_steps, 0);
  EXPECT_GE(on_stats.wasted_tokens, 2);
  EXPECT_EQ(on_stats.blocks_used, 0);
}

TEST_F(CudaEngine, EmbeddingDrawnReadsTheLatestDrawOnTheDevice) {
  // Two async draws in flight; the lookup reads the second's tokens, before either is collected.
  Tensor logits_a = gpu->upload(Tensor::from_f32({0, 5, 1, 2, 7, 0, 1, 2}, {2, 4}));
  Tensor logits_b = gpu->upload(Tensor::from_f32({0, 1, 2, 9, 4, 1, 2, 3, 0, 0, 6, 1}, {3, 4}));
  gpu->draw_rows_async(logits_a, std::vector<RowSampling>(2));
  RowSampling lp;
  lp.logprobs = 1;  // the sampling path (not the argmax alone) feeds the ids too
  gpu->draw_rows_async(logits_b, {RowSampling{}, lp, RowSampling{}});
  Tensor table = gpu->upload(Tensor::from_f32({0, 0, 1, 1, 2, 2, 3, 3}, {4, 2}));
  Tensor out = gpu->alloc(DType::kF32, {4, 2});
  gpu->embedding_drawn(table, {1, 0, 0, 2}, {-1, 0, 2, 1}, out);  // draw b's tokens: 3, 0, 2
  const Tensor h = gpu->to_host(out);
  EXPECT_EQ(std::vector<float>(h.data_as<float>(), h.data_as<float>() + 8), (std::vector<float>{1, 1, 3, 3, 2, 2, 0, 0}));
  const std::vector<SampledToken> a = gpu->collect_draw(), b = gpu->collect_draw();
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(a[0].token, 1);
  EXPECT_EQ(a[1].token, 0);
  EXPECT_EQ(b[0].token, 3);
  EXPECT_EQ(b[1].token, 0);
  EXPECT_EQ(b[2].token, 2);
  ASSERT_EQ(b[1].top.size(), 1u);
  EXPECT_EQ(b[1].top[0].first, 0);
  EXPECT_THROW(gpu->collect_draw(), std::logic_error);
}

}  // namespace
}  // namespace redhare
