// Offline throughput: N requests of fixed input/output length through the engine in-process,
// all submitted at once. Prints requests/s and tokens/s, and the scheduler's own time per step
// beside the model's.
//
//   bench_offline [--model configs/smollm2-135m] [--requests 32] [--input 128] [--output 64]
//                 [--max-batched-tokens 512] [--max-running 64] [--threads 0] [--sequential 1]
//                 [--load-format dummy|auto]
// --sequential 1 submits one request at a time and reports per-request latency percentiles
// (the in-process counterpart of the HTTP server overhead benchmark).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/engine.h"

using namespace redhare;

int main(int argc, char** argv) {
  std::string model_dir = std::string(REDHARE_SOURCE_DIR) + "/configs/smollm2-135m";
  int64_t requests = 32, input = 128, output = 64, budget = 512, running = 64;
  int threads = 0;
  bool sequential = false;
  std::string load_format = "dummy";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int64_t v = a == "--model" || a == "--load-format" ? 0 : std::stoll(argv[i + 1]);
    if (a == "--model") model_dir = argv[i + 1];
    else if (a == "--load-format") load_format = argv[i + 1];
    else if (a == "--sequential") sequential = v != 0;
    else if (a == "--requests") requests = v;
    else if (a == "--input") input = v;
    else if (a == "--output") output = v;
    else if (a == "--max-batched-tokens") budget = v;
    else if (a == "--max-running") running = v;
    else if (a == "--threads") threads = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    ThreadPool::set_global_threads(threads);
    auto backend = make_cpu_backend();
    LoadOptions lo;
    lo.load_format = load_format;
    auto model = load_model(model_dir, *backend, lo);
    EngineConfig cfg;
    cfg.max_batched_tokens = budget;
    cfg.max_running = running;
    cfg.kv_cache_bytes = 2ll << 30;
    cfg.kv_dtype = DType::kBF16;
    Engine engine(*model, *backend, cfg);
    auto make_request = [&](int64_t r) {
      Request req;
      for (int64_t i = 0; i < input; ++i)
        req.prompt.push_back(static_cast<int32_t>((r * 7919 + i * 104729) % model->config().vocab_size));
      req.sampling.temperature = 0;
      req.sampling.max_tokens = output;
      req.sampling.ignore_eos = true;
      return req;
    };
    if (sequential) {
      std::vector<double> lat;
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < requests; ++r) {
        auto s0 = std::chrono::steady_clock::now();
        auto st = engine.submit(make_request(r));
        engine.run_until_idle();
        RequestOutput o;
        while (st->try_next(&o)) {
        }
        lat.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::sort(lat.begin(), lat.end());
      auto pct = [&](double q) { return 1e3 * lat[static_cast<size_t>(q * static_cast<double>(lat.size() - 1))]; };
      std::printf("in-process sequential  %lld requests x (%lld in, %lld out): %.1f requests/s, latency p50 %.3f ms, p99 %.3f ms\n",
                  static_cast<long long>(requests), static_cast<long long>(input), static_cast<long long>(output),
                  static_cast<double>(requests) / secs, pct(0.5), pct(0.99));
      return 0;
    }
    std::vector<std::shared_ptr<RequestStream>> streams;
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < requests; ++r) {
      Request req;
      for (int64_t i = 0; i < input; ++i)
        req.prompt.push_back(static_cast<int32_t>((r * 7919 + i * 104729) % model->config().vocab_size));
      req.sampling.temperature = 0;
      req.sampling.max_tokens = output;
      req.sampling.ignore_eos = true;
      streams.push_back(engine.submit(req));
    }
    engine.run_until_idle();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t generated = 0;
    for (auto& s : streams) {
      RequestOutput o;
      while (s->try_next(&o)) generated += static_cast<int64_t>(o.token_ids.size());
    }
    EngineStats st = engine.stats();
    std::printf("model                %s (dummy weights), %d threads\n", model_dir.c_str(),
                ThreadPool::global().num_threads());
    std::printf("workload             %lld requests x (%lld in, %lld out), budget %lld tokens/step\n",
                static_cast<long long>(requests), static_cast<long long>(input),
                static_cast<long long>(output), static_cast<long long>(budget));
    std::printf("wall time            %.2f s\n", secs);
    std::printf("throughput           %.2f requests/s, %.1f output tok/s, %.1f total tok/s\n",
                static_cast<double>(requests) / secs, static_cast<double>(generated) / secs,
                static_cast<double>(generated + requests * input) / secs);
    std::printf("steps                %lld (%lld preemptions)\n", static_cast<long long>(st.steps),
                static_cast<long long>(st.preemptions));
    std::printf("per step             model %.2f ms, scheduler+sampling %.3f ms (%.2f%% of the step)\n",
                1e3 * st.model_seconds / static_cast<double>(st.steps),
                1e3 * st.schedule_seconds / static_cast<double>(st.steps),
                100.0 * st.schedule_seconds / (st.schedule_seconds + st.model_seconds));
    if (generated != requests * output) {
      std::fprintf(stderr, "expected %lld generated tokens, got %lld\n",
                   static_cast<long long>(requests * output), static_cast<long long>(generated));
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_offline: %s\n", e.what());
    return 1;
  }
  return 0;
}
