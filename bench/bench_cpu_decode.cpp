// CPU decode benchmark: batch-1 greedy decode tokens/s for a real model shape with dummy weights,
// printed beside this machine's bound: memory read bandwidth (measured in the same run, same
// threads) over the bytes each decode step must read (every weight once, plus the KV cache).
//
//   bench_cpu_decode [--model configs/llama-3.2-1b] [--tokens 32] [--prompt 16] [--threads 0]
//                    [--load-format dummy|auto]   (auto reads the checkpoint, e.g. a .gguf)
//                    [--dummy-dtype q4_k|q8_0|...] (dummy matrices in a GGUF block type)
//                    [--int8-activations 1]        (block types: the 8-bit-activation kernels)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cpu/linear_kernels.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/generate.h"

using namespace redhare;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of several passes of a threaded streaming read over a buffer far larger than the caches.
double measure_read_bandwidth(int64_t bytes, int passes) {
  int64_t n = bytes / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(n));
  ThreadPool::global().parallel_for(n, 1 << 16, [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[static_cast<size_t>(i)] = static_cast<uint64_t>(i);
  });
  std::vector<uint64_t> sums(64);
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    auto t0 = Clock::now();
    ThreadPool::global().parallel_for(n, 1 << 16, [&](int tid, int64_t b, int64_t e) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      const uint64_t* q = buf.data();
      int64_t i = b;
      for (; i + 4 <= e; i += 4) {
        s0 += q[i];
        s1 += q[i + 1];
        s2 += q[i + 2];
        s3 += q[i + 3];
      }
      for (; i < e; ++i) s0 += q[i];
      sums[static_cast<size_t>(tid)] += s0 + s1 + s2 + s3;
    });
    best = std::max(best, static_cast<double>(bytes) / seconds_since(t0));
  }
  uint64_t total = 0;
  for (uint64_t s : sums) total += s;
  if (total == 42) std::puts("");  // keeps the reads alive
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = std::string(REDHARE_SOURCE_DIR) + "/configs/llama-3.2-1b";
  int64_t tokens = 32, prompt_len = 16;
  int threads = 0;
  std::string load_format = "dummy", dummy_dtype;
  bool int8 = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--model") model_dir = argv[i + 1];
    else if (a == "--tokens") tokens = std::stoll(argv[i + 1]);
    else if (a == "--prompt") prompt_len = std::stoll(argv[i + 1]);
    else if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--load-format") load_format = argv[i + 1];
    else if (a == "--dummy-dtype") dummy_dtype = argv[i + 1];
    else if (a == "--int8-activations") int8 = std::string(argv[i + 1]) == "1";
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    ThreadPool::set_global_threads(threads);
    const char* isa = nullptr;
    cpu::select_linear_kernel(&isa);
    auto backend = make_cpu_backend();
    LoadOptions lo;
    lo.load_format = load_format;
    lo.dummy_dtype = dummy_dtype;
    set_cpu_int8_activations(int8);
    auto t0 = Clock::now();
    auto model = load_model(model_dir, *backend, lo);
    double load_s = seconds_since(t0);
    const ModelConfig& c = model->config();

    std::vector<int32_t> prompt;
    for (int64_t i = 0; i < prompt_len; ++i) prompt.push_back(static_cast<int32_t>((i * 7919) % c.vocab_size));
    GreedyOptions g;
    g.max_new_tokens = 2;
    g.ignore_eos = true;
    greedy_generate(*model, *backend, prompt, g);  // warm-up: page faults, thread start

    // Time decode steps only: prefill first, then count time from the first generated token on.
    g.max_new_tokens = tokens + 1;
    Clock::time_point first{};
    int64_t produced = 0;
    greedy_generate(*model, *backend, prompt, g, [&](int32_t) {
      if (produced++ == 0) first = Clock::now();
    });
    double decode_s = seconds_since(first);
    double tok_s = static_cast<double>(tokens) / decode_s;

    double bw = measure_read_bandwidth(int64_t{1} << 30, 5);
    // The embedding table's bytes as stored (a GGUF may keep it in another type than the rest).
    const int64_t embed_bytes = model->embedding_bytes();
    // Per step every weight is read once; an untied embedding table is only looked up (one row).
    const int64_t weight_read = model->weight_bytes() - (c.tie_word_embeddings ? 0 : embed_bytes);
    const int64_t avg_ctx = prompt_len + tokens / 2;
    const int64_t kv_read = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4 * avg_ctx;
    const double bytes_per_token = static_cast<double>(weight_read + kv_read);
    const double bound = bw / bytes_per_token;

    std::string dtypes;
    for (const auto& [name, n] : model->parameters_by_dtype()) dtypes += (dtypes.empty() ? "" : " ") + name;
    std::printf("model              %s (%s, %s weights: %s, %.3f B params)\n", model_dir.c_str(),
                c.architecture.c_str(), load_format.c_str(), dtypes.c_str(),
                static_cast<double>(model->num_parameters()) / 1e9);
    std::printf("threads            %d, matrix kernel %s%s\n", ThreadPool::global().num_threads(), isa,
                int8 ? ", 8-bit activations for block types" : "");
    std::printf("load               %.2f s\n", load_s);
    std::printf("read bandwidth     %.2f GB/s (best of 5 passes over 1 GiB)\n", bw / 1e9);
    std::printf("bytes per token    %.3f GB (weights %.3f GB + KV %.1f MB at context %lld)\n",
                bytes_per_token / 1e9, static_cast<double>(weight_read) / 1e9,
                static_cast<double>(kv_read) / 1e6, static_cast<long long>(avg_ctx));
    std::printf("decode             %.2f tok/s over %lld tokens (%.1f ms/token)\n", tok_s,
                static_cast<long long>(tokens), 1000.0 / tok_s);
    std::printf("bandwidth bound    %.2f tok/s\n", bound);
    std::printf("fraction of bound  %.1f%%\n", 100.0 * tok_s / bound);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu_decode: %s\n", e.what());
    return 1;
  }
  return 0;
}
