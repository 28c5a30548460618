// Shared pieces of `redhare bench`: workloads, the load driver, metrics and reports. The same
// workloads and metrics serve both targets (an HTTP endpoint, or the engine in-process), so the
// figures of one are comparable with the other's. Metric definitions follow vLLM's
// benchmark_serving, so figures are comparable with the engines it measures.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace redhare::app::bench {

using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

// One request of a workload.
struct BenchPrompt {
  std::string text;          // a text prompt (completions) or the user message (chat)
  std::vector<int32_t> ids;  // the prompt as token ids, when use_ids
  nlohmann::json messages;   // a whole conversation from a dataset (null otherwise)
  bool use_ids = false;
  int64_t prompt_len = 0;  // tokens as the workload counted them (0: unknown)
  int64_t max_tokens = 16;
};

// What one request measured. Times in seconds from the moment it was sent.
struct RequestResult {
  bool ok = false;
  std::string error;
  int64_t prompt_len = 0;  // the server's usage.prompt_tokens when given, else the workload's
  int64_t output_tokens =
      0;  // the server's usage.completion_tokens when given, else content chunks
  double ttft = 0;
  double e2e = 0;
  std::vector<double> itl;  // every gap between content chunks
  double start = 0;         // when it was sent, from the start of the run (set by run_load)
};

// Turns text into token ids and back; encode is null when no tokenizer is at hand (then token-id
// prompts are drawn from [0, vocab_size)).
struct TokenSource {
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  int64_t vocab_size = 0;
};

struct DatasetOptions {
  std::string kind = "random";  // random, shared-prefix, jsonl
  std::string path;             // jsonl
  int64_t num_prompts = 100;
  int64_t input_len = 128;
  int64_t output_len = 64;
  double range_ratio = 0;
  int64_t prefix_len = 256;
  int64_t num_groups = 4;
  bool as_ids = true;  // send token ids (exact length); else text verified with encode
  bool chat = false;   // prompts go to a chat endpoint
  uint64_t seed = 0;
};

// Builds the workload; throws redhare::Error on bad options or files.
std::vector<BenchPrompt> make_dataset(const DatasetOptions& o, const TokenSource& tokens);

// How requests are released.
struct LoadPlan {
  int64_t max_concurrency = 0;  // 0: unlimited
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1;   // gamma shape of inter-arrival times; 1 = Poisson
  int64_t batch_size = 0;  // > 0: rounds of batch_size requests, each round after the last ends
  uint64_t seed = 0;
  bool progress = false;  // draw a progress bar on stderr
};

// Sends one request and measures it. Each worker thread gets its own (its own connection).
using Sender = std::function<RequestResult(const BenchPrompt&)>;
using SenderFactory = std::function<Sender()>;

struct RunOutcome {
  std::vector<RequestResult> results;
  double duration = 0;  // from the first request sent to the last one answered
};

RunOutcome run_load(const std::vector<BenchPrompt>& prompts, const LoadPlan& plan,
                    const SenderFactory& factory);

// vLLM's metrics over the results: counts, throughputs and {mean, median, std, p90, p99} of
// ttft, tpot, itl and e2el in milliseconds, keyed as vLLM's result JSON keys them.
ojson summarize(const RunOutcome& run, size_t max_errors = 5);
// Every request's measurements, as arrays in request order (vLLM's --save-detailed), in seconds.
ojson per_request(const RunOutcome& run);
void print_table(std::FILE* out, const std::string& title, const ojson& metrics);

// CPU model and core count, host name.
ojson machine_info();
std::string utc_now_iso();
void append_json_line(const std::string& path, const ojson& line);

struct SweepPoint {
  int64_t concurrency = 0;
  double output_throughput = 0;
  double mean_tpot_ms = 0;
  double mean_ttft_ms = 0;
};
// Two panels: output throughput against mean TPOT and against mean TTFT, one point per level.
std::string sweep_svg(const std::vector<SweepPoint>& points, const std::string& title);

// The HTTP target: any OpenAI-compatible server.
struct HttpTarget {
  std::string base_url;  // scheme://host:port[/prefix]
  std::string endpoint = "/v1/completions";
  std::string model;
  std::string api_key;
  bool ignore_eos = true;
  double temperature = 0;
  nlohmann::json extra_body;  // merged into every request body
  int timeout_s = 600;
};

SenderFactory http_sender_factory(const HttpTarget& t);
// GET or POST (body not null) a JSON endpoint; throws redhare::Error naming the URL and the
// failure (connection refused, HTTP status and the server's message, unparseable body).
nlohmann::json http_json(const HttpTarget& t, const std::string& path, const nlohmann::json* body);
// The server's /tokenize and /detokenize (vLLM's shapes) as a TokenSource.
TokenSource http_token_source(const HttpTarget& t);

}  // namespace redhare::app::bench
