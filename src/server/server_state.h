// State shared by the HTTP handlers (internal to the server layer).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <httplib.h>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/settings.h"
#include "text/tokenizer.h"

namespace redhare {

struct ApiKey {
  std::string key;
  int32_t priority = 0;
};

struct ServerState {
  const Settings* settings = nullptr;
  std::string model_name;
  std::vector<ApiKey> api_keys;
  int64_t default_max_tokens = 1024;

  std::atomic<bool> ready{false};
  std::atomic<bool> draining{false};
  std::atomic<uint64_t> request_counter{0};

  // Set once before `ready` becomes true; read-only afterwards.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;  // empty: the model has none
  std::string bos_token, eos_token;
  std::unique_ptr<Engine> engine;
  Metrics metrics;

  int64_t max_seq_len() const { return engine->max_seq_len(); }
};

// Sends an OpenAI-style error object.
void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& type = "invalid_request_error", const std::string& param = "");
// The request body as JSON, or a 400/415 already written to res (returns false).
bool parse_json_body(const httplib::Request& req, httplib::Response& res, openai::json* out);
std::string dump_json(const openai::json& j);

void handle_completions(ServerState& st, const httplib::Request& req, httplib::Response& res,
                        bool chat, int32_t priority);
void handle_tokenize(ServerState& st, const httplib::Request& req, httplib::Response& res);
void handle_detokenize(ServerState& st, const httplib::Request& req, httplib::Response& res);

// The prompt of a chat request rendered through the model's chat template.
std::string render_chat(ServerState& st, const openai::json& messages, const openai::json& tools,
                        bool add_generation_prompt, const openai::json& kwargs);

}  // namespace redhare
