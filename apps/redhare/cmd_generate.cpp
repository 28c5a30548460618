// redhare generate: run prompts through the engine, all at once (continuous batching), and print
// each continuation. Prompts are token ids (--prompt-ids), text (--prompt, needs the model's
// tokenizer), or a file of them (--prompts-file: one text prompt per line, or JSON lines with
// "prompt" as text or ids). --chat wraps each text prompt as a user message in the chat template.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/redhare/cli.h"
#include "apps/redhare/commands.h"
#include "core/error.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "engine/detokenizer_stream.h"
#include "engine/engine.h"
#include "models/assets.h"
#include "models/gguf_model.h"
#include "text/detokenizer.h"
#include "text/jinja/chat_template.h"
#include "text/tokenizer.h"
#include "server/backend_select.h"

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

struct PromptIn {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

std::vector<PromptIn> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open");
  std::vector<PromptIn> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    if (line[0] == '{') {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("prompt")) fail(path, ":", n, ": expected {\"prompt\": text or ids}");
      PromptIn p;
      if (j["prompt"].is_string()) {
        p.text = j["prompt"].get<std::string>();
      } else if (j["prompt"].is_array()) {
        p.is_ids = true;
        for (const auto& e : j["prompt"]) {
          if (!e.is_number_integer()) fail(path, ":", n, ": prompt ids must be integers");
          p.ids.push_back(e.get<int32_t>());
        }
      } else {
        fail(path, ":", n, ": prompt must be text or a list of ids");
      }
      out.push_back(std::move(p));
    } else {
      out.push_back({line, {}, false});
    }
  }
  return out;
}


}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  CLI::App app{"Generate continuations for prompts, all run concurrently.", "redhare generate"};
  std::string model_dir, load_format = "auto", log_level = "warn", prompts_file;
  std::vector<std::string> prompt_ids, prompt_texts;
  int64_t max_tokens = 16;
  int threads = 0;
  bool json = false, ignore_eos = false, chat = false, int8 = false;
  float temperature = 0, top_p = 1;
  int top_k = 0;
  int64_t seed = -1;
  app.add_option("--model", model_dir, "model directory or .gguf file (default: SmolLM2-135M-Instruct)");
  app.add_option("--prompt-ids", prompt_ids, "a prompt as comma-separated token ids (repeatable)");
  app.add_option("--prompt", prompt_texts, "a text prompt (repeatable; needs tokenizer.json)");
  app.add_option("--prompts-file", prompts_file, "one text prompt per line, or JSON lines {\"prompt\": ...}");
  app.add_flag("--chat", chat, "render each text prompt as a user message with the chat template");
  app.add_option("--max-tokens", max_tokens, "tokens to generate per prompt")->capture_default_str();
  app.add_option("--temperature", temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-p", top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--top-k", top_k, "0 = off")->capture_default_str();
  app.add_option("--seed", seed, "sampling seed (-1 = random)")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object per prompt: prompt_ids, output_ids (and text)");
  app.add_flag("--ignore-eos", ignore_eos, "keep generating past end-of-sequence tokens");
  app.add_flag("--int8-activations", int8,
               "GGUF block weights: 8-bit activations and integer dot products (faster, not exact)");
  app.add_option("--load-format", load_format, "auto (read the checkpoint) or dummy (random weights)")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all)")->capture_default_str();
  DeviceChoice dc;
  app.add_option("--device", dc.device, "auto, cpu, cuda or cuda:N (infer.device)")->capture_default_str();
  app.add_option("--precision", dc.precision, "GPU matrix products: bf16 or f32 (infer.matmul_precision)")
      ->capture_default_str();
  app.add_option("--fp8-products", dc.lower_bit_float,
                 "GPU products on FP8 weights: auto, bf16 (W8A16) or fp8 (W8A8) (infer.raise_lower_bit_float_to)")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn, error")->capture_default_str();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (max_tokens < 1) fail("--max-tokens must be at least 1");
  if (model_dir.empty()) model_dir = require_default_model();
  set_log_level(parse_log_level(log_level));
  ThreadPool::set_global_threads(threads);
  set_cpu_int8_activations(int8);

  std::vector<PromptIn> prompts;
  for (const std::string& p : prompt_ids) prompts.push_back({"", parse_ids(p), true});
  for (const std::string& p : prompt_texts) prompts.push_back({p, {}, false});
  if (!prompts_file.empty())
    for (PromptIn& p : read_prompts_file(prompts_file)) prompts.push_back(std::move(p));
  if (prompts.empty()) fail("give at least one of --prompt-ids, --prompt, --prompts-file");

  auto backend = make_backend(dc);
  LoadOptions lo;
  lo.load_format = load_format;
  auto model = load_model(model_dir, *backend, lo);
  TextAssets assets = load_text_assets(model_dir, model->config());
  std::unique_ptr<Tokenizer> tok = std::move(assets.tokenizer);
  std::string tmpl = assets.chat_template;
  if (chat && tmpl.empty()) fail(model_dir, ": --chat needs a chat template, and this model has none");
  for (PromptIn& p : prompts) {
    if (p.is_ids) continue;
    if (!tok) fail(model_dir, ": text prompts need tokenizer.json (or use --prompt-ids)");
    if (chat) {
      nlohmann::ordered_json msgs = nlohmann::ordered_json::array({{{"role", "user"}, {"content", p.text}}});
      std::string text = jinja::apply_chat_template(tmpl, msgs, nullptr, true, nullptr, assets.bos_token,
                                                    assets.eos_token);
      p.ids = tok->encode(text, false);
    } else {
      p.ids = tok->encode(p.text, true);
    }
  }

  EngineConfig ec;
  ec.max_running = 256;
  ec.eos_token_ids = assets.eos_token_ids;
  // Enough KV for every prompt at once, so none waits on another.
  int64_t tokens = 0;
  for (const PromptIn& p : prompts) tokens += static_cast<int64_t>(p.ids.size()) + max_tokens + ec.block_size;
  ec.num_blocks = tokens / ec.block_size + 1;
  TextStreamFactory tf;
  if (tok) tf = detokenizer_streams(*tok);
  Engine engine(*model, *backend, ec, tf);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const PromptIn& p : prompts) {
    Request r;
    r.prompt = p.ids;
    r.sampling.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.top_p = top_p;
    r.sampling.top_k = top_k;
    r.sampling.ignore_eos = ignore_eos;
    if (seed >= 0) r.sampling.seed = static_cast<uint64_t>(seed);
    streams.push_back(engine.submit(std::move(r)));
  }
  auto t0 = std::chrono::steady_clock::now();
  engine.run_until_idle();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t generated = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> out;
    std::string text;
    RequestOutput o;
    std::string finish;
    while (streams[i]->try_next(&o)) {
      out.insert(out.end(), o.token_ids.begin(), o.token_ids.end());
      text += o.text;
      if (o.finished) finish = finish_reason_name(o.finish_reason);
    }
    generated += static_cast<int64_t>(out.size());
    if (json) {
      nlohmann::json j = {{"prompt_ids", prompts[i].ids}, {"output_ids", out}};
      if (tok) j["text"] = text;
      j["finish_reason"] = finish;
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else if (tok) {
      std::printf("%s\n", text.c_str());
    } else {
      for (size_t k = 0; k < out.size(); ++k) std::printf("%s%d", k ? " " : "", out[k]);
      std::printf("\n");
    }
  }
  std::fflush(stdout);
  std::fprintf(stderr, "%zu prompts, %lld tokens generated in %.2f s (%.1f tok/s)\n", prompts.size(),
               static_cast<long long>(generated), secs, static_cast<double>(generated) / secs);
  return 0;
}

}  // namespace redhare::app
