// /v1/completions and /v1/chat/completions (streaming and not), /tokenize, /detokenize.
#include <chrono>
#include <ctime>

#include "core/logging.h"
#include "server/server_state.h"
#include "text/jinja/chat_template.h"

namespace redhare {
namespace {

using json = openai::json;
using Clock = std::chrono::steady_clock;

struct Choice {
  size_t prompt_index = 0;
  std::shared_ptr<RequestStream> stream;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::vector<TokenLogprob> prompt_logprobs;
  std::vector<int32_t> ids;
  FinishReason finish = FinishReason::kNone;
  std::string stop_reason;
  std::string error;
  int64_t completion_tokens = 0;
  bool done = false;
};

struct Job {
  bool chat = false;
  std::string id;
  int64_t created = 0;
  openai::GenerationRequest req;
  std::vector<std::vector<int32_t>> prompt_ids;
  std::vector<std::string> prompt_texts;  // for echo
  std::vector<Choice> choices;
  Clock::time_point start;
  Clock::time_point last_output;
  Clock::time_point first_output;
  bool first_seen = false;
};

std::string token_text(const ServerState& st, const Job& job, int32_t id) {
  if (job.req.return_tokens_as_token_ids) return "token_id:" + std::to_string(id);
  return st.tokenizer->decode({id}, false);
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json chat_logprobs(const ServerState& st, const Job& job, const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const TokenLogprob& lp : lps) {
    std::string t = token_text(st, job, lp.token);
    json top = json::array();
    for (const auto& [id, v] : lp.top) {
      std::string s = token_text(st, job, id);
      top.push_back({{"token", s}, {"logprob", v}, {"bytes", bytes_of(s)}});
    }
    content.push_back({{"token", t}, {"logprob", lp.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json completion_logprobs(const ServerState& st, const Job& job, const std::vector<TokenLogprob>& lps,
                         size_t text_offset, const std::vector<int32_t>* echoed_prompt = nullptr,
                         const std::vector<TokenLogprob>* prompt_lps = nullptr) {
  json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
  if (echoed_prompt) {
    // The echoed prompt's tokens come first; the first has no logprob (nothing precedes it).
    text_offset = 0;
    for (size_t i = 0; i < echoed_prompt->size(); ++i) {
      std::string t = token_text(st, job, (*echoed_prompt)[i]);
      tokens.push_back(t);
      offsets.push_back(text_offset);
      text_offset += t.size();
      if (i == 0 || !prompt_lps || i - 1 >= prompt_lps->size()) {
        token_lps.push_back(nullptr);
        tops.push_back(nullptr);
        continue;
      }
      const TokenLogprob& lp = (*prompt_lps)[i - 1];
      token_lps.push_back(lp.logprob);
      json top = json::object();
      for (const auto& [id, v] : lp.top) top[token_text(st, job, id)] = v;
      tops.push_back(top);
    }
  }
  for (const TokenLogprob& lp : lps) {
    std::string t = token_text(st, job, lp.token);
    tokens.push_back(t);
    token_lps.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [id, v] : lp.top) top[token_text(st, job, id)] = v;
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += t.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json stop_reason_json(const Choice& c) {
  if (c.stop_reason.empty()) return nullptr;
  if (!c.stop_reason.empty() && c.finish == FinishReason::kStop && std::all_of(c.stop_reason.begin(), c.stop_reason.end(), ::isdigit))
    return std::stoll(c.stop_reason);
  return c.stop_reason;
}

json usage_json(const Job& job) {
  int64_t prompt = 0, completion = 0;
  for (const auto& p : job.prompt_ids) prompt += static_cast<int64_t>(p.size());
  for (const Choice& c : job.choices) completion += c.completion_tokens;
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

void record_output(ServerState& st, Job& job, const RequestOutput& o) {
  auto now = Clock::now();
  if (!o.token_ids.empty()) {
    if (!job.first_seen) {
      st.metrics.observe_ttft(std::chrono::duration<double>(now - job.start).count());
      job.first_seen = true;
      job.first_output = now;
    } else {
      st.metrics.observe_itl(std::chrono::duration<double>(now - job.last_output).count());
    }
    job.last_output = now;
  }
}

void absorb(Choice& c, const RequestOutput& o) {
  c.text += o.text;
  c.ids.insert(c.ids.end(), o.token_ids.begin(), o.token_ids.end());
  c.logprobs.insert(c.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
  if (!o.prompt_logprobs.empty()) c.prompt_logprobs = o.prompt_logprobs;
  c.completion_tokens = o.completion_tokens;
  if (o.finished) {
    c.done = true;
    c.finish = o.finish_reason;
    c.stop_reason = o.stop_reason;
    c.error = o.error;
  }
}

void finish_job(ServerState& st, const Job& job, int status) {
  double secs = std::chrono::duration<double>(Clock::now() - job.start).count();
  json u = usage_json(job);
  st.metrics.observe_e2e(secs);
  st.metrics.request_done(status, u["prompt_tokens"].get<int64_t>(), u["completion_tokens"].get<int64_t>());
  const double ttft = job.first_seen ? std::chrono::duration<double>(job.first_output - job.start).count() : 0;
  log_info("request ", job.id, " ", job.chat ? "chat" : "completion", " status=", status,
           " prompt_tokens=", u["prompt_tokens"].get<int64_t>(), " completion_tokens=", u["completion_tokens"].get<int64_t>(),
           " ttft=", static_cast<int64_t>(ttft * 1000), "ms duration=", static_cast<int64_t>(secs * 1000), "ms");
}

// Tokenizes the prompts, applies length limits and submits n requests per prompt. On failure
// the error is already in `res` and nothing stays submitted.
bool prepare_and_submit(ServerState& st, Job& job, httplib::Response& res, int32_t priority) {
  openai::GenerationRequest& r = job.req;
  try {
    if (r.chat) {
      if (st.chat_template.empty()) {
        send_error(res, 400, "this model has no chat template; use /v1/completions", "invalid_request_error", "messages");
        return false;
      }
      std::string text = render_chat(st, r.messages, r.tools, r.add_generation_prompt, r.chat_template_kwargs);
      job.prompt_ids.push_back(st.tokenizer->encode(text, false));
      job.prompt_texts.push_back(text);
    } else {
      for (const openai::Prompt& p : r.prompts) {
        if (p.is_ids) {
          job.prompt_ids.push_back(p.ids);
          job.prompt_texts.push_back(r.echo ? st.tokenizer->decode(p.ids, false) : std::string());
        } else {
          job.prompt_ids.push_back(st.tokenizer->encode(p.text, true));
          job.prompt_texts.push_back(p.text);
        }
      }
    }
  } catch (const openai::BadRequest& e) {
    send_error(res, 400, e.what(), "invalid_request_error", e.param());
    return false;
  } catch (const Error& e) {
    send_error(res, 400, e.what(), "invalid_request_error", r.chat ? "messages" : "prompt");
    return false;
  }
  const int64_t max_len = st.max_seq_len();
  for (const auto& ids : job.prompt_ids) {
    const int64_t P = static_cast<int64_t>(ids.size());
    if (P == 0) {
      send_error(res, 400, "the prompt is empty", "invalid_request_error", r.chat ? "messages" : "prompt");
      return false;
    }
    if (P >= max_len || (r.max_tokens_given && P + r.sampling.max_tokens > max_len)) {
      send_error(res, 400,
                 "This model's maximum context length is " + std::to_string(max_len) + " tokens. However, you requested " +
                     std::to_string(P + (r.max_tokens_given ? r.sampling.max_tokens : 0)) + " tokens (" + std::to_string(P) +
                     " in the prompt, " + std::to_string(r.max_tokens_given ? r.sampling.max_tokens : 0) +
                     " for the completion). Please reduce the prompt or max_tokens.",
                 "invalid_request_error", r.chat ? "messages" : "prompt");
      return false;
    }
  }
  try {
    for (size_t p = 0; p < job.prompt_ids.size(); ++p) {
      const int64_t P = static_cast<int64_t>(job.prompt_ids[p].size());
      for (int j = 0; j < r.n; ++j) {
        Request q;
        q.id = job.id + "-" + std::to_string(job.choices.size());
        q.prompt = job.prompt_ids[p];
        q.sampling = r.sampling;
        if (!r.max_tokens_given) q.sampling.max_tokens = std::min(st.default_max_tokens, max_len - P);
        if (q.sampling.seed && j > 0) q.sampling.seed = *q.sampling.seed + static_cast<uint64_t>(j);
        q.priority = priority;
        Choice c;
        c.prompt_index = p;
        c.stream = st.engine->submit(std::move(q));
        job.choices.push_back(std::move(c));
      }
    }
  } catch (const EngineOverloaded& e) {
    for (Choice& c : job.choices) st.engine->cancel(c.stream->id());
    res.set_header("Retry-After", "1");
    send_error(res, 429, e.what(), "rate_limit_error");
    st.metrics.request_done(429, 0, 0);
    return false;
  } catch (const Error& e) {
    for (Choice& c : job.choices) st.engine->cancel(c.stream->id());
    send_error(res, 400, e.what(), "invalid_request_error");
    return false;
  }
  return true;
}

json choice_json(const ServerState& st, const Job& job, size_t index, const Choice& c) {
  json lp = nullptr;
  if (job.req.sampling.logprobs >= 0)
    lp = job.chat ? chat_logprobs(st, job, c.logprobs)
                  : job.req.echo ? completion_logprobs(st, job, c.logprobs, 0, &job.prompt_ids[c.prompt_index], &c.prompt_logprobs)
                                 : completion_logprobs(st, job, c.logprobs, 0);
  if (job.chat)
    return {{"index", index}, {"message", {{"role", "assistant"}, {"content", c.text}}}, {"logprobs", lp},
            {"finish_reason", finish_reason_name(c.finish)}, {"stop_reason", stop_reason_json(c)}};
  std::string text = (job.req.echo ? job.prompt_texts[c.prompt_index] : std::string()) + c.text;
  return {{"index", index}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish_reason_name(c.finish)},
          {"stop_reason", stop_reason_json(c)}};
}

void respond_whole(ServerState& st, Job& job, httplib::Response& res) {
  for (Choice& c : job.choices) {
    RequestOutput o;
    while (c.stream->next(&o)) {
      record_output(st, job, o);
      absorb(c, o);
    }
  }
  for (const Choice& c : job.choices)
    if (c.finish == FinishReason::kError || c.finish == FinishReason::kAbort) {
      send_error(res, 500, "generation failed: " + (c.error.empty() ? std::string("aborted") : c.error), "server_error");
      finish_job(st, job, 500);
      return;
    }
  json choices = json::array();
  for (size_t i = 0; i < job.choices.size(); ++i) choices.push_back(choice_json(st, job, i, job.choices[i]));
  json body = {{"id", job.id}, {"object", job.chat ? "chat.completion" : "text_completion"}, {"created", job.created},
               {"model", st.model_name}, {"choices", choices}, {"usage", usage_json(job)}};
  res.status = 200;
  res.set_content(dump_json(body), "application/json");
  finish_job(st, job, 200);
}

json chunk_json(const ServerState& st, const Job& job, json choices) {
  json j = {{"id", job.id}, {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", job.created}, {"model", st.model_name}, {"choices", std::move(choices)}};
  if (job.req.include_usage) j["usage"] = nullptr;
  return j;
}

void respond_stream(ServerState& st, std::shared_ptr<Job> job, httplib::Response& res) {
  auto sent_all = std::make_shared<bool>(false);
  res.set_chunked_content_provider(
      "text/event-stream",
      [&st, job, sent_all](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          std::string line = "data: " + dump_json(j) + "\n\n";
          return sink.write(line.data(), line.size());
        };
        bool ok = true;
        // Opening chunks: the role (chat) or the echoed prompt (completions).
        for (size_t i = 0; ok && i < job->choices.size(); ++i) {
          if (job->chat) {
            ok = send(chunk_json(st, *job, json::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                           {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
          } else if (job->req.echo) {
            ok = send(chunk_json(st, *job, json::array({{{"index", i}, {"text", job->prompt_texts[job->choices[i].prompt_index]},
                                                           {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
          }
        }
        size_t remaining = job->choices.size();
        while (ok && remaining > 0) {
          for (size_t i = 0; ok && i < job->choices.size(); ++i) {
            Choice& c = job->choices[i];
            if (c.done) continue;
            RequestOutput o;
            auto w = c.stream->next_for(&o, std::chrono::milliseconds(remaining == 1 ? 1000 : 5));
            if (w != RequestStream::Wait::kOutput) continue;
            record_output(st, *job, o);
            size_t offset = c.text.size();
            absorb(c, o);
            if (c.done) --remaining;
            if (o.text.empty() && !o.finished) continue;  // held back (stop string) or mid-character
            json lp = nullptr;
            if (job->req.sampling.logprobs >= 0)
              lp = job->chat ? chat_logprobs(st, *job, o.logprobs) : completion_logprobs(st, *job, o.logprobs, offset);
            json fr = o.finished ? json(finish_reason_name(o.finish_reason)) : json(nullptr);
            json ch = job->chat ? json{{"index", i}, {"delta", o.text.empty() ? json::object() : json{{"content", o.text}}},
                                       {"logprobs", lp}, {"finish_reason", fr}}
                                : json{{"index", i}, {"text", o.text}, {"logprobs", lp}, {"finish_reason", fr}};
            if (o.finished) ch["stop_reason"] = stop_reason_json(c);
            ok = send(chunk_json(st, *job, json::array({ch})));
          }
        }
        if (ok && job->req.include_usage) {
          json u = chunk_json(st, *job, json::array());
          u["usage"] = usage_json(*job);
          ok = send(u);
        }
        if (ok) ok = sink.write("data: [DONE]\n\n", 14);
        if (!ok) {
          // The client went away: free its sequences now.
          for (Choice& c : job->choices)
            if (!c.done) st.engine->cancel(c.stream->id());
          finish_job(st, *job, 499);
          return false;
        }
        *sent_all = true;
        finish_job(st, *job, 200);
        sink.done();
        return true;
      },
      [&st, job, sent_all](bool) {
        if (*sent_all) return;
        // The connection closed before the provider finished (or ever ran).
        for (Choice& c : job->choices)
          if (!c.done) st.engine->cancel(c.stream->id());
      });
}

}  // namespace

std::string render_chat(ServerState& st, const json& messages, const json& tools, bool add_generation_prompt,
                        const json& kwargs) {
  return jinja::apply_chat_template(st.chat_template, messages, tools.is_null() ? json(nullptr) : tools,
                                    add_generation_prompt, kwargs.is_null() ? json(nullptr) : kwargs, st.bos_token,
                                    st.eos_token);
}

void handle_completions(ServerState& st, const httplib::Request& req, httplib::Response& res, bool chat,
                        int32_t priority) {
  json body;
  if (!parse_json_body(req, res, &body)) return;
  auto job = std::make_shared<Job>();
  job->chat = chat;
  job->start = Clock::now();
  job->created = static_cast<int64_t>(std::time(nullptr));
  job->id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(st.request_counter.fetch_add(1));
  try {
    job->req = chat ? openai::parse_chat_request(body) : openai::parse_completion_request(body);
  } catch (const openai::BadRequest& e) {
    send_error(res, 400, e.what(), "invalid_request_error", e.param());
    st.metrics.request_done(400, 0, 0);
    return;
  }
  if (!job->req.model.empty() && job->req.model != st.model_name) {
    send_error(res, 404, "the model '" + job->req.model + "' does not exist; this server serves '" + st.model_name + "'",
               "not_found_error", "model");
    st.metrics.request_done(404, 0, 0);
    return;
  }
  if (!prepare_and_submit(st, *job, res, priority)) {
    if (res.status == 400) st.metrics.request_done(400, 0, 0);
    return;
  }
  if (job->req.stream) respond_stream(st, job, res);
  else respond_whole(st, *job, res);
}

void handle_tokenize(ServerState& st, const httplib::Request& req, httplib::Response& res) {
  json body;
  if (!parse_json_body(req, res, &body)) return;
  try {
    if (!body.is_object()) throw openai::BadRequest("", "the request body must be a JSON object");
    std::vector<int32_t> ids;
    if (body.contains("messages")) {
      const json& m = body["messages"];
      if (!m.is_array()) throw openai::BadRequest("messages", "'messages' must be a list");
      if (st.chat_template.empty()) throw openai::BadRequest("messages", "this model has no chat template");
      bool agp = body.value("add_generation_prompt", true);
      bool special = body.value("add_special_tokens", false);
      std::string text = render_chat(st, m, body.value("tools", json(nullptr)), agp,
                                     body.value("chat_template_kwargs", json(nullptr)));
      ids = st.tokenizer->encode(text, special);
    } else {
      if (!body.contains("prompt") || !body["prompt"].is_string())
        throw openai::BadRequest("prompt", "'prompt' (a string) or 'messages' is required");
      const json* sp = body.contains("add_special_tokens") ? &body["add_special_tokens"] : nullptr;
      if (sp && !sp->is_boolean()) throw openai::BadRequest("add_special_tokens", "'add_special_tokens' must be true or false");
      ids = st.tokenizer->encode(body["prompt"].get<std::string>(), sp ? sp->get<bool>() : true);
    }
    json out = {{"count", ids.size()}, {"max_model_len", st.max_seq_len()}, {"tokens", ids}, {"token_strs", nullptr}};
    res.set_content(dump_json(out), "application/json");
  } catch (const openai::BadRequest& e) {
    send_error(res, 400, e.what(), "invalid_request_error", e.param());
  } catch (const nlohmann::json::exception& e) {
    send_error(res, 400, std::string("bad field type: ") + e.what());
  } catch (const Error& e) {
    send_error(res, 400, e.what());
  }
}

void handle_detokenize(ServerState& st, const httplib::Request& req, httplib::Response& res) {
  json body;
  if (!parse_json_body(req, res, &body)) return;
  if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array()) {
    send_error(res, 400, "'tokens' (a list of token ids) is required", "invalid_request_error", "tokens");
    return;
  }
  std::vector<int32_t> ids;
  for (const json& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= static_cast<int64_t>(st.tokenizer->vocab_size())) {
      send_error(res, 400, "'tokens' must hold token ids in [0, " + std::to_string(st.tokenizer->vocab_size()) + ")",
                 "invalid_request_error", "tokens");
      return;
    }
    ids.push_back(t.get<int32_t>());
  }
  res.set_content(dump_json({{"prompt", st.tokenizer->decode(ids, false)}}), "application/json");
}

}  // namespace redhare
