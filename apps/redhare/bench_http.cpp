// The HTTP side of `redhare bench serve`: one streamed (SSE) request measured as vLLM's
// benchmark measures it, and the small JSON calls around it (/v1/models, /version, /tokenize).
#include <httplib.h>

#include "apps/redhare/bench.h"
#include "core/error.h"

namespace redhare::app::bench {
namespace {

using json = nlohmann::json;

// "http://host:port/prefix" -> ("http://host:port", "/prefix"): httplib's Client takes the
// first, and the second goes before every path.
std::pair<std::string, std::string> split_base_url(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) fail("--base-url '", url, "' needs a scheme (http://host:port)");
  const size_t slash = url.find('/', scheme + 3);
  if (slash == std::string::npos) return {url, ""};
  std::string prefix = url.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return {url.substr(0, slash), prefix};
}

std::unique_ptr<httplib::Client> make_client(const HttpTarget& t) {
  auto cli = std::make_unique<httplib::Client>(split_base_url(t.base_url).first);
  if (!cli->is_valid())
    fail("--base-url '", t.base_url, "' is not a URL this build can reach (https needs OpenSSL)");
  cli->set_connection_timeout(10, 0);
  cli->set_read_timeout(t.timeout_s, 0);
  cli->set_write_timeout(60, 0);
  cli->set_keep_alive(true);
  // httplib writes headers and body separately: without this the body waits for the server's
  // delayed ACK (about 40 ms), which would be measured as TTFT.
  cli->set_tcp_nodelay(true);
  if (!t.api_key.empty()) cli->set_bearer_token_auth(t.api_key);
  return cli;
}

// The message of an OpenAI error body, else the body itself (cut short).
std::string error_message(int status, const std::string& body) {
  std::string msg = "HTTP " + std::to_string(status);
  auto j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    msg += ": ";
    msg += e.is_object() && e.contains("message") && e["message"].is_string()
               ? e["message"].get<std::string>()
               : e.dump();
  } else if (!body.empty()) {
    msg += ": ";
    msg += body.substr(0, 200);
  }
  return msg;
}

json request_body(const HttpTarget& t, const BenchPrompt& p, bool chat) {
  json b = json::object();
  if (!t.model.empty()) b["model"] = t.model;
  if (chat) {
    b["messages"] =
        p.messages.is_array() ? p.messages : json::array({{{"role", "user"}, {"content", p.text}}});
  } else if (p.use_ids) {
    b["prompt"] = p.ids;
  } else {
    b["prompt"] = p.text;
  }
  b["max_tokens"] = p.max_tokens;
  b["temperature"] = t.temperature;
  if (t.ignore_eos) b["ignore_eos"] = true;
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  if (t.extra_body.is_object())
    for (const auto& [k, v] : t.extra_body.items()) b[k] = v;
  return b;
}

// Incremental SSE reader for one response: timestamps each content chunk as its bytes arrive.
struct StreamState {
  Clock::time_point sent;
  Clock::time_point last;
  bool chat = false;
  bool first = true;
  bool done = false;
  int64_t chunks = 0;
  int64_t usage_completion = -1, usage_prompt = -1;
  std::string pending;  // bytes after the last complete line
  std::string error;
  RequestResult* r = nullptr;

  void on_data(const char* data, size_t n, Clock::time_point now) {
    pending.append(data, n);
    size_t start = 0, nl = 0;
    while ((nl = pending.find('\n', start)) != std::string::npos) {
      on_line(std::string_view(pending).substr(start, nl - start), now);
      start = nl + 1;
    }
    pending.erase(0, start);
  }

  void on_line(std::string_view line, Clock::time_point now) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.rfind("data:", 0) != 0) return;  // comments, event names, blank separators
    line.remove_prefix(5);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line == "[DONE]") {
      done = true;
      return;
    }
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      if (error.empty()) error = "unparseable SSE data: " + std::string(line.substr(0, 200));
      return;
    }
    if (j.contains("error")) {
      if (error.empty()) error = error_message(200, std::string(line));
      return;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      const json& u = j["usage"];
      if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
        usage_completion = u["completion_tokens"].get<int64_t>();
      if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
        usage_prompt = u["prompt_tokens"].get<int64_t>();
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
    const json& c = j["choices"][0];
    const json* content = nullptr;
    if (chat && c.contains("delta") && c["delta"].is_object()) {
      const json& d = c["delta"];
      // Reasoning models stream their thinking first; it is output all the same.
      if (d.contains("content") && d["content"].is_string())
        content = &d["content"];
      else if (d.contains("reasoning_content") && d["reasoning_content"].is_string())
        content = &d["reasoning_content"];
    } else if (!chat && c.contains("text") && c["text"].is_string()) {
      content = &c["text"];
    }
    // TTFT is to the first chunk with content: the chat role chunk and empty final chunks
    // carry no token.
    if (!content || content->get_ref<const std::string&>().empty()) return;
    if (first) {
      r->ttft = std::chrono::duration<double>(now - sent).count();
      first = false;
    } else {
      r->itl.push_back(std::chrono::duration<double>(now - last).count());
    }
    last = now;
    ++chunks;
  }
};

}  // namespace

namespace {

json call_json(httplib::Client& cli, const HttpTarget& t, const std::string& path,
               const json* body) {
  const std::string full = split_base_url(t.base_url).second + path;
  httplib::Result res = body ? cli.Post(full, body->dump(), "application/json") : cli.Get(full);
  std::string where = t.base_url + path;
  if (!res) fail("cannot reach ", where, ": ", httplib::to_string(res.error()));
  if (res->status != 200) fail(where, ": ", error_message(res->status, res->body));
  auto j = json::parse(res->body, nullptr, false);
  if (j.is_discarded()) fail(where, ": the answer is not JSON");
  return j;
}

}  // namespace

json http_json(const HttpTarget& t, const std::string& path, const json* body) {
  auto cli = make_client(t);
  cli->set_read_timeout(60, 0);
  return call_json(*cli, t, path, body);
}

TokenSource http_token_source(const HttpTarget& t) {
  // One connection for the many calls that building text prompts makes (not thread-safe: the
  // workload is built on one thread).
  std::shared_ptr<httplib::Client> cli = make_client(t);
  cli->set_read_timeout(60, 0);
  TokenSource ts;
  ts.encode = [t, cli](const std::string& text) {
    json body = {{"prompt", text}, {"add_special_tokens", false}};
    if (!t.model.empty()) body["model"] = t.model;
    json j;
    try {
      j = call_json(*cli, t, "/tokenize", &body);
    } catch (const Error& e) {
      fail(e.what(), " (for a server without /tokenize, give --tokenizer DIR)");
    }
    if (!j.contains("tokens") || !j["tokens"].is_array())
      fail(t.base_url, "/tokenize: no 'tokens' list in the answer");
    return j["tokens"].get<std::vector<int32_t>>();
  };
  ts.decode = [t, cli](const std::vector<int32_t>& ids) {
    json body = {{"tokens", ids}};
    if (!t.model.empty()) body["model"] = t.model;
    json j;
    try {
      j = call_json(*cli, t, "/detokenize", &body);
    } catch (const Error& e) {
      fail(e.what(), " (for a server without /detokenize, give --tokenizer DIR)");
    }
    if (!j.contains("prompt") || !j["prompt"].is_string())
      fail(t.base_url, "/detokenize: no 'prompt' in the answer");
    return j["prompt"].get<std::string>();
  };
  return ts;
}

SenderFactory http_sender_factory(const HttpTarget& t) {
  return [t]() -> Sender {
    std::shared_ptr<httplib::Client> cli = make_client(t);
    const bool chat = t.endpoint.find("chat") != std::string::npos;
    const std::string path = split_base_url(t.base_url).second + t.endpoint;
    return [cli, t, chat, path](const BenchPrompt& p) {
      RequestResult r;
      r.prompt_len = p.prompt_len;
      httplib::Request req;
      req.method = "POST";
      req.path = path;
      req.body = request_body(t, p, chat).dump(-1, ' ', false, json::error_handler_t::replace);
      req.set_header("Content-Type", "application/json");
      req.set_header("Accept", "text/event-stream");
      StreamState s;
      s.chat = chat;
      s.r = &r;
      int status = 0;
      std::string error_body;
      req.response_handler = [&](const httplib::Response& res) {
        status = res.status;
        return true;
      };
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        if (status != 200) {
          error_body.append(data, n);
          return true;
        }
        s.on_data(data, n, Clock::now());
        return true;
      };
      httplib::Response res;
      httplib::Error err = httplib::Error::Success;
      s.sent = Clock::now();
      const bool sent = cli->send(req, res, err);
      const auto end = Clock::now();
      r.e2e = std::chrono::duration<double>(end - s.sent).count();
      if (!sent) {
        r.error = "request failed: " + httplib::to_string(err);
      } else if (status != 200) {
        r.error = error_message(status, error_body.empty() ? res.body : error_body);
      } else if (!s.error.empty()) {
        r.error = s.error;
      } else if (!s.done) {
        r.error = "the stream ended without data: [DONE]";
      } else {
        r.output_tokens = s.usage_completion >= 0 ? s.usage_completion : s.chunks;
        if (s.usage_prompt >= 0) r.prompt_len = s.usage_prompt;
        if (s.chunks == 0)
          r.error = "no content in the stream";
        else
          r.ok = true;
      }
      return r;
    };
  };
}

}  // namespace redhare::app::bench
