// redhare generate: greedy generation for one or more prompts given as token ids.
#include <chrono>
#include <cstdio>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/redhare/cli.h"
#include "apps/redhare/commands.h"
#include "core/error.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "engine/generate.h"

namespace redhare::app {
namespace {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      fail("--prompt-ids: '", item, "' is not a token id (expected comma-separated integers)");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) fail("--prompt-ids is empty");
  return ids;
}

}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  CLI::App app{"Greedy generation from token ids.", "redhare generate"};
  std::string model_dir, load_format = "auto", log_level = "warn";
  std::vector<std::string> prompts;
  int64_t max_tokens = 16;
  int threads = 0;
  bool json = false, ignore_eos = false;
  app.add_option("--model", model_dir, "model directory (config.json + safetensors)")->required();
  app.add_option("--prompt-ids", prompts, "prompt as comma-separated token ids; repeat for more prompts")
      ->required();
  app.add_option("--max-tokens", max_tokens, "tokens to generate per prompt")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object {prompt_ids, output_ids} per prompt");
  app.add_flag("--ignore-eos", ignore_eos, "keep generating past end-of-sequence tokens");
  app.add_option("--load-format", load_format, "auto (read the checkpoint) or dummy (random weights)")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all)")->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn, error")->capture_default_str();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (max_tokens < 0) fail("--max-tokens must not be negative");
  set_log_level(parse_log_level(log_level));
  ThreadPool::set_global_threads(threads);

  auto backend = make_cpu_backend();
  LoadOptions lo;
  lo.load_format = load_format;
  auto model = load_model(model_dir, *backend, lo);
  GreedyOptions g;
  g.max_new_tokens = max_tokens;
  g.ignore_eos = ignore_eos;
  std::set<int64_t> eos(model->config().eos_token_ids.begin(), model->config().eos_token_ids.end());
  if (load_format != "dummy")
    for (int64_t id : GenerationConfig::load(model_dir).eos_token_ids) eos.insert(id);
  g.eos_ids.assign(eos.begin(), eos.end());

  for (const std::string& p : prompts) {
    std::vector<int32_t> ids = parse_ids(p);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> out = greedy_generate(*model, *backend, ids, g);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (json) {
      nlohmann::json j = {{"prompt_ids", ids}, {"output_ids", out}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? " " : "", out[i]);
      std::printf("\n");
      std::fprintf(stderr, "%zu prompt + %zu generated tokens in %.3f s\n", ids.size(), out.size(), secs);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace redhare::app
