// OpenAI-compatible request parsing (with field-level validation) and response shapes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "engine/request.h"

namespace redhare::openai {

using json = nlohmann::ordered_json;

// A request the client got wrong: HTTP 400 with an OpenAI error object naming `param`.
class BadRequest : public Error {
 public:
  BadRequest(std::string param, const std::string& message) : Error(message), param_(std::move(param)) {}
  const std::string& param() const { return param_; }

 private:
  std::string param_;
};

struct Prompt {
  std::string text;          // when given as text
  std::vector<int32_t> ids;  // when given as token ids
  bool is_ids = false;
};

struct GenerationRequest {
  bool chat = false;
  std::string model;
  // chat
  json messages;
  json tools;                  // null when absent
  json chat_template_kwargs;   // null when absent
  bool add_generation_prompt = true;
  // completions
  std::vector<Prompt> prompts;
  bool echo = false;
  // both
  SamplingParams sampling;
  bool max_tokens_given = false;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  bool return_tokens_as_token_ids = false;
  std::string user;
};

// Parse and validate; throws BadRequest naming the offending field.
GenerationRequest parse_chat_request(const json& body);
GenerationRequest parse_completion_request(const json& body);

json error_body(const std::string& message, const std::string& type, const std::string& param, int code);

}  // namespace redhare::openai
