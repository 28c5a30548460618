// CUDA decode benchmark: batch-1 greedy decode tokens/s for a real model shape with dummy weights,
// printed beside the bound that the GPU's memory bandwidth sets: each step reads every weight once
// plus the KV cache, and the bandwidth is a device-to-device copy measured in the same run
// (bytes read plus bytes written). Also one prefill of --prefill tokens, against its FLOPs.
//
// Last, a per-op table of one decode step's device time (each op synchronized on its own).
//
//   bench_cuda_decode [--model configs/llama-3.2-1b] [--tokens 128] [--prompt 16] [--prefill 512]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "engine/generate.h"

using namespace redhare;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best of several 1 GiB device-to-device copies, timed with events; counts read + write bytes.
double measure_copy_bandwidth() {
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

// Wraps the CUDA backend; while `timing` is on, each op runs alone between two device-wide
// synchronizations and its wall time is added to its row. That serializes launches, so the rows
// sum to more than a normal step: they show where device time goes, not the step time.
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

 private:
  template <typename F>
  auto timed(const std::string& key, double bytes, F&& f) {
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
    timed(key, static_cast<double>(w.nbytes()), [&] { inner_->linear(x, w, b, out); return 0; });
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

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("REDHARE_SOURCE_DIR");
  std::string model_dir = std::string(env && *env ? env : REDHARE_SOURCE_DIR) + "/configs/llama-3.2-1b";
  int64_t tokens = 128, prompt_len = 16, prefill_len = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--model") model_dir = argv[i + 1];
    else if (a == "--tokens") tokens = std::stoll(argv[i + 1]);
    else if (a == "--prompt") prompt_len = std::stoll(argv[i + 1]);
    else if (a == "--prefill") prefill_len = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (cuda_device_count() == 0) {
      std::fprintf(stderr, "cuda_decode_bench: no CUDA device\n");
      return 1;
    }
    auto timed_backend = std::make_unique<TimedBackend>(make_cuda_backend(0));
    TimedBackend* timed = timed_backend.get();
    std::unique_ptr<Backend> backend = std::move(timed_backend);
    LoadOptions lo;
    lo.load_format = "dummy";
    auto t0 = Clock::now();
    auto model = load_model(model_dir, *backend, lo);
    const double load_s = seconds_since(t0);
    const ModelConfig& c = model->config();

    auto make_prompt = [&](int64_t n) {
      std::vector<int32_t> p;
      for (int64_t i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 7919 + 13) % c.vocab_size));
      return p;
    };
    const std::vector<int32_t> prompt = make_prompt(prompt_len);
    GreedyOptions g;
    g.max_new_tokens = 4;
    g.ignore_eos = true;
    greedy_generate(*model, *backend, prompt, g);  // warm-up: module load, pool growth

    // Decode only: every step ends in a device-to-host copy of the logits, which synchronizes,
    // so host time between tokens is device time plus launch gaps, as a user sees it.
    g.max_new_tokens = tokens + 1;
    Clock::time_point first{};
    int64_t produced = 0;
    greedy_generate(*model, *backend, prompt, g, [&](int32_t) {
      if (produced++ == 0) first = Clock::now();
    });
    const double decode_s = seconds_since(first);
    const double tok_s = static_cast<double>(tokens) / decode_s;

    // Prefill: one forward over prefill_len tokens (the last row's logits only).
    const std::vector<int32_t> long_prompt = make_prompt(prefill_len);
    GreedyOptions one;
    one.max_new_tokens = 1;
    one.ignore_eos = true;
    greedy_generate(*model, *backend, long_prompt, one);  // warm-up at this size
    auto tp = Clock::now();
    greedy_generate(*model, *backend, long_prompt, one);
    const double prefill_s = seconds_since(tp);
    const double prefill_flops = 2.0 * static_cast<double>(model->num_parameters()) * static_cast<double>(prefill_len);

    const double bw = measure_copy_bandwidth();
    const int64_t embed_bytes = dtype_bytes(c.dtype, c.vocab_size * c.hidden_size);
    // Per step every weight is read once; an untied embedding table is only looked up (one row).
    const int64_t weight_read = model->weight_bytes() - (c.tie_word_embeddings ? 0 : embed_bytes);
    const int64_t avg_ctx = prompt_len + tokens / 2;
    const int64_t kv_read = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4 * avg_ctx;
    const double bytes_per_token = static_cast<double>(weight_read + kv_read);
    const double bound = bw / bytes_per_token;

    std::printf("model              %s (%s, dummy %s weights, %.2f B params)\n", model_dir.c_str(),
                c.architecture.c_str(), std::string(dtype_name(c.dtype)).c_str(),
                static_cast<double>(model->num_parameters()) / 1e9);
    std::printf("device             %s\n", backend->name().c_str());
    std::printf("load (dummy)       %.2f s\n", load_s);
    std::printf("copy bandwidth     %.0f GB/s (1 GiB device-to-device, read + write, best of 7)\n", bw / 1e9);
    std::printf("bytes per token    %.3f GB (weights %.3f GB + f32 KV %.1f MB at context %lld)\n",
                bytes_per_token / 1e9, static_cast<double>(weight_read) / 1e9,
                static_cast<double>(kv_read) / 1e6, static_cast<long long>(avg_ctx));
    std::printf("prefill            %lld tokens in %.1f ms: %.0f tokens/s, %.1f TFLOP/s\n",
                static_cast<long long>(prefill_len), prefill_s * 1e3,
                static_cast<double>(prefill_len) / prefill_s, prefill_flops / prefill_s / 1e12);
    std::printf("decode             %.1f tokens/s (%.3f ms/token over %lld tokens)\n", tok_s,
                decode_s * 1e3 / static_cast<double>(tokens), static_cast<long long>(tokens));
    std::printf("bandwidth bound    %.1f tokens/s -> %.0f%% of bound\n", bound, 100.0 * tok_s / bound);

    // Where a decode step's device time goes, op by op (each op synchronized on its own).
    const int64_t profiled = 16;
    g.max_new_tokens = profiled + 1;
    int64_t seen = 0;
    greedy_generate(*model, *backend, prompt, g, [&](int32_t) {
      if (seen++ == 0) timed->timing = true;  // from the first decode step on
    });
    timed->timing = false;
    std::vector<std::pair<std::string, TimedBackend::Row>> rows(timed->rows.begin(), timed->rows.end());
    std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (auto& [k, r] : rows) total += r.seconds;
    std::printf("\nper decode step, ops synchronized one by one (%.3f ms/token in all):\n", total * 1e3 / profiled);
    std::printf("  %-28s %8s %10s %10s %8s\n", "op", "calls", "us/call", "ms/token", "GB/s");
    for (auto& [k, r] : rows)
      std::printf("  %-28s %8.1f %10.2f %10.3f %8s\n", k.c_str(), static_cast<double>(r.calls) / profiled,
                  r.seconds * 1e6 / static_cast<double>(r.calls), r.seconds * 1e3 / profiled,
                  r.bytes > 0 ? std::to_string(static_cast<int>(r.bytes / r.seconds / 1e9)).c_str() : "");

    // The same steps unsynchronized: host time spent queueing ops versus waiting in to_host for
    // the device. Little waiting means the step is bound by the host's launch rate.
    timed->rows.clear();
    timed->sync = false;
    seen = 0;
    greedy_generate(*model, *backend, prompt, g, [&](int32_t) {
      if (seen++ == 0) timed->timing = true;
    });
    timed->timing = false;
    double queue_s = 0, wait_s = 0;
    for (auto& [k, r] : timed->rows) (k == "to_host" ? wait_s : queue_s) += r.seconds;
    std::printf("\nunsynchronized: host queues ops for %.3f ms/token, then waits %.3f ms/token in to_host\n",
                queue_s * 1e3 / profiled, wait_s * 1e3 / profiled);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_decode_bench: error: %s\n", e.what());
    return 1;
  }
}
