// CUDA graphs and the tensor-core mode of the CUDA backend.
//
// Graphs: decode steps replayed from a graph must give bit-identical logits to the same steps run
// eagerly (padding a batch up to its bucket changes no real row: every kernel computes a row
// independently of the others), across bucket sizes, changing contexts and block tables, and a
// change of KV cache.
//
// Tensor cores: matrix products of more than four rows round the activations to bf16/f16 and run
// on cuBLASLt; they are compared with the reference computed on the same rounded activations.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/ops.h"
#include "backends/cuda/gemm_lt.h"
#include "backends/cuda/kernels.h"
#include "golden_check.h"
#include "models/model.h"

namespace redhare::cuda_test {
namespace {

// Sequences prefilled one by one, then decoded together with a changing subset per step, each
// next token the greedy one. kLogits: the logits come back and the host takes their argmax; the
// other modes draw on the device (ForwardBatch::sampling, every row plain greedy): kSync with
// sample_rows, kSyncLogprobs the same with a logprob asked for row 0 (not a plain greedy row: a
// replay leaves the draw to sample_rows), kAsync overlapped, each step queued with its ids read
// on the device from the previous step's draw before that draw is collected.
enum class DrawMode { kLogits, kSync, kSyncLogprobs, kAsync };

struct DecodeRun {
  std::vector<std::vector<float>> step_logits;  // per step, the host logits of that step (kLogits)
  std::vector<std::vector<int32_t>> step_tokens;  // per step, the tokens drawn
};

DecodeRun run_decode(Backend& backend, const std::string& fixture, int steps, int64_t seqs, int64_t block_size,
                     DrawMode mode = DrawMode::kLogits) {
  auto model = load_model(fixture_dir(fixture), backend);
  const int64_t V = model->config().vocab_size;
  const int64_t blocks_per_seq = 16;
  KvCache kv = backend.alloc_kv_cache(model->kv_spec(seqs * blocks_per_seq, block_size, DType::kBF16));
  std::vector<int32_t> len(static_cast<size_t>(seqs)), last(static_cast<size_t>(seqs));
  auto table_of = [&](int64_t s) {
    std::vector<int32_t> t(static_cast<size_t>(blocks_per_seq));
    // Interleaved, so sequences' blocks are scattered over the pool.
    for (int64_t i = 0; i < blocks_per_seq; ++i) t[static_cast<size_t>(i)] = static_cast<int32_t>(i * seqs + s);
    return t;
  };
  auto slot_of = [&](int64_t s, int64_t pos) {
    return table_of(s)[static_cast<size_t>(pos / block_size)] * static_cast<int32_t>(block_size) +
           static_cast<int32_t>(pos % block_size);
  };
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t n = 3 + (s * 5) % 11;  // prompts of 3..13 tokens
    ForwardBatch b;
    for (int64_t i = 0; i < n; ++i) {
      b.token_ids.push_back(static_cast<int32_t>((s * 31 + i * 7) % V));
      b.positions.push_back(static_cast<int32_t>(i));
      b.attn.slot_mapping.push_back(slot_of(s, i));
    }
    b.attn.num_seqs = 1;
    b.attn.query_start = {0, static_cast<int32_t>(n)};
    b.attn.context_lens = {static_cast<int32_t>(n)};
    b.attn.max_blocks = static_cast<int32_t>(blocks_per_seq);
    b.attn.block_tables = table_of(s);
    b.logit_rows = {static_cast<int32_t>(n - 1)};
    Tensor l = model->forward(b, kv);
    const float* p = l.data_as<float>();
    last[static_cast<size_t>(s)] = static_cast<int32_t>(std::max_element(p, p + V) - p);
    len[static_cast<size_t>(s)] = static_cast<int32_t>(n);
  }
  DecodeRun run;
  // kAsync: the sequences of the draw not yet collected, by row.
  std::vector<int64_t> pending;
  auto collect = [&] {
    std::vector<SampledToken> got = backend.collect_draw();
    EXPECT_EQ(got.size(), pending.size());
    std::vector<int32_t> tokens;
    for (size_t r = 0; r < got.size() && r < pending.size(); ++r) {
      last[static_cast<size_t>(pending[r])] = got[r].token;
      tokens.push_back(got[r].token);
    }
    run.step_tokens.push_back(tokens);
    pending.clear();
  };
  for (int step = 0; step < steps; ++step) {
    // 1, 2, ..., seqs sequences, then back down: every bucket is captured and replayed, and
    // replays see contexts and tables other than the ones they were captured with.
    const int64_t n = step < seqs ? step + 1 : 2 * seqs - step;
    ForwardBatch b;
    b.attn.num_seqs = static_cast<int32_t>(n);
    b.attn.query_start = {0};
    b.attn.max_blocks = static_cast<int32_t>(blocks_per_seq);
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = (i * 3 + step) % seqs;  // a different subset and order each step
      order.push_back(s);
      const auto in_pending = std::find(pending.begin(), pending.end(), s);
      if (in_pending != pending.end()) {  // kAsync: drawn, not yet collected
        b.from_draw.push_back(static_cast<int32_t>(in_pending - pending.begin()));
        b.token_ids.push_back(0);  // a placeholder: the id is read on the device
      } else {
        if (mode == DrawMode::kAsync) b.from_draw.push_back(-1);
        b.token_ids.push_back(last[static_cast<size_t>(s)]);
      }
      b.positions.push_back(len[static_cast<size_t>(s)]);
      b.attn.slot_mapping.push_back(slot_of(s, len[static_cast<size_t>(s)]));
      ++len[static_cast<size_t>(s)];
      b.attn.context_lens.push_back(len[static_cast<size_t>(s)]);
      b.attn.query_start.push_back(static_cast<int32_t>(i + 1));
      std::vector<int32_t> t = table_of(s);
      b.attn.block_tables.insert(b.attn.block_tables.end(), t.begin(), t.end());
      b.logit_rows.push_back(static_cast<int32_t>(i));
    }
    if (mode == DrawMode::kLogits) {
      Tensor l = model->forward(b, kv);
      const float* p = l.data_as<float>();
      run.step_logits.emplace_back(p, p + l.numel());
      std::vector<int32_t> tokens;
      for (int64_t i = 0; i < n; ++i) {
        tokens.push_back(static_cast<int32_t>(std::max_element(p + i * V, p + (i + 1) * V) - (p + i * V)));
        last[static_cast<size_t>(order[static_cast<size_t>(i)])] = tokens.back();
      }
      run.step_tokens.push_back(tokens);
      continue;
    }
    RowSampling greedy;
    greedy.temperature = 0.0f;
    b.sampling.assign(static_cast<size_t>(n), greedy);
    if (mode == DrawMode::kSyncLogprobs) b.sampling[0].logprobs = 1;
    std::vector<SampledToken> drawn;
    b.sampled = &drawn;
    b.draw_async = mode == DrawMode::kAsync;
    model->forward(b, kv);
    if (mode == DrawMode::kAsync) {
      if (!pending.empty()) collect();  // the previous step's draw, while this step runs
      pending = order;
      continue;
    }
    EXPECT_EQ(drawn.size(), static_cast<size_t>(n));
    std::vector<int32_t> tokens;
    for (size_t i = 0; i < drawn.size(); ++i) {
      tokens.push_back(drawn[i].token);
      last[static_cast<size_t>(order[i])] = drawn[i].token;
    }
    run.step_tokens.push_back(tokens);
  }
  if (!pending.empty()) collect();
  return run;
}

class CudaGraphs : public CudaTest {};

TEST_F(CudaGraphs, ReplayedDecodeIsBitwiseEager) {
  for (bool tensor_cores : {false, true}) {
    CudaOptions eager_opts, graph_opts;
    eager_opts.graphs = false;
    eager_opts.tensor_cores = graph_opts.tensor_cores = tensor_cores;
    auto eager = make_cuda_backend(0, eager_opts);
    auto graphed = make_cuda_backend(0, graph_opts);
    ASSERT_FALSE(eager->supports_graphs());
    ASSERT_TRUE(graphed->supports_graphs());
    // 11 sequences: batches of 1..11 tokens (buckets 1, 2, 4, 8, 16), 22 steps.
    for (const char* fixture : {"llama_gqa", "qwen3_mqa_odd"}) {
      DecodeRun a = run_decode(*eager, fixture, 22, 11, 4);
      DecodeRun b = run_decode(*graphed, fixture, 22, 11, 4);
      ASSERT_EQ(a.step_logits.size(), b.step_logits.size());
      for (size_t s = 0; s < a.step_logits.size(); ++s) {
        ASSERT_EQ(a.step_logits[s].size(), b.step_logits[s].size());
        EXPECT_EQ(0, std::memcmp(a.step_logits[s].data(), b.step_logits[s].data(), a.step_logits[s].size() * sizeof(float)))
            << fixture << " step " << s << (tensor_cores ? " (tensor cores)" : "");
      }
    }
  }
}

// A replay staged with a greedy draw makes the draw itself, at the end of the graph
// (CudaBackend::graph_capture_draw), for sample_rows and overlapped draws alike; a draw that is
// not plain greedy is made after the replay as usual. Either way the tokens are the argmax of the
// eager steps' logits, over every bucket and the changing subsets of run_decode.
TEST_F(CudaGraphs, GreedyDrawsAfterReplaysAreTheEagerArgmax) {
  CudaOptions eager_opts, graph_opts;
  eager_opts.graphs = false;
  for (const char* fixture : {"llama_gqa", "qwen3_mqa_odd"}) {
    const DecodeRun want = run_decode(*make_cuda_backend(0, eager_opts), fixture, 22, 11, 4);
    ASSERT_EQ(want.step_tokens.size(), 22u);
    for (DrawMode mode : {DrawMode::kSync, DrawMode::kSyncLogprobs, DrawMode::kAsync}) {
      auto graphed = make_cuda_backend(0, graph_opts);
      ASSERT_TRUE(graphed->supports_graphs());
      const DecodeRun got = run_decode(*graphed, fixture, 22, 11, 4, mode);
      EXPECT_EQ(got.step_tokens, want.step_tokens) << fixture << " mode " << static_cast<int>(mode);
    }
    // The eager backend's own device draws, for completeness (no graph: no draw in one).
    EXPECT_EQ(run_decode(*make_cuda_backend(0, eager_opts), fixture, 22, 11, 4, DrawMode::kAsync).step_tokens,
              want.step_tokens)
        << fixture << " eager async";
  }
}

// Programmatic dependent launch (pdl.cuh) lets each kernel start before the previous one ends;
// every kernel waits for its predecessor before touching its data, so the results may not change
// by a bit: graphs and eager steps with it against graphs without it.
TEST_F(CudaGraphs, ProgrammaticLaunchChangesNoBit) {
  for (bool tensor_cores : {false, true}) {
    CudaOptions eager_opts, graph_opts;
    eager_opts.graphs = false;
    eager_opts.tensor_cores = graph_opts.tensor_cores = tensor_cores;
    for (const char* fixture : {"llama_gqa", "qwen3_mqa_odd"}) {
      cuda::set_pdl_enabled(false);
      DecodeRun plain = run_decode(*make_cuda_backend(0, graph_opts), fixture, 22, 11, 4);
      cuda::set_pdl_enabled(true);
      DecodeRun graphed = run_decode(*make_cuda_backend(0, graph_opts), fixture, 22, 11, 4);
      DecodeRun eager = run_decode(*make_cuda_backend(0, eager_opts), fixture, 22, 11, 4);
      ASSERT_EQ(plain.step_logits.size(), graphed.step_logits.size());
      ASSERT_EQ(plain.step_logits.size(), eager.step_logits.size());
      for (size_t s = 0; s < plain.step_logits.size(); ++s) {
        const size_t bytes = plain.step_logits[s].size() * sizeof(float);
        ASSERT_EQ(plain.step_logits[s].size(), graphed.step_logits[s].size());
        EXPECT_EQ(0, std::memcmp(plain.step_logits[s].data(), graphed.step_logits[s].data(), bytes))
            << fixture << " step " << s << (tensor_cores ? " (tensor cores)" : "") << ": graphs";
        EXPECT_EQ(0, std::memcmp(plain.step_logits[s].data(), eager.step_logits[s].data(), bytes))
            << fixture << " step " << s << (tensor_cores ? " (tensor cores)" : "") << ": eager";
      }
    }
  }
  std::printf("programmatic dependent launch on this GPU: %s\n", cuda::pdl_enabled() ? "yes" : "no (before sm_90)");
}

TEST_F(CudaGraphs, GoldenFixturesPassWithGraphsAndANewCachePerCall) {
  ASSERT_TRUE(gpu->supports_graphs());
  // greedy_generate allocates a KV cache per call: the graphs recorded over the previous cache
  // must be dropped, not replayed into freed memory.
  for (const std::string& name : fixture_names()) {
    const float worst = check_golden_fixture(name, *gpu);
    EXPECT_LE(worst, kLogitTolerance) << name;
  }
}

// Tensor-core mode end to end. Rounding activations to bf16 (8 significant bits) moves the
// logits away from transformers' float32 ones; the bound is how far transformers itself moves
// when it runs the same checkpoint in bf16 (fixtures/models/bf16_drift.json, measured by
// tools/golden_bf16_drift.py: 0.09-0.31 on these fixtures, whose logits spread 3-10). redhare may
// be no farther than that. Greedy tokens are compared up to the first step where transformers'
// top-2 margin is below twice the bound: closer calls are coin flips at bf16 precision.
// transformers' own bf16 drift per fixture (fixtures/models/bf16_drift.json).
nlohmann::json bf16_drift() {
  std::ifstream f(source_dir() + "/fixtures/models/bf16_drift.json");
  EXPECT_TRUE(f.good()) << "fixtures/models/bf16_drift.json missing";
  return f.good() ? nlohmann::json::parse(f)["max_abs_logit_drift_bf16"] : nlohmann::json::object();
}

TEST_F(CudaGraphs, GoldenFixturesWithTensorCores) {
  // bf16 activations everywhere (FP8 weights W8A16): within transformers' own bf16 drift.
  const nlohmann::json drift = bf16_drift();
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = LowerBitFloat::kBf16;
  auto tc = make_cuda_backend(0, o);
  for (const std::string& name : fixture_names()) {
    ASSERT_TRUE(drift.contains(name)) << name << " has no bf16 drift measured";
    const float bound = drift[name].get<float>();
    const float worst = check_golden_fixture(name, *tc, bound, 2 * bound);
    std::printf("[ golden   ] %s (tensor cores): max |logit - transformers| = %.3g (transformers bf16: %.3g)\n",
                name.c_str(), worst, bound);
  }
}

TEST_F(CudaGraphs, GoldenFp8FixtureWithW8A8) {
  // The FP8 fixture with W8A8 products (every product, decode steps too: activations in e4m3 per
  // 128-value block). e4m3's unit roundoff (2^-4) is 16 times bf16's (2^-8), so the stated
  // tolerance is 16 times transformers' bf16 drift. At twice that no step of this small random
  // model clears the near-tie margin, so the greedy tokens are then checked again up to the first
  // step whose margin is under twice the largest logit error the first pass measured.
  if (!cuda::fp8_w8a8_supported()) GTEST_SKIP() << "no block-scaled FP8 product in cuBLASLt on this GPU";
  const nlohmann::json drift = bf16_drift();
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = LowerBitFloat::kFp8;
  auto tc = make_cuda_backend(0, o);
  int fp8_fixtures = 0;
  for (const std::string& name : fixture_names()) {
    if (name.find("fp8") == std::string::npos) continue;
    ++fp8_fixtures;
    ASSERT_TRUE(drift.contains(name)) << name << " has no bf16 drift measured";
    const float bound = 16 * drift[name].get<float>();
    const float worst = check_golden_fixture(name, *tc, bound, 2 * bound, 0);
    std::printf("[ golden   ] %s (W8A8): max |logit - transformers| = %.3g (bound: 16 x transformers bf16 = %.3g)\n",
                name.c_str(), worst, bound);
    check_golden_fixture(name, *tc, bound, 2 * worst);
  }
  EXPECT_GT(fp8_fixtures, 0);
}

struct TcCase {
  DType wtype;
  int64_t M, N, K;
  bool bias;
};

class CudaTensorCoreLinear : public CudaTest, public ::testing::WithParamInterface<TcCase> {};

TEST_P(CudaTensorCoreLinear, MatchesReferenceOnRoundedActivations) {
  const TcCase c = GetParam();
  CudaOptions o;
  o.tensor_cores = true;
  auto tc = make_cuda_backend(0, o);
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor w = random_tensor(c.wtype, {c.N, c.K}, 0.1f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  // The reference sees the activations as the tensor cores do: rounded to the weights' type.
  Tensor x16 = Tensor::empty(c.wtype, {c.M, c.K});
  convert_from_f32(x.data_as<float>(), c.wtype, x16.data(), x.numel());
  Tensor xr = Tensor::from_f32(x16.to_f32_vector(), {c.M, c.K});
  Tensor ref = poisoned({c.M, c.N});
  cpu::ref::linear(xr, w, c.bias ? &b : nullptr, ref);
  Tensor dw = tc->upload(w), db = tc->upload(b), out = tc->upload(poisoned({c.M, c.N}));
  tc->linear(tc->upload(x), dw, c.bias ? &db : nullptr, out);
  // f32 accumulation of exact products against a double reference: ~sqrt(K) ulp of f32.
  EXPECT_LT(rel_error(tc->to_host(out), ref), 2e-5)
      << dtype_name(c.wtype) << " M=" << c.M << " N=" << c.N << " K=" << c.K;
}

std::vector<TcCase> tc_cases() {
  std::vector<TcCase> v;
  const std::vector<std::pair<int64_t, int64_t>> nk = {{64, 64}, {256, 1024}, {1000, 2048}, {72, 4104}, {4096, 512}};
  for (DType t : {DType::kBF16, DType::kF16})
    for (int64_t M : {5, 8, 33, 130, 517})
      for (auto [N, K] : nk) v.push_back({t, M, N, K, (M + N) % 2 == 1});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaTensorCoreLinear, ::testing::ValuesIn(tc_cases()),
                         [](const ::testing::TestParamInfo<TcCase>& p) {
                           const TcCase& c = p.param;
                           return std::string(dtype_name(c.wtype)) + "_M" + std::to_string(c.M) + "_N" +
                                  std::to_string(c.N) + "_K" + std::to_string(c.K) + (c.bias ? "_bias" : "");
                         });

TEST_F(CudaTensorCoreLinear, ResidualAddRidesOnTheProduct) {
  // fused_linear(kAccumulate) with more than four rows: out += product as cuBLASLt's beta = 1.
  CudaOptions o;
  o.tensor_cores = true;
  auto tc = make_cuda_backend(0, o);
  const int64_t M = 33, N = 256, K = 1024;
  Tensor x = random_tensor(DType::kF32, {M, K});
  Tensor w = random_tensor(DType::kBF16, {N, K}, 0.1f);
  Tensor b = random_tensor(DType::kF32, {N});
  Tensor start = random_tensor(DType::kF32, {M, N});
  Tensor x16 = Tensor::empty(DType::kBF16, {M, K});
  convert_from_f32(x.data_as<float>(), DType::kBF16, x16.data(), x.numel());
  Tensor xr = Tensor::from_f32(x16.to_f32_vector(), {M, K});
  Tensor p = poisoned({M, N});
  cpu::ref::linear(xr, w, &b, p);
  Tensor ref = copy_of(start);
  cpu::ref::add(ref, p);
  Tensor dw = tc->upload(w), db = tc->upload(b), out = tc->upload(start);
  tc->fused_linear(tc->upload(x), nullptr, 0, dw, &db, LinearOut::kAccumulate, out);
  EXPECT_LT(rel_error(tc->to_host(out), ref), 2e-5);
}

TEST_F(CudaTensorCoreLinear, FusedOpsAreBitwiseTheComposition) {
  // fused_linear with a norm (the norm kernel writes the product's bf16/f16 input itself) and
  // swiglu_mlp (SiLU writes the down product's input in the weights' type) against the base
  // class's compositions of the plain ops on the same backend. The odd shape (K 67) may be one
  // cuBLASLt refuses: then both take the f32 kernels.
  CudaOptions o;
  o.tensor_cores = true;
  auto tc = make_cuda_backend(0, o);
  struct Case {
    DType t;
    int64_t M, H, I;
  };
  for (const Case& c : {Case{DType::kBF16, 2, 1024, 384}, Case{DType::kBF16, 33, 512, 1000},
                        Case{DType::kF16, 517, 256, 128}, Case{DType::kBF16, 9, 67, 45}}) {
    const std::string at = std::string(dtype_name(c.t)) + " M=" + std::to_string(c.M) + " H=" + std::to_string(c.H) +
                           " I=" + std::to_string(c.I);
    Tensor x = tc->upload(random_tensor(DType::kF32, {c.M, c.H}));
    Tensor nw = tc->upload(random_tensor(DType::kF32, {c.H}, 0.5f));
    Tensor gu = tc->upload(random_tensor(c.t, {2 * c.I, c.H}, 0.1f));
    Tensor down = tc->upload(random_tensor(c.t, {c.H, c.I}, 0.1f));
    Tensor bias = tc->upload(random_tensor(DType::kF32, {2 * c.I}));
    for (LinearOut mode : {LinearOut::kStore, LinearOut::kSiluMul}) {
      const int64_t cols = mode == LinearOut::kSiluMul ? c.I : 2 * c.I;
      for (const Tensor* b : {static_cast<const Tensor*>(nullptr), static_cast<const Tensor*>(&bias)}) {
        Tensor fused = tc->upload(poisoned({c.M, cols})), composed = tc->upload(poisoned({c.M, cols}));
        tc->fused_linear(x, &nw, 1e-5f, gu, b, mode, fused);
        tc->Backend::fused_linear(x, &nw, 1e-5f, gu, b, mode, composed);
        EXPECT_TRUE(same_bytes(tc->to_host(fused), tc->to_host(composed)))
            << at << (mode == LinearOut::kSiluMul ? " silu" : " store") << (b ? " bias" : "");
      }
    }
    Tensor start = random_tensor(DType::kF32, {c.M, c.H});
    Tensor r1 = tc->upload(start), r2 = tc->upload(start);
    Tensor act1 = tc->upload(poisoned({c.M, c.I})), act2 = tc->upload(poisoned({c.M, c.I}));
    tc->swiglu_mlp(r1, nw, 1e-5f, gu, down, act1);
    tc->Backend::swiglu_mlp(r2, nw, 1e-5f, gu, down, act2);
    EXPECT_TRUE(same_bytes(tc->to_host(r1), tc->to_host(r2))) << at << " swiglu_mlp";
    EXPECT_FALSE(same_bytes(tc->to_host(r1), start)) << at << " swiglu_mlp added nothing";
  }
}

TEST_F(CudaTensorCoreLinear, OddShapesStayCloseToTheExactProduct) {
  // Shapes cuBLASLt may refuse (odd K) fall back to the f32 kernels; either way the result is
  // within bf16 rounding of the exact product.
  CudaOptions o;
  o.tensor_cores = true;
  auto tc = make_cuda_backend(0, o);
  for (auto [M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{5, 7, 13}, {9, 37, 67}, {130, 130, 257}}) {
    Tensor x = random_tensor(DType::kF32, {M, K});
    Tensor w = random_tensor(DType::kBF16, {N, K}, 0.1f);
    Tensor ref = poisoned({M, N});
    cpu::ref::linear(x, w, nullptr, ref);
    Tensor out = tc->upload(poisoned({M, N}));
    tc->linear(tc->upload(x), tc->upload(w), nullptr, out);
    // bf16 keeps 8 bits: each rounded activation is off by at most 2^-9 of itself.
    EXPECT_LT(rel_error(tc->to_host(out), ref), 4e-3) << "M=" << M << " N=" << N << " K=" << K;
  }
}

}  // namespace
}  // namespace redhare::cuda_test
