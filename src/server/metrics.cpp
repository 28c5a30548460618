#include "server/metrics.h"

#include <cstdio>

namespace redhare {
namespace {
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      itl_({0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5}),
      e2e_({0.01, 0.05, 0.1, 0.3, 0.5, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240}) {}

void Metrics::request_done(int status, int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ++by_status_[status];
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  generated_tokens_ += static_cast<uint64_t>(generated_tokens);
}

void Metrics::observe_ttft(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}
void Metrics::observe_itl(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.observe(s);
}
void Metrics::observe_e2e(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  e2e_.observe(s);
}

std::string Metrics::render(const EngineStats& e, bool ready) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  auto gauge = [&](const std::string& name, const std::string& help, double v) {
    o += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " + num(v) + "\n";
  };
  auto counter = [&](const std::string& name, const std::string& help, double v) {
    o += "# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " + num(v) + "\n";
  };
  o += "# HELP redhare_requests_total Finished HTTP generation requests by status code.\n# TYPE redhare_requests_total counter\n";
  for (const auto& [status, n] : by_status_)
    o += "redhare_requests_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(n) + "\n";
  gauge("redhare_ready", "1 once the model is loaded.", ready ? 1 : 0);
  gauge("redhare_num_requests_running", "Sequences in the running batch.", static_cast<double>(e.running));
  gauge("redhare_num_requests_waiting", "Sequences queued for the running batch.", static_cast<double>(e.waiting));
  gauge("redhare_kv_blocks_total", "KV cache blocks in the pool.", static_cast<double>(e.blocks_total));
  gauge("redhare_kv_blocks_used", "KV cache blocks referenced by sequences.", static_cast<double>(e.blocks_used));
  gauge("redhare_kv_cache_usage_ratio", "Fraction of KV blocks in use.",
        e.blocks_total ? static_cast<double>(e.blocks_used) / static_cast<double>(e.blocks_total) : 0.0);
  counter("redhare_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", static_cast<double>(e.prefix_lookup_tokens));
  counter("redhare_prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", static_cast<double>(e.prefix_hit_tokens));
  gauge("redhare_prefix_cache_hit_rate", "Prefix cache hits over queries, in tokens.",
        e.prefix_lookup_tokens ? static_cast<double>(e.prefix_hit_tokens) / static_cast<double>(e.prefix_lookup_tokens) : 0.0);
  counter("redhare_num_preemptions_total", "Sequences preempted for lack of KV blocks.", static_cast<double>(e.preemptions));
  counter("redhare_engine_steps_total", "Engine steps run.", static_cast<double>(e.steps));
  counter("redhare_overlapped_steps_total", "Decode steps queued before the previous step's tokens were read.",
          static_cast<double>(e.overlapped_steps));
  counter("redhare_overlap_wasted_tokens_total", "Tokens drawn by overlapped steps for sequences that had already stopped.",
          static_cast<double>(e.wasted_tokens));
  counter("redhare_prompt_tokens_total", "Prompt tokens of finished requests.", static_cast<double>(prompt_tokens_));
  counter("redhare_generation_tokens_total", "Generated tokens of finished requests.", static_cast<double>(generated_tokens_));
  ttft_.render(o, "redhare_time_to_first_token_seconds", "Time from request arrival to its first token.");
  itl_.render(o, "redhare_inter_token_latency_seconds", "Time between consecutive output chunks of a request.");
  e2e_.render(o, "redhare_e2e_request_latency_seconds", "Time from request arrival to its last token.");
  return o;
}

}  // namespace redhare
