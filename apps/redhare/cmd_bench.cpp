// redhare bench: measure TTFT, TPOT, ITL, end-to-end latency and throughput under a given load.
//   serve    load-test any OpenAI-compatible endpoint (redhare, vLLM, SGLang, ...) over HTTP
//   sweep    the same at concurrency 1, 2, 4, ... N, one row per level, and an SVG plot
//   offline  the same workloads through the engine in this process (no HTTP)
// Metrics are defined as in vLLM's benchmark_serving, so figures compare across engines.
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <random>
#include <tuple>

#include "apps/redhare/bench.h"
#include "apps/redhare/bench_engine.h"
#include "apps/redhare/cli.h"
#include "apps/redhare/commands.h"
#include "core/error.h"
#include "core/logging.h"
#include "server/settings.h"

namespace redhare::app {
namespace {

using namespace bench;

// Options every mode shares: the workload, the load and the report.
struct Common {
  DatasetOptions data;
  LoadPlan plan;
  std::string prompt_format = "auto";  // auto, ids, text
  std::string rate = "inf";
  int64_t warmup = 0;
  int64_t iterations = 0;
  bool no_ignore_eos = false;
  double temperature = 0;
  std::string result_file;
  bool save_detailed = false;
};

void add_common(CLI::App& app, Common& c) {
  app.add_option("--dataset", c.data.kind, "random, shared-prefix or jsonl")->capture_default_str();
  app.add_option(
      "--dataset-path", c.data.path,
      "jsonl: lines {\"prompt\": ...} or {\"messages\": [...]}, optional \"max_tokens\"");
  app.add_option("--num-prompts", c.data.num_prompts, "requests measured (jsonl: 0 = every line)")
      ->capture_default_str();
  app.add_option("--input-len", c.data.input_len,
                 "prompt tokens (shared-prefix: tokens after the prefix)")
      ->capture_default_str();
  app.add_option("--output-len", c.data.output_len, "tokens generated per request")
      ->capture_default_str();
  app.add_option("--range-ratio", c.data.range_ratio, "lengths drawn from [len*(1-r), len*(1+r)]")
      ->capture_default_str();
  app.add_option("--prefix-len", c.data.prefix_len, "shared-prefix: tokens of each group's prefix")
      ->capture_default_str();
  app.add_option("--num-groups", c.data.num_groups, "shared-prefix: number of distinct prefixes")
      ->capture_default_str();
  app.add_option(
         "--prompt-format", c.prompt_format,
         "ids (exact token ids), text (text verified with a tokenizer) or auto (ids unless chat)")
      ->capture_default_str();
  // A fixed default seed would send the same prompts on every run, and a server with a prefix
  // cache would answer a repeated run from its cache; the seed used is in the result file.
  c.data.seed = std::random_device{}() & 0xffffff;
  app.add_option("--seed", c.data.seed,
                 "seed of prompts and arrival times (default: a new one each run; give the same "
                 "one to send two servers the same prompts)");
  app.add_option("--warmup", c.warmup, "requests sent first and not counted")
      ->capture_default_str();
  app.add_option("--max-concurrency", c.plan.max_concurrency,
                 "requests in flight at most (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--request-rate", c.rate,
                 "requests per second, Poisson arrivals (inf = all at once)")
      ->capture_default_str();
  app.add_option("--burstiness", c.plan.burstiness,
                 "gamma shape of inter-arrival times (1 = Poisson, < 1 burstier)")
      ->capture_default_str();
  app.add_option("--batch-size", c.plan.batch_size,
                 "Chitu's mode: rounds of this many concurrent requests (with --iterations)");
  app.add_option("--iterations", c.iterations,
                 "Chitu's mode: number of rounds (num-prompts = batch-size x iterations)");
  app.add_flag("--no-ignore-eos", c.no_ignore_eos,
               "do not send ignore_eos (outputs may end early)");
  app.add_option("--temperature", c.temperature, "sampling temperature")->capture_default_str();
  app.add_flag(
      "--save-detailed", c.save_detailed,
      "also record each request's ttft, e2el, itl, token counts and error in the result line");
  app.add_option("--result-file", c.result_file,
                 "append one JSON line per run: config, machine, server, metrics");
}

// Checks and derives what the options imply; throws on nonsense.
void finish_common(Common& c, bool chat) {
  if (c.rate == "inf") {
    c.plan.request_rate = std::numeric_limits<double>::infinity();
  } else {
    size_t used = 0;
    try {
      c.plan.request_rate = std::stod(c.rate, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != c.rate.size() || !(c.plan.request_rate > 0))
      fail("--request-rate must be a positive number or inf");
  }
  if (!(c.plan.burstiness > 0)) fail("--burstiness must be positive");
  if (c.warmup < 0) fail("--warmup must not be negative");
  if (c.plan.batch_size > 0 || c.iterations > 0) {
    if (c.plan.batch_size < 1 || c.iterations < 1)
      fail("Chitu's mode needs both --batch-size and --iterations");
    c.data.num_prompts = c.plan.batch_size * c.iterations;
  }
  if (c.prompt_format != "auto" && c.prompt_format != "ids" && c.prompt_format != "text")
    fail("--prompt-format must be auto, ids or text");
  if (chat && c.prompt_format == "ids")
    fail("--prompt-format ids needs /v1/completions (chat messages are text)");
  c.data.chat = chat;
  c.data.as_ids = c.prompt_format != "text" && !chat;
  c.plan.seed = c.data.seed;
  c.plan.progress = isatty(STDERR_FILENO) != 0;
}

ojson config_json(const Common& c, const std::string& mode) {
  ojson j;
  j["mode"] = mode;
  j["dataset"] = c.data.kind;
  if (c.data.kind == "jsonl") j["dataset_path"] = c.data.path;
  j["num_prompts"] = c.data.num_prompts;
  j["input_len"] = c.data.input_len;
  j["output_len"] = c.data.output_len;
  j["range_ratio"] = c.data.range_ratio;
  if (c.data.kind == "shared-prefix") {
    j["prefix_len"] = c.data.prefix_len;
    j["num_groups"] = c.data.num_groups;
  }
  j["prompt_format"] = c.data.as_ids ? "ids" : "text";
  j["warmup"] = c.warmup;
  j["max_concurrency"] = c.plan.max_concurrency;
  j["request_rate"] =
      std::isfinite(c.plan.request_rate) ? ojson(c.plan.request_rate) : ojson("inf");
  j["burstiness"] = c.plan.burstiness;
  if (c.plan.batch_size > 0) {
    j["batch_size"] = c.plan.batch_size;
    j["iterations"] = c.iterations;
  }
  j["ignore_eos"] = !c.no_ignore_eos;
  j["temperature"] = c.temperature;
  j["seed"] = c.data.seed;
  return j;
}

// The workload plus --warmup extra prompts of the same kind, split into (measured, warm-up).
// Warm-up prompts are distinct from measured ones, so they do not fill the prefix cache with
// measured prompts (a jsonl file shorter than both is reused round-robin).
std::pair<std::vector<BenchPrompt>, std::vector<BenchPrompt>> build_workload(
    Common& c, const TokenSource& tokens) {
  DatasetOptions d = c.data;
  const bool whole_file = d.kind == "jsonl" && d.num_prompts <= 0;
  if (!whole_file) d.num_prompts += c.warmup;
  std::vector<BenchPrompt> all = make_dataset(d, tokens);
  std::vector<BenchPrompt> warm;
  if (whole_file) {
    for (int64_t i = 0; i < c.warmup; ++i) warm.push_back(all[static_cast<size_t>(i) % all.size()]);
  } else {
    warm.assign(all.end() - c.warmup, all.end());
    all.resize(all.size() - static_cast<size_t>(c.warmup));
  }
  c.data.num_prompts = static_cast<int64_t>(all.size());
  return {std::move(all), std::move(warm)};
}

// Warm-up requests (not counted), then the measured run.
RunOutcome measure(const std::vector<BenchPrompt>& prompts, const std::vector<BenchPrompt>& warm,
                   const LoadPlan& plan, const SenderFactory& factory) {
  if (!warm.empty()) {
    LoadPlan wp = plan;
    wp.request_rate = std::numeric_limits<double>::infinity();
    wp.batch_size = 0;
    wp.progress = false;
    if (wp.max_concurrency <= 0) wp.max_concurrency = plan.batch_size;
    std::fprintf(stderr, "warm-up: %zu requests\n", warm.size());
    run_load(warm, wp, factory);
  }
  return run_load(prompts, plan, factory);
}

void record(const Common& c, ojson config, ojson server, const ojson& metrics,
            const RunOutcome& run) {
  if (c.result_file.empty()) return;
  ojson line;
  line["date"] = utc_now_iso();
  line["redhare_version"] = REDHARE_VERSION;
  line["config"] = std::move(config);
  line["machine"] = machine_info();
  line["server"] = std::move(server);
  line["metrics"] = metrics;
  if (c.save_detailed) line["requests"] = per_request(run);
  append_json_line(c.result_file, line);
}

struct HttpSetup {
  HttpTarget target;
  ojson server;
};

void add_http(CLI::App& app, HttpTarget& t, std::string& tokenizer_dir) {
  t.base_url = "http://127.0.0.1:21002";
  app.add_option("--base-url", t.base_url, "the server, scheme://host:port[/prefix]")
      ->capture_default_str();
  app.add_option("--endpoint", t.endpoint, "/v1/completions or /v1/chat/completions")
      ->capture_default_str();
  app.add_option("--model", t.model, "model name sent (default: the first id of GET /v1/models)");
  app.add_option("--api-key", t.api_key,
                 "sent as Authorization: Bearer KEY (default: $OPENAI_API_KEY)");
  app.add_option("--tokenizer", tokenizer_dir,
                 "a local tokenizer (model dir or .gguf) instead of the server's /tokenize");
  app.add_option("--timeout", t.timeout_s, "seconds to wait for a response's next bytes")
      ->capture_default_str();
}

// Resolves the model name, server version and the tokenizer to build prompts with; the first
// request to the server, so a wrong URL fails here with one clear line.
HttpSetup connect(HttpTarget t, const std::string& tokenizer_dir, TokenSource* tokens,
                  std::unique_ptr<TextAssets>* local) {
  if (t.api_key.empty())
    if (const char* k = std::getenv("OPENAI_API_KEY")) t.api_key = k;
  if (t.endpoint.empty() || t.endpoint[0] != '/') fail("--endpoint must start with '/'");
  nlohmann::json models = http_json(t, "/v1/models", nullptr);
  if (t.model.empty()) {
    if (!models.contains("data") || !models["data"].is_array() || models["data"].empty() ||
        !models["data"][0].contains("id") || !models["data"][0]["id"].is_string())
      fail(t.base_url, "/v1/models lists no model; give --model");
    t.model = models["data"][0]["id"].get<std::string>();
  }
  HttpSetup s;
  s.server["base_url"] = t.base_url;
  s.server["endpoint"] = t.endpoint;
  s.server["model"] = t.model;
  try {
    nlohmann::json v = http_json(t, "/version", nullptr);
    s.server["version"] = v.contains("version") ? v["version"] : nlohmann::json(nullptr);
  } catch (const Error&) {
    s.server["version"] = nullptr;  // not every server has /version
  }
  if (!tokenizer_dir.empty()) {
    ModelConfig none;
    *local = std::make_unique<TextAssets>(load_text_assets(tokenizer_dir, none, tokenizer_dir));
    const Tokenizer* tk = (*local)->tokenizer.get();
    if (!tk) fail(tokenizer_dir, ": no tokenizer found");
    tokens->encode = [tk](const std::string& text) { return tk->encode(text, false); };
    tokens->decode = [tk](const std::vector<int32_t>& ids) { return tk->decode(ids, false); };
  } else {
    *tokens = http_token_source(t);
  }
  s.target = t;
  return s;
}

int run_serve(const std::vector<std::string>& args, bool sweep) {
  CLI::App app{sweep
                   ? "Run the load at concurrency 1, 2, 4, ... up to --max-concurrency; one row "
                     "per level and an SVG plot."
                   : "Load-test an OpenAI-compatible server: TTFT, TPOT, ITL, latency, throughput.",
               sweep ? "redhare bench sweep" : "redhare bench serve"};
  Common c;
  HttpTarget t;
  std::string tokenizer_dir, plot;
  add_common(app, c);
  add_http(app, t, tokenizer_dir);
  if (sweep)
    app.add_option("--plot", plot,
                   "write an SVG of output throughput against mean TPOT and mean TTFT");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  finish_common(c, t.endpoint.find("chat") != std::string::npos);
  if (sweep && c.plan.max_concurrency < 1) fail("sweep needs --max-concurrency N (the last level)");
  if (sweep && c.plan.batch_size > 0) fail("sweep does not combine with --batch-size");
  TokenSource tokens;
  std::unique_ptr<TextAssets> local;
  HttpSetup setup = connect(t, tokenizer_dir, &tokens, &local);
  auto [prompts, warm] = build_workload(c, tokens);
  ojson config = config_json(c, sweep ? "sweep" : "serve");
  config["endpoint"] = setup.target.endpoint;
  setup.target.ignore_eos = !c.no_ignore_eos;
  setup.target.temperature = c.temperature;
  SenderFactory factory = http_sender_factory(setup.target);

  if (!sweep) {
    RunOutcome run = measure(prompts, warm, c.plan, factory);
    ojson m = summarize(run);
    print_table(stdout, "Serving Benchmark Result", m);
    record(c, config, setup.server, m, run);
    return m["failed"].get<int64_t>() == 0 ? 0 : 1;
  }
  std::vector<int64_t> levels;
  for (int64_t l = 1; l < c.plan.max_concurrency; l *= 2) levels.push_back(l);
  levels.push_back(c.plan.max_concurrency);
  std::vector<SweepPoint> points;
  int64_t failed = 0;
  std::printf("%11s %9s %9s %12s %12s %12s %12s %12s\n", "concurrency", "completed", "failed",
              "req/s", "out tok/s", "mean TTFT ms", "mean TPOT ms", "mean ITL ms");
  for (size_t k = 0; k < levels.size(); ++k) {
    const int64_t level = levels[k];
    LoadPlan plan = c.plan;
    plan.max_concurrency = level;
    // Fresh prompts for each level (another seed): a level must not find the prompts of the
    // level before in the server's prefix cache. A jsonl file is what it is.
    Common lc = c;
    if (k > 0 && c.data.kind != "jsonl") {
      lc.data.seed = c.data.seed + k;
      std::tie(prompts, warm) = build_workload(lc, tokens);
    }
    RunOutcome run = measure(prompts, warm, plan, factory);
    ojson m = summarize(run);
    failed += m["failed"].get<int64_t>();
    std::printf(
        "%11lld %9lld %9lld %12.2f %12.2f %12.2f %12.2f %12.2f\n", static_cast<long long>(level),
        static_cast<long long>(m["completed"].get<int64_t>()),
        static_cast<long long>(m["failed"].get<int64_t>()), m["request_throughput"].get<double>(),
        m["output_throughput"].get<double>(), m["mean_ttft_ms"].get<double>(),
        m["mean_tpot_ms"].get<double>(), m["mean_itl_ms"].get<double>());
    for (const auto& e : m["errors"]) std::printf("  error: %s\n", e.get<std::string>().c_str());
    std::fflush(stdout);
    points.push_back({level, m["output_throughput"].get<double>(), m["mean_tpot_ms"].get<double>(),
                      m["mean_ttft_ms"].get<double>()});
    ojson cfg = config;
    cfg["max_concurrency"] = level;
    cfg["seed"] = lc.data.seed;
    record(c, cfg, setup.server, m, run);
  }
  if (!plot.empty()) {
    std::string title = setup.target.model;
    title += ": ";
    title += std::to_string(c.data.input_len);
    title += " in / ";
    title += std::to_string(c.data.output_len);
    title += " out tokens, concurrency 1..";
    title += std::to_string(c.plan.max_concurrency);
    std::ofstream f(plot);
    if (!(f << sweep_svg(points, title))) fail(plot, ": cannot write");
    std::fprintf(stderr, "wrote %s\n", plot.c_str());
  }
  return failed == 0 ? 0 : 1;
}

int run_offline(const std::vector<std::string>& args) {
  CLI::App app{
      "Run a workload through the engine in this process (no HTTP) and report the serving metrics.",
      "redhare bench offline"};
  Common c;
  OfflineOptions o;
  const Settings serve_defaults;
  o.max_running = serve_defaults.integer("infer.max_reqs");
  o.max_batched_tokens = serve_defaults.integer("infer.max_batched_tokens");
  o.kv_cache_gb = static_cast<double>(serve_defaults.integer("infer.kv_cache_bytes")) /
                  static_cast<double>(1ll << 30);
  o.kv_cache_dtype = serve_defaults.str("infer.cache_type");
  o.prefix_caching = serve_defaults.boolean("infer.prefix_caching");
  std::string log_level = "warn";
  add_common(app, c);
  app.add_option("--model", o.model,
                 "model directory or .gguf file (default: SmolLM2-135M-Instruct)");
  app.add_option("--tokenizer", o.tokenizer_dir, "tokenizer directory when the model has none");
  app.add_option("--load-format", o.load_format,
                 "auto (read the checkpoint) or dummy (random weights)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->capture_default_str();
  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N (infer.device)")->capture_default_str();
  app.add_option("--fp8-products", o.lower_bit_float,
                 "GPU products on FP8 weights: auto, bf16 (W8A16) or fp8 (W8A8) (infer.raise_lower_bit_float_to)")
      ->capture_default_str();
  app.add_option("--precision", o.precision, "GPU matrix products: bf16 or f32 (infer.matmul_precision)")
      ->capture_default_str();
  app.add_option("--max-running", o.max_running,
                 "sequences batched at most (serve's infer.max_reqs)")
      ->capture_default_str();
  app.add_option("--max-batched-tokens", o.max_batched_tokens,
                 "token budget of one step (infer.max_batched_tokens)")
      ->capture_default_str();
  app.add_option("--kv-cache-gb", o.kv_cache_gb, "KV cache size (infer.kv_cache_bytes)")
      ->capture_default_str();
  app.add_option("--kv-cache-dtype", o.kv_cache_dtype, "f32, bf16, f16 or fp8 (infer.cache_type)")
      ->capture_default_str();
  app.add_flag("!--no-prefix-caching", o.prefix_caching,
               "turn the prefix cache off (infer.prefix_caching)");
  app.add_option("--log-level", log_level, "debug, info, warn, error")->capture_default_str();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  set_log_level(parse_log_level(log_level));
  finish_common(c, false);
  if (o.model.empty()) o.model = require_default_model();
  OfflineEngine engine(o);
  auto [prompts, warm] = build_workload(c, engine.tokens());
  RunOutcome run =
      measure(prompts, warm, c.plan, engine.sender_factory(!c.no_ignore_eos, c.temperature));
  ojson m = summarize(run);
  print_table(stdout, "Offline Benchmark Result", m);
  ojson config = config_json(c, "offline");
  config["model"] = o.model;
  config["load_format"] = o.load_format;
  config["max_running"] = o.max_running;
  config["max_batched_tokens"] = o.max_batched_tokens;
  config["threads"] = o.threads;
  config["device"] = o.device;
  config["precision"] = o.precision;
  config["fp8_products"] = o.lower_bit_float;
  config["kv_cache_gb"] = o.kv_cache_gb;
  config["kv_cache_dtype"] = o.kv_cache_dtype;
  config["prefix_caching"] = o.prefix_caching;
  ojson engine_info;
  engine_info["architecture"] = engine.config().architecture;
  engine_info["version"] = REDHARE_VERSION;
  record(c, config, engine_info, m, run);
  return m["failed"].get<int64_t>() == 0 ? 0 : 1;
}

void usage() {
  std::puts(
      "usage: redhare bench <mode> [options]\n"
      "\n"
      "modes:\n"
      "  serve     load-test an OpenAI-compatible server over HTTP (redhare, vLLM, SGLang, ...)\n"
      "  sweep     serve at concurrency 1, 2, 4, ... --max-concurrency, with an SVG plot (--plot)\n"
      "  offline   the same workloads through the engine in this process, no HTTP\n"
      "\n"
      "examples:\n"
      "  redhare bench serve --base-url http://127.0.0.1:21002 --input-len 512 --output-len 128 "
      "\\\n"
      "      --num-prompts 200 --max-concurrency 16 --result-file results.jsonl\n"
      "  redhare bench serve --dataset shared-prefix --prefix-len 1024 --num-groups 4 --input-len "
      "64\n"
      "  redhare bench serve --batch-size 8 --iterations 4 --input-len 256 --output-len 64\n"
      "  redhare bench sweep --max-concurrency 32 --num-prompts 64 --plot sweep.svg\n"
      "  redhare bench offline --model configs/llama-3.2-1b --load-format dummy --num-prompts 32\n"
      "\n"
      "'redhare bench <mode> --help' lists a mode's options.");
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  if (args.size() < 2 || args[1] == "--help" || args[1] == "-h") {
    usage();
    return args.size() < 2 ? 2 : 0;
  }
  const std::vector<std::string> sub(args.begin() + 1, args.end());
  if (args[1] == "serve") return run_serve(sub, false);
  if (args[1] == "sweep") return run_serve(sub, true);
  if (args[1] == "offline") return run_offline(sub);
  std::fprintf(stderr, "redhare bench: unknown mode '%s'\n\n", args[1].c_str());
  usage();
  return 2;
}

}  // namespace redhare::app
