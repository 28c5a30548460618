#include "server/openai.h"

#include <cmath>

namespace redhare::openai {
namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) { throw BadRequest(param, msg); }

const json* field(const json& b, const char* name) {
  auto it = b.find(name);
  if (it == b.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& b, const char* name, double def, double lo, double hi) {
  const json* v = field(b, name);
  if (!v) return def;
  if (!v->is_number()) bad(name, std::string("'") + name + "' must be a number");
  double d = v->get<double>();
  if (!(d >= lo && d <= hi))
    bad(name, std::string("'") + name + "' must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + v->dump());
  return d;
}

int64_t integer(const json& b, const char* name, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(b, name);
  if (!v) return def;
  if (!v->is_number_integer()) bad(name, std::string("'") + name + "' must be an integer");
  int64_t i = v->get<int64_t>();
  if (i < lo || i > hi)
    bad(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(i));
  return i;
}

bool boolean(const json& b, const char* name, bool def) {
  const json* v = field(b, name);
  if (!v) return def;
  if (!v->is_boolean()) bad(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

void parse_common(const json& b, GenerationRequest& r) {
  if (!b.is_object()) bad("", "the request body must be a JSON object");
  const json* model = field(b, "model");
  if (model && !model->is_string()) bad("model", "'model' must be a string");
  if (model) r.model = model->get<std::string>();
  SamplingParams& s = r.sampling;
  s.temperature = static_cast<float>(number(b, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(number(b, "top_p", 1.0, 0.0, 1.0));
  if (s.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
  s.top_k = static_cast<int32_t>(integer(b, "top_k", 0, -1, 1 << 30));
  if (s.top_k < 0) s.top_k = 0;  // -1 means off, as in vLLM
  s.min_p = static_cast<float>(number(b, "min_p", 0.0, 0.0, 1.0));
  s.frequency_penalty = static_cast<float>(number(b, "frequency_penalty", 0.0, -2.0, 2.0));
  s.presence_penalty = static_cast<float>(number(b, "presence_penalty", 0.0, -2.0, 2.0));
  s.repetition_penalty = static_cast<float>(number(b, "repetition_penalty", 1.0, 0.01, 100.0));
  if (const json* seed = field(b, "seed")) {
    if (!seed->is_number_integer()) bad("seed", "'seed' must be an integer");
    s.seed = static_cast<uint64_t>(seed->get<int64_t>());
  }
  const char* max_key = field(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (field(b, max_key)) {
    s.max_tokens = integer(b, max_key, 16, 1, 1 << 30);
    r.max_tokens_given = true;
  }
  s.min_tokens = integer(b, "min_tokens", 0, 0, 1 << 30);
  s.ignore_eos = boolean(b, "ignore_eos", false);
  if (field(b, "stop_with_eos")) s.ignore_eos = !boolean(b, "stop_with_eos", true);
  if (const json* stop = field(b, "stop")) {
    if (stop->is_string()) {
      s.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 16) bad("stop", "'stop' may hold at most 16 strings");
      for (const json& e : *stop) {
        if (!e.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        s.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    for (const std::string& st : s.stop)
      if (st.empty()) bad("stop", "stop strings must not be empty");
  }
  if (const json* ids = field(b, "stop_token_ids")) {
    if (!ids->is_array()) bad("stop_token_ids", "'stop_token_ids' must be a list of integers");
    for (const json& e : *ids) {
      if (!e.is_number_integer()) bad("stop_token_ids", "'stop_token_ids' must be a list of integers");
      s.stop_token_ids.push_back(e.get<int32_t>());
    }
  }
  s.include_stop_str_in_output = boolean(b, "include_stop_str_in_output", false);
  r.n = static_cast<int>(integer(b, "n", 1, 1, 16));
  r.stream = boolean(b, "stream", false);
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    r.include_usage = boolean(*so, "include_usage", false);
  }
  r.return_tokens_as_token_ids = boolean(b, "return_tokens_as_token_ids", false);
  if (const json* u = field(b, "user")) {
    if (!u->is_string()) bad("user", "'user' must be a string");
    r.user = u->get<std::string>();
  }
}

}  // namespace

GenerationRequest parse_chat_request(const json& b) {
  GenerationRequest r;
  r.chat = true;
  parse_common(b, r);
  const json* msgs = field(b, "messages");
  if (!msgs || !msgs->is_array() || msgs->empty()) bad("messages", "'messages' must be a non-empty list");
  for (const json& m : *msgs) {
    if (!m.is_object()) bad("messages", "each message must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) bad("messages", "each message needs a string 'role'");
    auto content = m.find("content");
    if (content != m.end() && !content->is_null() && !content->is_string() && !content->is_array())
      bad("messages", "a message 'content' must be a string or a list of parts");
  }
  // Content given as a list of parts: text parts are joined, as vLLM does for text-only models.
  r.messages = *msgs;
  for (json& m : r.messages) {
    auto content = m.find("content");
    if (content == m.end() || !content->is_array()) continue;
    std::string text;
    for (const json& part : *content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        bad("messages", "only text content parts are supported");
      if (!text.empty()) text += "\n";
      text += part["text"].get<std::string>();
    }
    *content = text;
  }
  if (const json* tools = field(b, "tools")) {
    if (!tools->is_array()) bad("tools", "'tools' must be a list");
    r.tools = *tools;
  }
  if (const json* kw = field(b, "chat_template_kwargs")) {
    if (!kw->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    r.chat_template_kwargs = *kw;
  }
  r.add_generation_prompt = boolean(b, "add_generation_prompt", true);
  const bool want_logprobs = boolean(b, "logprobs", false);
  const int64_t top = integer(b, "top_logprobs", 0, 0, 20);
  if (field(b, "top_logprobs") && !want_logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  r.sampling.logprobs = want_logprobs ? static_cast<int32_t>(top) : -1;
  return r;
}

GenerationRequest parse_completion_request(const json& b) {
  GenerationRequest r;
  parse_common(b, r);
  const json* p = field(b, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  auto ids_of = [](const json& a) {
    Prompt pr;
    pr.is_ids = true;
    for (const json& e : a) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX)
        bad("prompt", "a token-id prompt must hold non-negative integers");
      pr.ids.push_back(e.get<int32_t>());
    }
    return pr;
  };
  if (p->is_string()) {
    r.prompts.push_back({p->get<std::string>(), {}, false});
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    r.prompts.push_back(ids_of(*p));
  } else if (p->is_array() && !p->empty()) {
    for (const json& e : *p) {
      if (e.is_string()) r.prompts.push_back({e.get<std::string>(), {}, false});
      else if (e.is_array() && !e.empty()) r.prompts.push_back(ids_of(e));
      else bad("prompt", "'prompt' must be a string, a list of strings, a list of token ids, or a list of such lists");
    }
  } else {
    bad("prompt", "'prompt' must be a string, a list of strings, a list of token ids, or a list of such lists");
  }
  if (r.prompts.size() > 256) bad("prompt", "at most 256 prompts per request");
  r.echo = boolean(b, "echo", false);
  if (const json* lp = field(b, "logprobs")) {
    if (!lp->is_number_integer()) bad("logprobs", "'logprobs' must be an integer (the number of alternatives)");
    r.sampling.logprobs = static_cast<int32_t>(integer(b, "logprobs", 0, 0, 20));
    // As vLLM: echo with logprobs also scores the prompt tokens.
    if (r.echo) r.sampling.prompt_logprobs = r.sampling.logprobs;
  }
  if (field(b, "suffix")) bad("suffix", "'suffix' is not supported");
  return r;
}

json error_body(const std::string& message, const std::string& type, const std::string& param, int code) {
  json e = {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)}, {"code", code}};
  return {{"error", e}};
}

}  // namespace redhare::openai
