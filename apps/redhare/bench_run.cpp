// The load driver (arrivals, concurrency, rounds, progress) and the metrics and reports of
// `redhare bench`.
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "apps/redhare/bench.h"
#include "core/error.h"

namespace redhare::app::bench {
namespace {

// Hands request indices from the dispatcher to the workers.
class IndexQueue {
 public:
  void push(size_t i) {
    {
      std::lock_guard<std::mutex> l(mu_);
      q_.push_back(i);
    }
    cv_.notify_one();
  }
  void close() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }
  bool pop(size_t* i) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return false;
    *i = q_.front();
    q_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<size_t> q_;
  bool closed_ = false;
};

void draw_progress(size_t done, size_t total, double secs) {
  const int width = 40;
  const int filled = total
                         ? static_cast<int>(static_cast<double>(width) * static_cast<double>(done) /
                                            static_cast<double>(total))
                         : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(static_cast<size_t>(width), ' ');
  std::fprintf(stderr, "\r[%s] %zu/%zu requests, %.1f s", bar.c_str(), done, total, secs);
  std::fflush(stderr);
}

// numpy.percentile's default (linear interpolation between the closest ranks).
double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

// mean, median, std (population, as numpy), p90, p99 of values in seconds, reported in ms.
void add_stats(ojson& m, const std::string& name, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  if (!v.empty()) mean /= static_cast<double>(v.size());
  for (double x : v) var += (x - mean) * (x - mean);
  if (!v.empty()) var /= static_cast<double>(v.size());
  m["mean_" + name + "_ms"] = mean * 1e3;
  m["median_" + name + "_ms"] = percentile(v, 50) * 1e3;
  m["std_" + name + "_ms"] = std::sqrt(var) * 1e3;
  m["p90_" + name + "_ms"] = percentile(v, 90) * 1e3;
  m["p99_" + name + "_ms"] = percentile(v, 99) * 1e3;
}

}  // namespace

RunOutcome run_load(const std::vector<BenchPrompt>& prompts, const LoadPlan& plan,
                    const SenderFactory& factory) {
  RunOutcome out;
  const size_t n = prompts.size();
  out.results.resize(n);
  if (n == 0) return out;
  size_t workers = n;
  if (plan.batch_size > 0)
    workers = std::min(workers, static_cast<size_t>(plan.batch_size));
  else if (plan.max_concurrency > 0)
    workers = std::min(workers, static_cast<size_t>(plan.max_concurrency));
  // One thread per request in flight: "unlimited" is capped where threads get expensive.
  constexpr size_t kMaxWorkers = 1024;
  if (workers > kMaxWorkers) {
    std::fprintf(stderr, "note: at most %zu requests in flight (one client thread each)\n",
                 kMaxWorkers);
    workers = kMaxWorkers;
  }

  IndexQueue queue;
  std::atomic<size_t> done{0};
  std::mutex done_mu;
  std::condition_variable done_cv;
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      Sender send = factory();
      size_t i = 0;
      while (queue.pop(&i)) {
        // A sender reports failures in its result; anything it throws still becomes a failed
        // request rather than ending the process.
        const double start = std::chrono::duration<double>(Clock::now() - t0).count();
        try {
          out.results[i] = send(prompts[i]);
        } catch (const std::exception& e) {
          out.results[i] = RequestResult{};
          out.results[i].error = e.what();
        }
        out.results[i].start = start;
        {
          std::lock_guard<std::mutex> l(done_mu);
          ++done;
        }
        done_cv.notify_all();
      }
    });
  }
  std::thread dispatcher([&] {
    std::mt19937_64 rng(plan.seed);
    const bool paced = std::isfinite(plan.request_rate) && plan.request_rate > 0;
    // vLLM's arrivals: gamma-distributed gaps with mean 1/rate; shape 1 is a Poisson process,
    // smaller shapes are burstier. The first request goes at once.
    std::gamma_distribution<double> gap(plan.burstiness,
                                        paced ? 1.0 / (plan.request_rate * plan.burstiness) : 1.0);
    auto next = Clock::now();
    for (size_t i = 0; i < n; ++i) {
      if (plan.batch_size > 0 && i > 0 && i % static_cast<size_t>(plan.batch_size) == 0) {
        // Chitu's rounds: a round starts when every request of the one before has finished.
        std::unique_lock<std::mutex> l(done_mu);
        done_cv.wait(l, [&] { return done.load() >= i; });
      }
      std::this_thread::sleep_until(next);
      queue.push(i);
      if (paced)
        next +=
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
    queue.close();
  });
  if (plan.progress) {
    std::unique_lock<std::mutex> l(done_mu);
    while (done.load() < n) {
      draw_progress(done.load(), n, std::chrono::duration<double>(Clock::now() - t0).count());
      done_cv.wait_for(l, std::chrono::milliseconds(200));
    }
  }
  dispatcher.join();
  for (std::thread& t : pool) t.join();
  out.duration = std::chrono::duration<double>(Clock::now() - t0).count();
  if (plan.progress) {
    draw_progress(n, n, out.duration);
    std::fputc('\n', stderr);
  }
  return out;
}

ojson summarize(const RunOutcome& run, size_t max_errors) {
  int64_t completed = 0, failed = 0, input = 0, output = 0;
  std::vector<double> ttft, tpot, itl, e2el;
  ojson errors = ojson::array();
  for (const RequestResult& r : run.results) {
    if (!r.ok) {
      ++failed;
      if (errors.size() < max_errors) errors.push_back(r.error);
      continue;
    }
    ++completed;
    input += r.prompt_len;
    output += r.output_tokens;
    ttft.push_back(r.ttft);
    e2el.push_back(r.e2e);
    // vLLM: TPOT leaves out the first token (that is TTFT) and requests with a single token.
    if (r.output_tokens > 1)
      tpot.push_back((r.e2e - r.ttft) / static_cast<double>(r.output_tokens - 1));
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
  }
  const double d = run.duration > 0 ? run.duration : 1e-9;
  ojson m;
  m["completed"] = completed;
  m["failed"] = failed;
  m["duration"] = run.duration;
  m["total_input_tokens"] = input;
  m["total_output_tokens"] = output;
  m["request_throughput"] = static_cast<double>(completed) / d;
  m["input_throughput"] = static_cast<double>(input) / d;
  m["output_throughput"] = static_cast<double>(output) / d;
  m["total_token_throughput"] = static_cast<double>(input + output) / d;
  add_stats(m, "ttft", ttft);
  add_stats(m, "tpot", tpot);
  add_stats(m, "itl", itl);
  add_stats(m, "e2el", e2el);
  m["errors"] = errors;
  return m;
}

ojson per_request(const RunOutcome& run) {
  ojson ok = ojson::array(), prompt = ojson::array(), output = ojson::array(),
        ttft = ojson::array(), e2el = ojson::array(), itl = ojson::array(), errors = ojson::array(),
        start = ojson::array();
  for (const RequestResult& r : run.results) {
    ok.push_back(r.ok);
    prompt.push_back(r.prompt_len);
    output.push_back(r.output_tokens);
    ttft.push_back(r.ttft);
    e2el.push_back(r.e2e);
    itl.push_back(r.itl);
    errors.push_back(r.error);
    start.push_back(r.start);
  }
  ojson j;
  j["ok"] = ok;
  j["start_s"] = start;
  j["prompt_tokens"] = prompt;
  j["output_tokens"] = output;
  j["ttft_s"] = ttft;
  j["e2el_s"] = e2el;
  j["itl_s"] = itl;
  j["errors"] = errors;
  return j;
}

void print_table(std::FILE* out, const std::string& title, const ojson& m) {
  auto num = [&](const char* k) { return m[k].get<double>(); };
  std::fprintf(out, "============ %s ============\n", title.c_str());
  std::fprintf(out, "%-34s %12lld\n",
               "Successful requests:", static_cast<long long>(m["completed"].get<int64_t>()));
  std::fprintf(out, "%-34s %12lld\n",
               "Failed requests:", static_cast<long long>(m["failed"].get<int64_t>()));
  std::fprintf(out, "%-34s %12.2f\n", "Benchmark duration (s):", num("duration"));
  std::fprintf(out, "%-34s %12lld\n", "Total input tokens:",
               static_cast<long long>(m["total_input_tokens"].get<int64_t>()));
  std::fprintf(out, "%-34s %12lld\n", "Total generated tokens:",
               static_cast<long long>(m["total_output_tokens"].get<int64_t>()));
  std::fprintf(out, "%-34s %12.2f\n", "Request throughput (req/s):", num("request_throughput"));
  std::fprintf(out, "%-34s %12.2f\n", "Input token throughput (tok/s):", num("input_throughput"));
  std::fprintf(out, "%-34s %12.2f\n", "Output token throughput (tok/s):", num("output_throughput"));
  std::fprintf(out, "%-34s %12.2f\n",
               "Total token throughput (tok/s):", num("total_token_throughput"));
  std::fprintf(out, "%-10s %10s %10s %10s %10s %10s\n", "(ms)", "mean", "median", "p90", "p99",
               "std");
  const std::pair<const char*, const char*> rows[] = {
      {"TTFT", "ttft"}, {"TPOT", "tpot"}, {"ITL", "itl"}, {"E2E", "e2el"}};
  for (const auto& [label, key] : rows) {
    auto v = [&](const char* stat) {
      return m[std::string(stat) + "_" + key + "_ms"].get<double>();
    };
    std::fprintf(out, "%-10s %10.2f %10.2f %10.2f %10.2f %10.2f\n", label, v("mean"), v("median"),
                 v("p90"), v("p99"), v("std"));
  }
  for (const auto& e : m["errors"]) std::fprintf(out, "error: %s\n", e.get<std::string>().c_str());
  std::fflush(out);
}

ojson machine_info() {
  ojson m;
  std::ifstream in("/proc/cpuinfo");
  std::string line, model;
  int64_t cpus = 0;
  while (std::getline(in, line)) {
    if (line.rfind("processor", 0) == 0) ++cpus;
    if (model.empty() && line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  m["cpu_model"] = model;
  m["cpu_cores"] = cpus > 0 ? cpus : static_cast<int64_t>(std::thread::hardware_concurrency());
  m["hostname"] = std::string(host);
  return m;
}

std::string utc_now_iso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void append_json_line(const std::string& path, const ojson& line) {
  std::ofstream f(path, std::ios::app);
  if (!f) fail(path, ": cannot open for appending");
  f << line.dump(-1, ' ', false, ojson::error_handler_t::replace) << '\n';
  if (!f) fail(path, ": write failed");
}

}  // namespace redhare::app::bench
