// Engine invariants: a request's output never depends on what else runs, on preemption, or on
// the prefix cache; sampling with a seed is reproducible; no KV block leaks.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/sampler.h"

namespace redhare {
namespace {

struct Fixture {
  std::unique_ptr<Backend> backend = make_cpu_backend();
  std::unique_ptr<Model> model =
      load_model(std::string(REDHARE_SOURCE_DIR) + "/fixtures/models/llama_gqa", *backend);
};

Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int64_t len) {
  std::uniform_int_distribution<int32_t> d(3, 500);
  std::vector<int32_t> p;
  for (int64_t i = 0; i < len; ++i) p.push_back(d(rng));
  return p;
}

std::vector<int32_t> alone_greedy(const std::vector<int32_t>& prompt, int64_t n) {
  GreedyOptions g;
  g.max_new_tokens = n;
  g.ignore_eos = true;
  return greedy_generate(*fx().model, *fx().backend, prompt, g);
}

// Drains a finished request's stream into its token ids and final output.
std::vector<int32_t> collect(RequestStream& s, RequestOutput* last = nullptr, std::string* text = nullptr) {
  std::vector<int32_t> ids;
  RequestOutput o;
  while (s.try_next(&o)) {
    ids.insert(ids.end(), o.token_ids.begin(), o.token_ids.end());
    if (text) *text += o.text;
    if (last) *last = o;
  }
  return ids;
}

Request greedy_request(std::vector<int32_t> prompt, int64_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

TEST(Engine, BatchOf32MatchesEachRequestAlone) {
  std::mt19937 rng(1);
  EngineConfig cfg;
  cfg.max_batched_tokens = 64;  // forces chunked prefill mixed with decodes
  cfg.max_running = 32;
  Engine engine(*fx().model, *fx().backend, cfg);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 32; ++i) {
    prompts.push_back(random_prompt(rng, 1 + (i * 37) % 90));
    streams.push_back(engine.submit(greedy_request(prompts.back(), 12)));
  }
  engine.run_until_idle();
  for (int i = 0; i < 32; ++i) {
    RequestOutput last;
    EXPECT_EQ(collect(*streams[static_cast<size_t>(i)], &last), alone_greedy(prompts[static_cast<size_t>(i)], 12)) << "request " << i;
    EXPECT_TRUE(last.finished);
    EXPECT_EQ(last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(last.completion_tokens, 12);
    EXPECT_EQ(last.prompt_tokens, static_cast<int64_t>(prompts[static_cast<size_t>(i)].size()));
  }
  EngineStats st = engine.stats();
  EXPECT_EQ(st.blocks_used, 0) << "blocks leaked";
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_GT(st.steps, 12);
}

TEST(Engine, PreemptionGivesIdenticalOutputs) {
  std::mt19937 rng(2);
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_blocks = 24;  // 96 tokens for 8 requests of up to 50: preemption is unavoidable
  cfg.enable_prefix_caching = false;
  Engine engine(*fx().model, *fx().backend, cfg);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(random_prompt(rng, 10 + i * 4));
    streams.push_back(engine.submit(greedy_request(prompts.back(), 16)));
  }
  engine.run_until_idle();
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(collect(*streams[static_cast<size_t>(i)]), alone_greedy(prompts[static_cast<size_t>(i)], 16)) << "request " << i;
  EngineStats st = engine.stats();
  EXPECT_GT(st.preemptions, 0) << "the test did not exercise preemption";
  EXPECT_EQ(st.blocks_used, 0);
}

TEST(Engine, PrefixCacheHitsAndGivesIdenticalOutputs) {
  std::mt19937 rng(3);
  std::vector<int32_t> shared = random_prompt(rng, 40);
  EngineConfig cfg;
  cfg.block_size = 8;
  Engine engine(*fx().model, *fx().backend, cfg);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p = shared;
    std::vector<int32_t> tail = random_prompt(rng, 3 + i);
    p.insert(p.end(), tail.begin(), tail.end());
    prompts.push_back(p);
  }
  prompts.push_back(shared);  // exactly the cached prefix: the last token is still computed
  std::vector<int64_t> cached;
  for (const auto& p : prompts) {
    auto s = engine.submit(greedy_request(p, 10));
    engine.run_until_idle();  // one after another, so later ones find the earlier ones' blocks
    RequestOutput last;
    EXPECT_EQ(collect(*s, &last), alone_greedy(p, 10));
    cached.push_back(last.cached_tokens);
  }
  EXPECT_EQ(cached[0], 0);
  for (size_t i = 1; i < cached.size() - 1; ++i) EXPECT_EQ(cached[i], 40) << i;
  EXPECT_EQ(cached.back(), 32);  // 40 tokens, last one recomputed: 4 full blocks of 8
  EngineStats st = engine.stats();
  EXPECT_GT(st.prefix_hit_tokens, 0);
  EXPECT_GT(st.blocks_cached, 0);
  EXPECT_EQ(st.blocks_used, 0);
}

TEST(Engine, SeededSamplingIsReproducibleAcrossBatches) {
  std::mt19937 rng(4);
  std::vector<int32_t> prompt = random_prompt(rng, 9);
  auto sampled = [&](uint64_t seed, int others) {
    EngineConfig cfg;
    cfg.max_batched_tokens = 32;
    Engine engine(*fx().model, *fx().backend, cfg);
    std::mt19937 orng(99);
    for (int i = 0; i < others; ++i) {
      Request o = greedy_request(random_prompt(orng, 5 + i * 3), 8);
      o.sampling.temperature = 1.2f;
      engine.submit(o);
    }
    Request r = greedy_request(prompt, 24);
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.95f;
    r.sampling.top_k = 50;
    r.sampling.seed = seed;
    auto s = engine.submit(r);
    engine.run_until_idle();
    return collect(*s);
  };
  std::vector<int32_t> a = sampled(42, 0);
  EXPECT_EQ(a, sampled(42, 7));
  EXPECT_EQ(a, sampled(42, 3));
  EXPECT_NE(a, sampled(43, 0));
  EXPECT_NE(a, alone_greedy(prompt, 24)) << "temperature 0.9 should not reproduce greedy";
}

// Text of token t is "<t>", so stop strings can be built across token boundaries.
class IdText : public TextStream {
 public:
  std::string push(int32_t t) override { return "<" + std::to_string(t) + ">"; }
};
TextStreamFactory id_text() {
  return [](const std::vector<int32_t>&) { return std::make_unique<IdText>(); };
}

TEST(Engine, StopStringsAcrossTokensNeverLeak) {
  std::mt19937 rng(5);
  std::vector<int32_t> prompt = random_prompt(rng, 6);
  std::vector<int32_t> greedy = alone_greedy(prompt, 12);
  // A stop string made of the end of token 4's text and the start of token 5's.
  std::string t4 = "<" + std::to_string(greedy[4]) + ">", t5 = "<" + std::to_string(greedy[5]) + ">";
  std::string stop = t4.substr(1) + t5.substr(0, 2);
  Engine engine(*fx().model, *fx().backend, EngineConfig{}, id_text());
  Request r = greedy_request(prompt, 12);
  r.sampling.stop = {stop, "never-matches"};
  auto s = engine.submit(r);
  engine.run_until_idle();
  RequestOutput last;
  std::string text;
  std::vector<int32_t> ids = collect(*s, &last, &text);
  EXPECT_EQ(last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(last.stop_reason, stop);
  EXPECT_EQ(ids, std::vector<int32_t>(greedy.begin(), greedy.begin() + 6));
  std::string expect;
  for (int i = 0; i < 4; ++i) expect += "<" + std::to_string(greedy[static_cast<size_t>(i)]) + ">";
  expect += "<";
  EXPECT_EQ(text, expect);
  EXPECT_EQ(text.find(stop), std::string::npos);
}

TEST(Engine, StopTokensEosAndLength) {
  std::mt19937 rng(6);
  std::vector<int32_t> prompt = random_prompt(rng, 5);
  std::vector<int32_t> greedy = alone_greedy(prompt, 10);
  const int32_t eos = greedy[3];
  const size_t first_eos = static_cast<size_t>(std::find(greedy.begin(), greedy.end(), eos) - greedy.begin());
  EngineConfig cfg;
  cfg.eos_token_ids = {eos};
  Engine engine(*fx().model, *fx().backend, cfg);

  Request r = greedy_request(prompt, 10);
  r.sampling.ignore_eos = false;
  auto s1 = engine.submit(r);
  r.sampling.ignore_eos = true;
  auto s2 = engine.submit(r);
  r.sampling.stop_token_ids = {greedy[2]};
  auto s3 = engine.submit(r);
  engine.run_until_idle();
  RequestOutput l1, l2, l3;
  EXPECT_EQ(collect(*s1, &l1).size(), first_eos + 1);
  EXPECT_EQ(l1.finish_reason, FinishReason::kStop);
  EXPECT_EQ(collect(*s2, &l2), greedy);
  EXPECT_EQ(l2.finish_reason, FinishReason::kLength);
  std::vector<int32_t> i3 = collect(*s3, &l3);
  EXPECT_EQ(i3.back(), greedy[2]);
  EXPECT_EQ(l3.stop_reason, std::to_string(greedy[2]));
}

TEST(Engine, LogprobsDescribeTheModelDistribution) {
  std::mt19937 rng(7);
  std::vector<int32_t> prompt = random_prompt(rng, 8);
  Engine engine(*fx().model, *fx().backend, EngineConfig{});
  Request r = greedy_request(prompt, 3);
  r.sampling.logprobs = 5;
  auto s = engine.submit(r);
  engine.run_until_idle();
  RequestOutput o;
  ASSERT_TRUE(s->try_next(&o));
  ASSERT_EQ(o.logprobs.size(), 1u);
  const TokenLogprob& lp = o.logprobs[0];
  ASSERT_EQ(lp.top.size(), 5u);
  EXPECT_EQ(lp.top[0].first, o.token_ids[0]);  // greedy picks the most likely token
  EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
  for (size_t i = 1; i < lp.top.size(); ++i) EXPECT_GE(lp.top[i - 1].second, lp.top[i].second);
  // Against the logits computed directly.
  Tensor logits = prompt_logits(*fx().model, *fx().backend, prompt);
  const int64_t V = logits.size(1);
  const float* row = logits.data_as<float>() + (static_cast<int64_t>(prompt.size()) - 1) * V;
  double mx = *std::max_element(row, row + V), sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] - mx);
  EXPECT_NEAR(lp.logprob, row[o.token_ids[0]] - mx - std::log(sum), 1e-4);
}

TEST(Engine, PriorityRunsFirst) {
  std::mt19937 rng(8);
  EngineConfig cfg;
  cfg.max_running = 1;
  std::vector<std::string> order;
  std::mutex mu;
  class Tagged : public TextStream {
   public:
    Tagged(std::string tag, std::vector<std::string>* log, std::mutex* m) : tag_(std::move(tag)), log_(log), mu_(m) {}
    std::string push(int32_t) override {
      std::lock_guard<std::mutex> l(*mu_);
      if (log_->empty() || log_->back() != tag_) log_->push_back(tag_);
      return "";
    }
    std::string tag_;
    std::vector<std::string>* log_;
    std::mutex* mu_;
  };
  std::map<std::vector<int32_t>, std::string> tags;
  std::vector<int32_t> pa = random_prompt(rng, 5), pb = random_prompt(rng, 6);
  tags[pa] = "low";
  tags[pb] = "high";
  Engine engine(*fx().model, *fx().backend, cfg, [&](const std::vector<int32_t>& p) {
    return std::make_unique<Tagged>(tags[p], &order, &mu);
  });
  Request a = greedy_request(pa, 5);
  a.priority = 10;
  Request b = greedy_request(pb, 5);
  b.priority = 0;
  engine.submit(a);
  engine.submit(b);
  engine.run_until_idle();
  EXPECT_EQ(order, (std::vector<std::string>{"high", "low"}));
}

TEST(Engine, CancelFreesBlocksMidStream) {
  Engine engine(*fx().model, *fx().backend, EngineConfig{});
  engine.start();
  std::mt19937 rng(9);
  auto s = engine.submit(greedy_request(random_prompt(rng, 20), 200));
  RequestOutput o;
  ASSERT_TRUE(s->next(&o));
  ASSERT_TRUE(s->next(&o));
  engine.cancel(s->id());
  bool aborted = false;
  while (s->next(&o))
    if (o.finished) aborted = o.finish_reason == FinishReason::kAbort;
  EXPECT_TRUE(aborted);
  EXPECT_LT(o.completion_tokens, 200);
  for (int i = 0; i < 100 && engine.stats().running > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(engine.stats().blocks_used, 0);
  engine.stop();
}

TEST(Engine, RejectsRequestsThatCanNeverRun) {
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_blocks = 8;
  Engine engine(*fx().model, *fx().backend, cfg);
  auto msg = [&](Request r) {
    try {
      engine.submit(std::move(r));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg(greedy_request(std::vector<int32_t>(250, 5), 10)).find("maximum context length is 256 tokens, but the request has 250 prompt tokens and max_tokens 10"), std::string::npos);
  EXPECT_NE(msg(greedy_request(std::vector<int32_t>(30, 5), 10)).find("needs 10 KV blocks"), std::string::npos);
  EXPECT_NE(msg(greedy_request({}, 10)).find("empty"), std::string::npos);
  EXPECT_NE(msg(greedy_request({9999}, 10)).find("outside the vocabulary"), std::string::npos);
  Request r = greedy_request({5}, 4);
  r.sampling.top_p = 0;
  EXPECT_NE(msg(r).find("top_p"), std::string::npos);
  r = greedy_request({5}, 4);
  r.sampling.stop = {"x"};
  EXPECT_NE(msg(r).find("need a tokenizer"), std::string::npos);
}

TEST(Sampler, FiltersAndPenalties) {
  std::vector<float> logits = {1.0f, 3.0f, 2.9f, -1.0f, 0.5f};
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(sample_token(logits.data(), 5, p, {0}, 0, 1, 0).token, 1);
  // Repetition penalty on token 1 (seen in history) makes token 2 the greedy choice.
  p.repetition_penalty = 1.2f;
  EXPECT_EQ(sample_token(logits.data(), 5, p, {1}, 0, 1, 0).token, 2);
  p.repetition_penalty = 1.0f;
  p.presence_penalty = 0.5f;  // output tokens only: token 1 appears once in the output
  EXPECT_EQ(sample_token(logits.data(), 5, p, {4, 1}, 1, 1, 0).token, 2);
  p.presence_penalty = 0;
  // top_k = 1 always gives the argmax; min_p = 0.9 keeps tokens within 10% of the best.
  p.temperature = 1.0f;
  p.top_k = 1;
  for (int step = 0; step < 50; ++step) EXPECT_EQ(sample_token(logits.data(), 5, p, {0}, 0, 7, step).token, 1);
  p.top_k = 0;
  p.min_p = 0.9f;
  for (int step = 0; step < 200; ++step) {
    int32_t t = sample_token(logits.data(), 5, p, {0}, 0, 7, step).token;
    EXPECT_TRUE(t == 1 || t == 2) << t;
  }
  // top_p = 0.4: token 1 alone holds 46.7% of the mass, so nothing else is kept.
  p.min_p = 0;
  p.top_p = 0.4f;
  for (int step = 0; step < 50; ++step) EXPECT_EQ(sample_token(logits.data(), 5, p, {0}, 0, 3, step).token, 1);
  // Plain sampling follows the softmax: token frequencies within a few percent.
  p.top_p = 1.0f;
  std::vector<int> counts(5);
  for (int step = 0; step < 20000; ++step) ++counts[static_cast<size_t>(sample_token(logits.data(), 5, p, {0}, 0, 11, step).token)];
  double z = 0;
  for (float l : logits) z += std::exp(l);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(counts[i] / 20000.0, std::exp(logits[i]) / z, 0.015) << i;
}

TEST(Sampler, PenaltyHistoryListsEachTokenOnceWithOutputCounts) {
  RowSampling p;
  set_penalty_history(p, {3, 5, 3, 7, 5, 5}, 3, 10);
  EXPECT_TRUE(p.penalty_tokens.empty());  // no penalty set: nothing to list
  p.frequency_penalty = 0.5f;
  // Prompt {3, 5, 3}, output {7, 5, 5}; ids outside the vocabulary are left out.
  set_penalty_history(p, {3, 5, 3, 7, 5, 5, 12}, 4, 10);
  EXPECT_EQ(p.penalty_tokens, (std::vector<int32_t>{3, 5, 7}));
  EXPECT_EQ(p.output_counts, (std::vector<int32_t>{0, 2, 1}));
  EXPECT_ANY_THROW(set_penalty_history(p, {1, 2}, 3, 10));
}

TEST(Sampler, BackendSampleRowsDrawsEachRowAsTheReference) {
  auto cpu = make_cpu_backend();
  const int64_t V = 300;
  std::vector<float> l(static_cast<size_t>(3 * V));
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(std::sin(static_cast<double>(i) * 0.37) * 4.0);
  Tensor logits = Tensor::from_f32(l, {3, V});
  std::vector<RowSampling> rows(2);
  rows[0].temperature = 0.9f;
  rows[0].top_p = 0.8f;
  rows[0].seed = 5;
  rows[0].logprobs = 3;
  rows[1].repetition_penalty = 1.5f;
  set_penalty_history(rows[1], {17, 17, 40}, 0, V);
  for (uint64_t step = 0; step < 20; ++step) {
    rows[0].step = step;
    const std::vector<SampledToken> got = cpu->sample_rows(logits, rows);  // 2 of the 3 rows
    ASSERT_EQ(got.size(), 2u);
    for (size_t r = 0; r < 2; ++r) {
      const SampledToken ref = sample_row_reference(l.data() + static_cast<int64_t>(r) * V, V, rows[r]);
      EXPECT_EQ(got[r].token, ref.token);
      EXPECT_EQ(got[r].logprob, ref.logprob);
      EXPECT_EQ(got[r].top, ref.top);
    }
    EXPECT_EQ(got[0].top.size(), 3u);
  }
  EXPECT_ANY_THROW(cpu->sample_rows(logits, std::vector<RowSampling>(4)));
}

TEST(BlockManager, RefCountsAndLruEviction) {
  BlockManager bm(4, 2, true);
  std::vector<int32_t> toks = {1, 2, 3, 4, 5};
  auto a = *bm.allocate(), b = *bm.allocate();
  uint64_t h = bm.commit(a, BlockManager::kRootHash, toks.data());
  bm.commit(b, h, toks.data() + 2);
  bm.release(a);
  bm.release(b);
  EXPECT_EQ(bm.num_free(), 4);
  EXPECT_EQ(bm.num_cached(), 2);
  std::vector<int32_t> m = bm.match_prefix(toks);
  EXPECT_EQ(m, (std::vector<int32_t>{a, b}));
  EXPECT_EQ(bm.ref_count(a), 1);
  std::vector<int32_t> other = {1, 2, 9, 9};
  EXPECT_EQ(bm.match_prefix(other).size(), 1u);  // shares only the first block
  EXPECT_EQ(bm.ref_count(a), 2);
  bm.release(a);
  bm.release(a);
  bm.release(b);
  // Four allocations: two never-used blocks first, then cached ones, least recently used first.
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) got.push_back(*bm.allocate());
  EXPECT_FALSE(bm.allocate().has_value());
  EXPECT_EQ(got[2], a);  // released before b
  EXPECT_EQ(got[3], b);
  EXPECT_EQ(bm.num_cached(), 0);
}

}  // namespace
}  // namespace redhare

namespace redhare {
namespace {

// Text a stream holds back until the end (here: everything) must reach the final output.
class HoldAll : public TextStream {
 public:
  std::string push(int32_t t) override {
    held_ += '<';
    held_ += std::to_string(t);
    held_ += '>';
    return "";
  }
  std::string finish() override { return std::exchange(held_, ""); }
  std::string held_;
};

TEST(Engine, HeldBackTextIsFlushedAtTheEnd) {
  std::mt19937 rng(10);
  std::vector<int32_t> prompt = random_prompt(rng, 4);
  std::vector<int32_t> greedy = alone_greedy(prompt, 5);
  Engine engine(*fx().model, *fx().backend, EngineConfig{},
                [](const std::vector<int32_t>&) { return std::make_unique<HoldAll>(); });
  auto s = engine.submit(greedy_request(prompt, 5));
  engine.run_until_idle();
  std::string text;
  collect(*s, nullptr, &text);
  std::string expect;
  for (int32_t t : greedy) {
    expect += '<';
    expect += std::to_string(t);
    expect += '>';
  }
  EXPECT_EQ(text, expect);
}

}  // namespace
}  // namespace redhare

namespace redhare {
namespace {

TEST(Engine, PromptLogprobsMatchTheLogitsUnderChunkingAndPrefixCache) {
  std::mt19937 rng(11);
  std::vector<int32_t> prompt = random_prompt(rng, 37);
  EngineConfig cfg;
  cfg.max_batched_tokens = 8;  // the prompt arrives in five chunks
  cfg.block_size = 4;
  Engine engine(*fx().model, *fx().backend, cfg);
  // Warm the prefix cache with the same prompt: prompt logprobs must still cover every position.
  engine.submit(greedy_request(prompt, 2));
  engine.run_until_idle();
  Request r = greedy_request(prompt, 2);
  r.sampling.prompt_logprobs = 3;
  auto s = engine.submit(r);
  engine.run_until_idle();
  RequestOutput first;
  ASSERT_TRUE(s->try_next(&first));
  ASSERT_EQ(first.prompt_logprobs.size(), prompt.size() - 1);
  Tensor logits = prompt_logits(*fx().model, *fx().backend, prompt);
  const int64_t V = logits.size(1);
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    const float* row = logits.data_as<float>() + static_cast<int64_t>(i) * V;
    double mx = *std::max_element(row, row + V), sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
    const TokenLogprob& lp = first.prompt_logprobs[i];
    EXPECT_EQ(lp.token, prompt[i + 1]);
    EXPECT_NEAR(lp.logprob, row[prompt[i + 1]] - mx - std::log(sum), 1e-4) << i;
    EXPECT_EQ(lp.top.size(), 3u);
  }
  RequestOutput second;
  ASSERT_TRUE(s->try_next(&second));
  EXPECT_TRUE(second.prompt_logprobs.empty());
}

// ---- Overlapped decoding ----

// Everything a request's stream said, flattened for comparison.
struct Transcript {
  std::vector<int32_t> ids;
  std::string text, stop_reason, error;
  FinishReason reason = FinishReason::kNone;
  std::vector<std::pair<int32_t, float>> logprobs;  // (token, logprob) per output token
  std::vector<std::vector<std::pair<int32_t, float>>> tops;
  size_t prompt_logprobs = 0;
  int64_t completion_tokens = 0;
  bool operator==(const Transcript& o) const {
    return ids == o.ids && text == o.text && stop_reason == o.stop_reason && error == o.error && reason == o.reason &&
           logprobs == o.logprobs && tops == o.tops && prompt_logprobs == o.prompt_logprobs &&
           completion_tokens == o.completion_tokens;
  }
};

Transcript transcript(RequestStream& s) {
  Transcript t;
  RequestOutput o;
  while (s.next(&o)) {
    t.ids.insert(t.ids.end(), o.token_ids.begin(), o.token_ids.end());
    t.text += o.text;
    for (const TokenLogprob& lp : o.logprobs) {
      t.logprobs.emplace_back(lp.token, lp.logprob);
      t.tops.push_back(lp.top);
    }
    t.prompt_logprobs += o.prompt_logprobs.size();
    if (o.finished) {
      t.reason = o.finish_reason;
      t.stop_reason = o.stop_reason;
      t.error = o.error;
      t.completion_tokens = o.completion_tokens;
    }
  }
  return t;
}

std::ostream& operator<<(std::ostream& os, const Transcript& t) {
  os << "[" << t.ids.size() << " tokens:";
  for (int32_t i : t.ids) os << " " << i;
  return os << "; reason " << finish_reason_name(t.reason) << " '" << t.stop_reason << "' " << t.error << "]";
}

// Requests that exercise every way a sequence ends or is drawn: lengths, EOS, stop tokens and
// strings (a stopped sequence wastes its queued step), seeded sampling, logprobs, penalties and
// prompt logprobs (which make the engine step one at a time).
std::vector<Request> overlap_requests(int32_t* eos) {
  std::mt19937 rng(21);
  std::vector<Request> rs;
  std::vector<int32_t> p0 = random_prompt(rng, 7);
  const std::vector<int32_t> g0 = alone_greedy(p0, 12);
  *eos = g0[4];
  for (int i = 0; i < 3; ++i) rs.push_back(greedy_request(random_prompt(rng, 3 + 9 * i), 14 + 3 * i));
  Request eos_r = greedy_request(p0, 12);
  eos_r.sampling.ignore_eos = false;  // stops at g0[4]'s first occurrence
  rs.push_back(eos_r);
  Request min_r = eos_r;
  min_r.sampling.min_tokens = 6;
  rs.push_back(min_r);
  Request stop_tok = greedy_request(p0, 12);
  stop_tok.sampling.stop_token_ids = {g0[2]};
  rs.push_back(stop_tok);
  Request stop_str = greedy_request(p0, 12);
  stop_str.sampling.stop = {std::to_string(g0[6]) + "><"};
  rs.push_back(stop_str);
  for (int i = 0; i < 2; ++i) {
    Request r = greedy_request(random_prompt(rng, 5 + i), 13);
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = 100 + i;
    rs.push_back(r);
  }
  Request lp = greedy_request(random_prompt(rng, 6), 9);
  lp.sampling.logprobs = 3;
  rs.push_back(lp);
  Request pen = greedy_request(random_prompt(rng, 8), 10);
  pen.sampling.repetition_penalty = 1.3f;
  rs.push_back(pen);
  Request plp = greedy_request(random_prompt(rng, 9), 6);
  plp.sampling.prompt_logprobs = 2;
  rs.push_back(plp);
  Request one = greedy_request(random_prompt(rng, 4), 1);
  rs.push_back(one);
  return rs;
}

std::vector<Transcript> run_requests(EngineConfig cfg, const std::vector<Request>& rs, EngineStats* stats) {
  Engine engine(*fx().model, *fx().backend, cfg, id_text());
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Request& r : rs) streams.push_back(engine.submit(r));
  engine.run_until_idle();
  std::vector<Transcript> out;
  for (auto& s : streams) out.push_back(transcript(*s));
  *stats = engine.stats();
  return out;
}

TEST(EngineOverlap, SameOutputsAsStepsOneAtATime) {
  int32_t eos = 0;
  const std::vector<Request> mixed = overlap_requests(&eos);
  // Without the penalty and prompt-logprobs requests, which make every step they share wait.
  std::vector<Request> plain;
  for (const Request& r : mixed)
    if (r.sampling.repetition_penalty == 1.0f && r.sampling.prompt_logprobs < 0) plain.push_back(r);
  ASSERT_EQ(plain.size() + 2, mixed.size());
  struct Variant {
    const char* name;
    int64_t max_running, max_batched_tokens, block_size, num_blocks;
  };
  // All at once; two running with the rest waiting; chunked prefill; a pool so small that
  // sequences are preempted.
  for (const Variant& v : {Variant{"all", 64, 512, 16, 0}, Variant{"two running", 2, 512, 16, 0},
                           Variant{"chunked", 64, 8, 16, 0}, Variant{"preempting", 64, 512, 4, 14}}) {
    for (const bool is_plain : {false, true}) {
      const std::vector<Request>& rs = is_plain ? plain : mixed;
      const std::string name = std::string(v.name) + (is_plain ? ", plain requests" : ", mixed requests");
      EngineConfig cfg;
      cfg.max_running = v.max_running;
      cfg.max_batched_tokens = v.max_batched_tokens;
      cfg.block_size = v.block_size;
      cfg.num_blocks = v.num_blocks;
      cfg.eos_token_ids = {eos};
      EngineStats off_stats, on_stats;
      cfg.overlap = EngineConfig::Overlap::kOff;
      const std::vector<Transcript> off = run_requests(cfg, rs, &off_stats);
      cfg.overlap = EngineConfig::Overlap::kOn;
      const std::vector<Transcript> on = run_requests(cfg, rs, &on_stats);
      ASSERT_EQ(off.size(), on.size());
      for (size_t i = 0; i < off.size(); ++i) EXPECT_EQ(on[i], off[i]) << name << ", request " << i;
      EXPECT_EQ(off_stats.overlapped_steps, 0) << name;
      EXPECT_EQ(on_stats.generated_tokens, off_stats.generated_tokens) << name;
      EXPECT_EQ(on_stats.blocks_used, 0) << name;
      EXPECT_EQ(off_stats.blocks_used, 0) << name;
      if (is_plain) {
        EXPECT_GT(on_stats.overlapped_steps, 0) << name;
      }
      // Where decodes overlap when they stop (elsewhere more than 8 of them, or preemption, make
      // those steps wait), sequences that stop on EOS, a stop token or a stop string waste their
      // queued step.
      if (is_plain && v.max_batched_tokens > 8 && v.num_blocks == 0) {
        EXPECT_GE(on_stats.wasted_tokens, 3) << name;
      }
      if (std::string(v.name) == "preempting") {
        EXPECT_GT(on_stats.preemptions, 0) << name << ": no preemption";
      }
    }
  }
}

TEST(EngineOverlap, ArrivalsAndCancelsWhileRunning) {
  std::mt19937 rng(22);
  EngineConfig cfg;
  cfg.overlap = EngineConfig::Overlap::kOn;
  Engine engine(*fx().model, *fx().backend, cfg);
  engine.start();
  auto doomed = engine.submit(greedy_request(random_prompt(rng, 12), 200));
  RequestOutput o;
  ASSERT_TRUE(doomed->next(&o));
  ASSERT_TRUE(doomed->next(&o));
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(random_prompt(rng, 4 + 5 * i));
    streams.push_back(engine.submit(greedy_request(prompts.back(), 11)));
    ASSERT_TRUE(doomed->next(&o));  // one more step between arrivals
  }
  engine.cancel(doomed->id());
  bool aborted = false;
  while (doomed->next(&o))
    if (o.finished) aborted = o.finish_reason == FinishReason::kAbort;
  EXPECT_TRUE(aborted);
  for (size_t i = 0; i < streams.size(); ++i) {
    const Transcript t = transcript(*streams[i]);
    EXPECT_EQ(t.ids, alone_greedy(prompts[i], 11)) << "request " << i;
    EXPECT_EQ(t.reason, FinishReason::kLength);
  }
  for (int i = 0; i < 200 && engine.stats().running > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EngineStats st = engine.stats();
  EXPECT_GT(st.overlapped_steps, 0);
  EXPECT_EQ(st.blocks_used, 0);
  engine.stop();
}

TEST(EngineOverlap, BackendDefaultsKeepDrawsInOrder) {
  // The Backend defaults (the CPU backend's): draws come back in order, the latest draw's tokens
  // feed embedding_drawn, and more than kMaxDrawsInFlight uncollected draws are refused.
  Backend& be = *fx().backend;
  Tensor logits = Tensor::from_f32({0, 3, 1, 9, 2, 0, 5, 4, 8, 1, 7, 6}, {3, 4});
  std::vector<RowSampling> greedy(3);
  be.draw_rows_async(logits, greedy);
  Tensor shifted = Tensor::from_f32({3, 0, 1, 2, 0, 1, 9, 4}, {2, 4});
  be.draw_rows_async(shifted, std::vector<RowSampling>(2));
  EXPECT_THROW(be.draw_rows_async(shifted, std::vector<RowSampling>(2)), std::logic_error);
  Tensor table = Tensor::from_f32({0, 0, 1, 1, 2, 2, 3, 3}, {4, 2});
  Tensor out = Tensor::empty(DType::kF32, {3, 2});
  be.embedding_drawn(table, {2, 0, 3}, {-1, 1, 0}, out);  // the latest draw's tokens: 0, 2
  EXPECT_EQ(std::vector<float>(out.data_as<float>(), out.data_as<float>() + 6), (std::vector<float>{2, 2, 2, 2, 0, 0}));
  EXPECT_THROW(be.embedding_drawn(table, {1}, {2}, out), std::logic_error);  // no row 2 in the latest draw
  std::vector<SampledToken> a = be.collect_draw(), b = be.collect_draw();
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(a[0].token, 3);
  EXPECT_EQ(a[1].token, 2);
  EXPECT_EQ(a[2].token, 0);
  EXPECT_EQ(b[0].token, 0);
  EXPECT_EQ(b[1].token, 2);
  EXPECT_THROW(be.collect_draw(), std::logic_error);
}

}  // namespace
}  // namespace redhare
