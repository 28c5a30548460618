// CUDA benchmark on a real model shape with dummy weights: decode tokens/s at several batch sizes
// and one context length, prefill tokens/s at several prompt lengths, and the time from start to
// ready; each figure beside its bound, measured in the same run:
// - decode: a step reads every weight once plus each sequence's KV cache, and does 2 FLOPs per
//   weight and token plus the attention products; its bound is the larger of bytes / HBM read
//   bandwidth and FLOPs / matrix rate (both measured here: a 2 GiB streaming read, and a
//   8192^3 product in the tensor-core mode's own cuBLASLt configuration);
// - prefill: FLOPs (2 per weight and token, plus causal attention) over the matrix rate.
// Steps run as the engine runs them: tokens drawn on the GPU (greedy unless --temperature is
// set; --top-p and --top-k then restrict the draw), so only token ids come back, decode steps
// replayed from CUDA graphs unless --graphs 0, and overlapped unless --overlap 0: step N + 1 is
// queued with its ids read on the device from step N's draw before the host reads step N's tokens.
//
//   bench_cuda [--model configs/llama-3.1-8b] [--batches 1,8,64,256] [--context 1024]
//              [--steps 32] [--prefill 512,4096] [--precision bf16|f32] [--graphs 1] [--profile 0]
//              [--dummy-dtype f8_e4m3_b128|q8_0|...]  (projection weights in that block type)
//              [--temperature 0] [--top-p 1] [--top-k 0] [--kv-dtype bf16|fp8]
//              [--product-rows 1,8,...]  (activation rows of the per-product table)
//              [--raise-lower-bit-float-to auto|bf16|fp8]  (FP8 weights: W8A16 or W8A8 products)
//              [--pdl 1]  (0: no programmatic dependent launch, to measure what it gains)
//              [--overlap 1]  (0: each step's tokens read before the next step is queued)
//              [--leave-out rope_attention,...]  (op families skipped: what they cost in place;
//                                                 the tokens are then meaningless)
//
// --profile 1 adds a per-op table of one batch-1 decode step, each op synchronized on its own.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "engine/generate.h"
#include "bench_args.h"

using namespace redhare;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best of several 1 GiB device-to-device copies, timed with events; counts read + write bytes.
[[maybe_unused]] double measure_copy_bandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  RH_CUDA(cudaMalloc(&a, bytes));
  RH_CUDA(cudaMalloc(&b, bytes));
  RH_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  RH_CUDA(cudaEventCreate(&e0));
  RH_CUDA(cudaEventCreate(&e1));
  double best = 0;
  for (int i = 0; i < 8; ++i) {
    RH_CUDA(cudaEventRecord(e0));
    RH_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    RH_CUDA(cudaEventRecord(e1));
    RH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    RH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best = std::max(best, 2.0 * static_cast<double>(bytes) / (ms * 1e-3));
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return best;
}

// Wraps the CUDA backend, forwarding every op the backend overrides (an op left to the Backend
// default would measure the default's composition instead); while `timing` is on, each op runs
// alone between two device-wide synchronizations and its wall time is added to its row. That serializes launches, so the rows
// sum to more than a normal step: they show where device time goes, not the step time.
// Host bytes of FP8 (kF8B128) weights holding `params` values that no product reads: the CUDA
// backend keeps each block's e4m3 values and its f32 scale, never the host block's padding.
int64_t fp8_unread_bytes(int64_t params) {
  const DTypeInfo& f = dtype_info(DType::kF8B128);
  return params / f.block_elems * (f.block_bytes - f.block_elems - static_cast<int64_t>(sizeof(float)));
}

// Bytes a product reads of weight w (FP8 weights as the CUDA backend lays them out).
double read_bytes(const Tensor& w) {
  const int64_t n = w.nbytes();
  return static_cast<double>(w.dtype() == DType::kF8B128 ? n - fp8_unread_bytes(w.numel()) : n);
}

class TimedBackend final : public Backend {
 public:
  explicit TimedBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  bool timing = false;
  bool sync = true;  // false: host time only, ops queued as usual
  struct Row {
    double seconds = 0;
    int64_t calls = 0;
    double bytes = 0;  // weight bytes read, for linear
  };
  std::map<std::string, Row> rows;
  // --leave-out: op families (a key's first word: "rope_attention", "fused_linear", ...) whose
  // calls do nothing, so that a step without them, against a whole one, gives what they cost in
  // place (graph-replayed, overlapped as they run). Their outputs are left as they were.
  std::set<std::string> leave_out;
  int64_t last_graph = -1;  // the key of the last graph replayed
  // Host seconds spent staging a graph's inputs, launching it, and drawing tokens (which waits for
  // the step), summed while ops are not timed one by one.
  double stage_s = 0, launch_s = 0, sample_s = 0, collect_s = 0;

 private:
  template <typename F>
  auto timed(const std::string& key, double bytes, F&& f) {
    if constexpr (std::is_same_v<decltype(f()), int>) {
      if (!leave_out.empty() && leave_out.count(key.substr(0, key.find_first_of(" ("))) > 0) return 0;
    }
    if (!timing) return f();
    if (sync) RH_CUDA(cudaDeviceSynchronize());
    auto t0 = Clock::now();
    auto r = f();
    if (sync) RH_CUDA(cudaDeviceSynchronize());
    Row& row = rows[key];
    row.seconds += seconds_since(t0);
    row.calls += 1;
    row.bytes += bytes;
    return r;
  }

 public:
  std::string name() const override { return inner_->name(); }
  // Graphs and device argmax pass through while not profiling; a profiled step runs eagerly.
  bool supports_graphs() const override { return !timing && inner_->supports_graphs(); }
  void graph_stage(const std::vector<int32_t>& ids, const std::vector<int32_t>& from, const std::vector<int32_t>& pos,
                   const AttentionBatch& a, const std::vector<int32_t>& logit_rows, const KvCache& kv,
                   const GraphDraw& draw) override {
    const auto t0 = Clock::now();
    inner_->graph_stage(ids, from, pos, a, logit_rows, kv, draw);
    stage_s += seconds_since(t0);
  }
  void graph_capture_begin() override { inner_->graph_capture_begin(); }
  void graph_capture_draw(const Tensor& logits) override { inner_->graph_capture_draw(logits); }
  void graph_capture_end(int64_t key) override { inner_->graph_capture_end(key); }
  void graph_capture_abort() override { inner_->graph_capture_abort(); }
  bool graph_replay(int64_t key) override {
    last_graph = key;
    const auto t0 = Clock::now();
    const bool ok = inner_->graph_replay(key);
    launch_s += seconds_since(t0);
    return ok;
  }
  void graph_clear() override { inner_->graph_clear(); }
  std::vector<SampledToken> sample_rows(const Tensor& logits, const std::vector<RowSampling>& draws) override {
    const auto t0 = Clock::now();
    auto r = timed("sample_rows", 0, [&] { return inner_->sample_rows(logits, draws); });
    sample_s += seconds_since(t0);
    return r;
  }
  bool overlaps_draws() const override { return inner_->overlaps_draws(); }
  void draw_rows_async(const Tensor& logits, const std::vector<RowSampling>& draws) override {
    const auto t0 = Clock::now();
    timed("draw_rows_async", 0, [&] { inner_->draw_rows_async(logits, draws); return 0; });
    sample_s += seconds_since(t0);
  }
  // Waits for the draw: with overlapped steps, for the step before the one just queued.
  std::vector<SampledToken> collect_draw() override {
    const auto t0 = Clock::now();
    auto r = inner_->collect_draw();
    collect_s += seconds_since(t0);
    return r;
  }
  void embedding_drawn(const Tensor& table, const std::vector<int32_t>& ids, const std::vector<int32_t>& from,
                       Tensor& out) override {
    timed("embedding", 0, [&] { inner_->embedding_drawn(table, ids, from, out); return 0; });
  }
  Device device() const override { return inner_->device(); }
  Tensor alloc(DType dt, Shape shape) override {
    return timed("alloc", 0, [&] { return inner_->alloc(dt, std::move(shape)); });
  }
  Tensor upload(const Tensor& h) override { return inner_->upload(h); }
  Tensor to_host(const Tensor& t) override { return timed("to_host", 0, [&] { return inner_->to_host(t); }); }
  int64_t free_memory_bytes() const override { return inner_->free_memory_bytes(); }
  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override {
    timed("embedding", 0, [&] { inner_->embedding(table, ids, out); return 0; });
  }
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    timed("rms_norm", 0, [&] { inner_->rms_norm(x, w, eps, out); return 0; });
  }
  void add_rms_norm(Tensor& r, const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    timed("add_rms_norm", 0, [&] { inner_->add_rms_norm(r, x, w, eps, out); return 0; });
  }
  void head_rms_norm(Tensor& x, int64_t off, int64_t nh, const Tensor& w, float eps) override {
    timed("head_rms_norm", 0, [&] { inner_->head_rms_norm(x, off, nh, w, eps); return 0; });
  }
  void linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& out) override {
    const std::string key = "linear " + std::to_string(w.size(0)) + "x" + std::to_string(w.size(1)) +
                            " M=" + std::to_string(x.size(0));
    timed(key, read_bytes(w), [&] { inner_->linear(x, w, b, out); return 0; });
  }
  void fused_linear(const Tensor& x, const Tensor* nw, float eps, const Tensor& w, const Tensor* b, LinearOut mode,
                    Tensor& out) override {
    const char* what = mode == LinearOut::kSiluMul ? "fused_linear(silu) " : mode == LinearOut::kAccumulate ? "fused_linear(+=) " : "fused_linear ";
    const std::string key = what + std::to_string(w.size(0)) + "x" + std::to_string(w.size(1)) +
                            (nw ? " normed" : "") + " M=" + std::to_string(x.size(0));
    timed(key, read_bytes(w), [&] { inner_->fused_linear(x, nw, eps, w, b, mode, out); return 0; });
  }
  void swiglu_mlp(Tensor& residual, const Tensor& nw, float eps, const Tensor& gate_up, const Tensor& down,
                  Tensor& act) override {
    const std::string key = "swiglu_mlp " + std::to_string(gate_up.size(0)) + "x" + std::to_string(gate_up.size(1)) +
                            " M=" + std::to_string(residual.size(0));
    timed(key, read_bytes(gate_up) + read_bytes(down),
          [&] { inner_->swiglu_mlp(residual, nw, eps, gate_up, down, act); return 0; });
  }
  void silu_mul(const Tensor& gu, Tensor& out) override {
    timed("silu_mul", 0, [&] { inner_->silu_mul(gu, out); return 0; });
  }
  void rope(Tensor& x, int64_t nh, int64_t hd, const std::vector<int32_t>& pos, const Tensor& f) override {
    timed("rope", 0, [&] { inner_->rope(x, nh, hd, pos, f); return 0; });
  }
  void add(Tensor& out, const Tensor& x) override { timed("add", 0, [&] { inner_->add(out, x); return 0; }); }
  void gather_rows(const Tensor& x, const std::vector<int32_t>& r, Tensor& out) override {
    timed("gather_rows", 0, [&] { inner_->gather_rows(x, r, out); return 0; });
  }
  void attention(const Tensor& qkv, KvCacheLayer& c, const AttentionBatch& b, const AttentionParams& p,
                 Tensor& out) override {
    timed("attention", 0, [&] { inner_->attention(qkv, c, b, p, out); return 0; });
  }
  void rope_attention(Tensor& qkv, const std::vector<int32_t>& pos, const Tensor& f, KvCacheLayer& c,
                      const AttentionBatch& b, const AttentionParams& p, Tensor& out) override {
    timed("rope_attention", 0, [&] { inner_->rope_attention(qkv, pos, f, c, b, p, out); return 0; });
  }

 private:
  std::unique_ptr<Backend> inner_;
};


using redhare::bench::parse_list;
using redhare::bench::parse_names;

struct Decode {
  int64_t batch = 0;
  double step_s = 0, tok_s = 0, bound_tok_s = 0, bytes = 0, flops = 0;
  double graph_s = 0;  // the step's graph alone, replayed back to back (0: steps not on graphs)
  double stage_s = 0, launch_s = 0, sample_s = 0, collect_s = 0;  // host time per step (TimedBackend)
  bool memory_bound = true;
};

}  // namespace

int main(int argc, char** argv) {
  const auto process_start = Clock::now();
  const char* env = std::getenv("REDHARE_SOURCE_DIR");
  std::string model_dir = std::string(env && *env ? env : REDHARE_SOURCE_DIR) + "/configs/llama-3.1-8b";
  std::vector<int64_t> batches = {1, 8, 64, 256}, prefills = {512, 4096}, product_rows = {1};
  int64_t context = 1024, steps = 32;
  std::string precision = "bf16", dummy_dtype, lower_bit_float = "auto";
  bool graphs = true, profile = false, overlap = true;
  std::set<std::string> leave_out;
  RowSampling sampling;  // greedy
  DType kv_dtype = DType::kBF16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--model") model_dir = v;
    else if (a == "--batches") batches = parse_list(v);
    else if (a == "--context") context = std::stoll(v);
    else if (a == "--steps") steps = std::stoll(v);
    else if (a == "--prefill") prefills = parse_list(v);  // '' for none
    else if (a == "--precision") precision = v;
    else if (a == "--graphs") graphs = v != "0";
    else if (a == "--overlap") overlap = v != "0";
    else if (a == "--profile") profile = v != "0";
    else if (a == "--dummy-dtype") dummy_dtype = v;
    else if (a == "--kv-dtype") kv_dtype = parse_kv_cache_dtype(v);
    else if (a == "--temperature") sampling.temperature = std::stof(v);
    else if (a == "--top-p") sampling.top_p = std::stof(v);
    else if (a == "--top-k") sampling.top_k = std::stoi(v);
    else if (a == "--product-rows") product_rows = parse_list(v);
    else if (a == "--raise-lower-bit-float-to") lower_bit_float = v;
    else if (a == "--pdl") cuda::set_pdl_enabled(v != "0");
    else if (a == "--leave-out") leave_out = parse_names(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (cuda_device_count() == 0) {
      std::fprintf(stderr, "bench_cuda: no CUDA device\n");
      return 1;
    }
    if (precision != "bf16" && precision != "f32") fail("--precision must be bf16 or f32");
    if (batches.empty()) fail("--batches needs at least one batch size");
    for (int64_t P : prefills)
      if (P < 1) fail("--prefill lengths must be positive (--prefill '' runs none)");
    for (int64_t B : batches)
      if (B < 1) fail("--batches must be positive");
    CudaOptions opts;
    opts.tensor_cores = precision == "bf16";
    opts.graphs = graphs;
    opts.raise_lower_bit_float_to = parse_lower_bit_float(lower_bit_float);
    auto timed_backend = std::make_unique<TimedBackend>(make_cuda_backend(0, opts));
    TimedBackend* timed = timed_backend.get();
    timed->leave_out = leave_out;
    for (const std::string& op : leave_out) std::printf("leaving out every %s call\n", op.c_str());
    std::unique_ptr<Backend> backend = std::move(timed_backend);
    LoadOptions lo;
    lo.load_format = "dummy";
    lo.dummy_dtype = dummy_dtype;
    auto t0 = Clock::now();
    auto model = load_model(model_dir, *backend, lo);
    const double load_s = seconds_since(t0);
    const ModelConfig& c = model->config();
    const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
    const int64_t bs = 16;
    // Decode sequence s owns blocks [s * blocks_per_seq, ...); a prefill reuses blocks from 0.
    const int64_t blocks_per_seq = (context + steps + 4 + bs - 1) / bs;
    const int64_t longest_prefill = prefills.empty() ? 0 : *std::max_element(prefills.begin(), prefills.end());
    const int64_t prefill_blocks = (longest_prefill + bs - 1) / bs;
    KvCache kv = backend->alloc_kv_cache(
        model->kv_spec(std::max(max_batch * blocks_per_seq, prefill_blocks), bs, kv_dtype));

    std::vector<SampledToken> sampled;
    // One decode step for `n` sequences at context `ctx` (sequence s owns blocks s * bps ...).
    auto decode_batch = [&](int64_t n, int64_t ctx) {
      ForwardBatch b;
      b.attn.num_seqs = static_cast<int32_t>(n);
      b.attn.query_start = {0};
      b.attn.max_blocks = static_cast<int32_t>(blocks_per_seq);
      for (int64_t s = 0; s < n; ++s) {
        b.token_ids.push_back(static_cast<int32_t>((s * 7919 + ctx) % c.vocab_size));
        b.positions.push_back(static_cast<int32_t>(ctx - 1));
        b.attn.slot_mapping.push_back(static_cast<int32_t>(s * blocks_per_seq * bs + ctx - 1));
        b.attn.context_lens.push_back(static_cast<int32_t>(ctx));
        b.attn.query_start.push_back(static_cast<int32_t>(s + 1));
        for (int64_t j = 0; j < blocks_per_seq; ++j) b.attn.block_tables.push_back(static_cast<int32_t>(s * blocks_per_seq + j));
        b.logit_rows.push_back(static_cast<int32_t>(s));
      }
      b.sampling.assign(static_cast<size_t>(n), sampling);
      b.sampled = &sampled;
      return b;
    };
    model->forward(decode_batch(1, 16), kv);  // module load, pool growth, first graph
    const double ready_s = seconds_since(process_start);

    const double bw = cuda_read_bandwidth(0);
    const double mm = cuda_bf16_gemm_rate(0, 8192, 8192, 8192);

    const int64_t embed_bytes = dtype_bytes(c.dtype, c.vocab_size * c.hidden_size);
    // Per step every weight is read once; an untied embedding table is only looked up (one row).
    // FP8 weights are read as the CUDA backend lays them out (fp8_unread_bytes).
    const auto& by_dtype = model->parameters_by_dtype();
    const auto fp8 = by_dtype.find(std::string(dtype_name(DType::kF8B128)));
    const int64_t fp8_padding = fp8 == by_dtype.end() ? 0 : fp8_unread_bytes(fp8->second);
    const double weight_read =
        static_cast<double>(model->weight_bytes() - fp8_padding - (c.tie_word_embeddings ? 0 : embed_bytes));
    const double matrix_params = static_cast<double>(model->num_parameters() - (c.tie_word_embeddings ? 0 : c.vocab_size * c.hidden_size));
    const double kv_token_bytes = static_cast<double>(model->kv_spec(1, 1, kv_dtype).bytes_per_block());
    const double attn_flops_per_key = 4.0 * static_cast<double>(c.num_layers * c.num_heads * c.head_dim);

    std::vector<Decode> decodes;
    for (int64_t B : batches) {
      Decode d;
      d.batch = B;
      // Overlapped as the engine runs a steady decode: step i queued (its ids those step i - 1
      // drew, still on the device), then step i - 1's tokens collected.
      bool in_flight = false;
      auto run_step = [&](int64_t ctx) {
        ForwardBatch b = decode_batch(B, ctx);
        if (overlap) {
          if (in_flight)
            for (int64_t s = 0; s < B; ++s) b.from_draw.push_back(static_cast<int32_t>(s));
          b.draw_async = true;
        }
        model->forward(b, kv);
        if (in_flight) backend->collect_draw();
        in_flight = overlap;
      };
      auto drain = [&] {
        if (in_flight) backend->collect_draw();
        in_flight = false;
      };
      for (int64_t w = 0; w < 2; ++w) run_step(context - 2 + w);  // capture
      drain();
      RH_CUDA(cudaDeviceSynchronize());
      timed->stage_s = timed->launch_s = timed->sample_s = timed->collect_s = 0;
      auto ts = Clock::now();
      for (int64_t i = 0; i < steps; ++i) run_step(context + i);
      drain();
      d.step_s = seconds_since(ts) / static_cast<double>(steps);
      d.stage_s = timed->stage_s / static_cast<double>(steps);
      d.launch_s = timed->launch_s / static_cast<double>(steps);
      d.sample_s = timed->sample_s / static_cast<double>(steps);
      d.collect_s = timed->collect_s / static_cast<double>(steps);
      if (timed->last_graph >= 0) {
        // The step's graph replayed back to back, the same inputs each time: the device's share of a
        // step, without the host's (staging the inputs, drawing the tokens, reading them back).
        const int64_t key = timed->last_graph;
        RH_CUDA(cudaDeviceSynchronize());
        auto tg = Clock::now();
        for (int64_t i = 0; i < steps; ++i) backend->graph_replay(key);
        RH_CUDA(cudaDeviceSynchronize());
        d.graph_s = seconds_since(tg) / static_cast<double>(steps);
        timed->last_graph = -1;
      }
      d.tok_s = static_cast<double>(B) / d.step_s;
      const double avg_ctx = static_cast<double>(context) + static_cast<double>(steps - 1) / 2;
      d.bytes = weight_read + static_cast<double>(B) * avg_ctx * kv_token_bytes;
      d.flops = 2.0 * matrix_params * static_cast<double>(B) + attn_flops_per_key * avg_ctx * static_cast<double>(B);
      const double t_mem = d.bytes / bw, t_mm = d.flops / mm;
      d.memory_bound = t_mem >= t_mm;
      d.bound_tok_s = static_cast<double>(B) / std::max(t_mem, t_mm);
      decodes.push_back(d);
    }

    struct Prefill {
      int64_t tokens;
      double s, flops;
    };
    std::vector<Prefill> pres;
    for (int64_t P : prefills) {
      ForwardBatch b;
      for (int64_t i = 0; i < P; ++i) {
        b.token_ids.push_back(static_cast<int32_t>((i * 7919 + 13) % c.vocab_size));
        b.positions.push_back(static_cast<int32_t>(i));
        b.attn.slot_mapping.push_back(static_cast<int32_t>(i));
      }
      b.attn.num_seqs = 1;
      b.attn.query_start = {0, static_cast<int32_t>(P)};
      b.attn.context_lens = {static_cast<int32_t>(P)};
      b.attn.max_blocks = static_cast<int32_t>(prefill_blocks);
      for (int64_t j = 0; j < prefill_blocks; ++j) b.attn.block_tables.push_back(static_cast<int32_t>(j));
      b.logit_rows = {static_cast<int32_t>(P - 1)};
      b.sampling = {sampling};
      b.sampled = &sampled;
      model->forward(b, kv);  // warm-up at this size
      double best = 1e30;
      for (int r = 0; r < 3; ++r) {
        auto tp = Clock::now();
        model->forward(b, kv);
        best = std::min(best, seconds_since(tp));
      }
      const double flops = 2.0 * matrix_params * static_cast<double>(P) +
                           attn_flops_per_key * static_cast<double>(P) * static_cast<double>(P + 1) / 2;
      pres.push_back({P, best, flops});
    }

    const std::string weights_desc = dummy_dtype.empty() ? std::string(dtype_name(c.dtype))
                                                         : dummy_dtype + " projections, " + std::string(dtype_name(c.dtype)) + " rest";
    std::printf("model              %s (%s, dummy %s weights, %.2f B params, %.2f GB)\n", model_dir.c_str(),
                c.architecture.c_str(), weights_desc.c_str(), static_cast<double>(model->num_parameters()) / 1e9,
                static_cast<double>(model->weight_bytes()) / 1e9);
    std::printf("device             %s, precision %s, FP8 raised to %s, CUDA graphs %s, steps %s, KV cache %s (%.0f bytes per token)\n",
                backend->name().c_str(), precision.c_str(), lower_bit_float.c_str(), graphs ? "on" : "off",
                overlap ? "overlapped" : "one at a time",
                std::string(dtype_name(kv_dtype)).c_str(), kv_token_bytes);
    if (sampling.temperature > 0)
      std::printf("sampling           temperature %g, top-p %g, top-k %d (drawn on the GPU)\n", sampling.temperature,
                  sampling.top_p, sampling.top_k);
    else
      std::printf("sampling           greedy (argmax on the GPU)\n");
    std::printf("HBM read bandwidth %.0f GB/s (2 GiB streaming read, best of 5)\n", bw / 1e9);
    std::printf("matrix rate        %.0f TFLOP/s (8192^3, bf16 in, f32 out, cuBLASLt, best of 10)\n", mm / 1e12);
    std::printf("start to ready     %.2f s (dummy weights generated and uploaded in %.2f s, KV cache, first step)\n",
                ready_s, load_s);
    std::printf("\n%-8s %-8s %12s %12s %14s %8s %10s  %s\n", "batch", "context", "ms/step", "tokens/s", "bound tok/s",
                "of bound", "graph ms", "bound by");
    for (const Decode& d : decodes)
      std::printf("%-8lld %-8lld %12.3f %12.1f %14.1f %7.1f%% %10.3f  %s (%.2f GB, %.2f TFLOP per step)\n",
                  static_cast<long long>(d.batch), static_cast<long long>(context), d.step_s * 1e3, d.tok_s,
                  d.bound_tok_s, 100.0 * d.tok_s / d.bound_tok_s, d.graph_s * 1e3,
                  d.memory_bound ? "bandwidth" : "matrix rate", d.bytes / 1e9, d.flops / 1e12);
    if (graphs) {
      std::printf("(graph ms: the step's CUDA graph replayed back to back with the same inputs and no draw: the device's "
                  "share of a step)\n");
      std::printf("host per step, us: staging inputs / launching the graph / drawing tokens / waiting for the tokens "
                  "(overlapped: the previous step's) / the rest\n");
      for (const Decode& d : decodes)
        std::printf("  batch %-6lld %8.1f %8.1f %10.1f %10.1f %8.1f\n", static_cast<long long>(d.batch), d.stage_s * 1e6,
                    d.launch_s * 1e6, d.sample_s * 1e6, d.collect_s * 1e6,
                    (d.step_s - d.stage_s - d.launch_s - d.sample_s - d.collect_s) * 1e6);
    }
    std::printf("\n%-8s %12s %12s %12s %8s\n", "prefill", "ms", "tokens/s", "TFLOP/s", "of rate");
    for (const Prefill& p : pres)
      std::printf("%-8lld %12.2f %12.0f %12.1f %7.1f%%\n", static_cast<long long>(p.tokens), p.s * 1e3,
                  static_cast<double>(p.tokens) / p.s, p.flops / p.s / 1e12, 100.0 * p.flops / p.s / mm);

    // The decode products of one layer alone, back to back (host-timed over 50 launches, so
    // launch gaps are hidden behind the queue): GB/s of weights against the read bandwidth.
    {
      const int64_t H = c.hidden_size, I = c.intermediate_size, QKV = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
      struct Shape {
        const char* name;
        int64_t N, K;
        bool norm;
        LinearOut mode;
      };
      const Shape shapes[] = {{"qkv (norm folded in)", QKV, H, true, LinearOut::kStore},
                              {"qkv (no norm)", QKV, H, false, LinearOut::kStore},
                              {"o (+= residual)", H, c.num_heads * c.head_dim, false, LinearOut::kAccumulate},
                              {"gate_up (norm, SiLU)", 2 * I, H, true, LinearOut::kSiluMul},
                              {"down (+= residual)", H, I, false, LinearOut::kAccumulate}};
      for (int64_t rows : product_rows) {
        std::printf("\n%-24s %10s %10s %8s\n", ("decode product (M=" + std::to_string(rows) + ")").c_str(), "us",
                    "GB/s", "of read");
        for (const Shape& s : shapes) {
          DType wt = c.dtype;
          for (int i = 0; i < static_cast<int>(DType::kCount) && !dummy_dtype.empty(); ++i)
            if (dtype_name(static_cast<DType>(i)) == dummy_dtype) wt = static_cast<DType>(i);
          Tensor w = backend->alloc(wt, {s.N, s.K});
          Tensor x = backend->alloc(DType::kF32, {rows, s.K});
          Tensor nw = backend->alloc(DType::kF32, {s.K});
          Tensor out = backend->alloc(DType::kF32, {rows, s.mode == LinearOut::kSiluMul ? s.N / 2 : s.N});
          const Tensor* norm = s.norm ? &nw : nullptr;
          for (int i = 0; i < 5; ++i) backend->fused_linear(x, norm, 1e-5f, w, nullptr, s.mode, out);
          backend->to_host(out);
          const int reps = 50;
          auto tg = Clock::now();
          for (int i = 0; i < reps; ++i) backend->fused_linear(x, norm, 1e-5f, w, nullptr, s.mode, out);
          backend->to_host(out);
          const double us = seconds_since(tg) * 1e6 / reps, gbs = read_bytes(w) / (us * 1e3);
          std::printf("%-24s %10.1f %10.0f %7.1f%%\n", s.name, us, gbs, 100.0 * gbs * 1e9 / bw);
        }
      }
    }

    if (profile) {
      // Where a batch-1 decode step's device time goes, op by op (each op synchronized alone).
      const int64_t profiled = 8;
      timed->timing = true;
      for (int64_t i = 0; i < profiled; ++i) model->forward(decode_batch(1, context + i), kv);
      timed->timing = false;
      std::vector<std::pair<std::string, TimedBackend::Row>> rows(timed->rows.begin(), timed->rows.end());
      std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
      double total = 0;
      for (auto& [k, r] : rows) total += r.seconds;
      std::printf("\nbatch-1 decode step, ops synchronized one by one (%.3f ms/step in all):\n", total * 1e3 / profiled);
      std::printf("  %-28s %8s %10s %10s %8s\n", "op", "calls", "us/call", "ms/step", "GB/s");
      for (auto& [k, r] : rows)
        std::printf("  %-28s %8.1f %10.2f %10.3f %8s\n", k.c_str(), static_cast<double>(r.calls) / profiled,
                    r.seconds * 1e6 / static_cast<double>(r.calls), r.seconds * 1e3 / profiled,
                    r.bytes > 0 ? std::to_string(static_cast<int>(r.bytes / r.seconds / 1e9)).c_str() : "");
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: error: %s\n", e.what());
    return 1;
  }
}
