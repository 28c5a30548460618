#include "server/http_server.h"

#include <csignal>
#include <set>
#include <filesystem>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <thread>

#include "core/logging.h"
#include "core/thread_pool.h"
#include "server/backend_select.h"
#include "server/server_state.h"
#include "text/detokenizer.h"
#include "engine/detokenizer_stream.h"
#include "models/assets.h"
#include "models/gguf_model.h"
#include "text/jinja/chat_template.h"

#ifndef REDHARE_VERSION
#define REDHARE_VERSION "0.1.0"
#endif

namespace redhare {
namespace {

using json = openai::json;

// Compares without an early exit, so response time does not reveal how much of a key matched.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// The priority of the request's key, or nullopt (and a 401 written) when auth fails.
std::optional<int32_t> authenticate(const ServerState& st, const httplib::Request& req, httplib::Response& res) {
  if (st.api_keys.empty()) return 0;
  std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  std::string token = h.compare(0, prefix.size(), prefix) == 0 ? h.substr(prefix.size()) : std::string();
  std::optional<int32_t> found;
  for (const ApiKey& k : st.api_keys)
    if (constant_time_equal(token, k.key) && !found) found = k.priority;
  if (!found) send_error(res, 401, "invalid or missing API key (send Authorization: Bearer <key>)", "authentication_error");
  return found;
}


void load(ServerState& st, const Settings& s) {
  std::string dir = s.str("models.ckpt_dir");
  if (dir.empty()) dir = require_default_model();
  std::string tok_dir = s.str("models.tokenizer_dir");
  if (tok_dir.empty()) tok_dir = dir;
  ThreadPool::set_global_threads(static_cast<int>(s.integer("infer.threads")));
  DeviceChoice dc;
  dc.device = s.str("infer.device");
  dc.precision = s.str("infer.matmul_precision");
  dc.lower_bit_float = s.str("infer.raise_lower_bit_float_to");
  dc.cuda_graphs = s.boolean("infer.use_cuda_graph");
  st.backend = make_backend(dc);
  set_cpu_int8_activations(s.boolean("infer.cpu_int8_activations"));
  LoadOptions lo;
  lo.load_format = s.str("models.load_format");
  st.model = load_model(dir, *st.backend, lo);
  TextAssets assets = load_text_assets(dir, st.model->config(), s.str("models.tokenizer_dir"));
  if (!assets.tokenizer) fail(tok_dir, ": no tokenizer (tokenizer.json or GGUF tokenizer metadata)");
  st.tokenizer = std::move(assets.tokenizer);
  st.chat_template = assets.chat_template;
  if (st.chat_template.empty()) log_warn("the model has no chat template; /v1/chat/completions is disabled");
  st.bos_token = assets.bos_token;
  st.eos_token = assets.eos_token;

  EngineConfig ec;
  ec.max_running = s.integer("infer.max_reqs");
  ec.max_seq_len = s.integer("infer.max_seq_len");
  ec.max_batched_tokens = s.integer("infer.max_batched_tokens");
  ec.max_waiting = s.integer("infer.max_waiting");
  ec.block_size = s.integer("infer.block_size");
  ec.kv_cache_bytes = s.integer("infer.kv_cache_bytes");
  ec.kv_memory_fraction = s.number("infer.memory_utilization");
  // A GPU holds little but the model: by default the KV cache takes most of what is left.
  if (ec.kv_memory_fraction == 0 && st.backend->device().type == DeviceType::kCUDA) ec.kv_memory_fraction = 0.9;
  ec.enable_prefix_caching = s.boolean("infer.prefix_caching");
  const std::string overlap = s.str("infer.overlap_steps");
  if (overlap == "on") ec.overlap = EngineConfig::Overlap::kOn;
  else if (overlap == "off") ec.overlap = EngineConfig::Overlap::kOff;
  else if (overlap != "auto") fail("infer.overlap_steps must be auto, on or off, not '", overlap, "'");
  ec.kv_dtype = parse_kv_cache_dtype(s.str("infer.cache_type"));
  ec.eos_token_ids = assets.eos_token_ids;
  st.engine = std::make_unique<Engine>(*st.model, *st.backend, ec, detokenizer_streams(*st.tokenizer));
  st.engine->start();
}

}  // namespace

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& type,
                const std::string& param) {
  res.status = status;
  res.set_content(dump_json(openai::error_body(message, type, param, status)), "application/json");
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool parse_json_body(const httplib::Request& req, httplib::Response& res, json* out) {
  std::string ct = req.get_header_value("Content-Type");
  if (!ct.empty() && ct.find("application/json") == std::string::npos) {
    send_error(res, 415, "Content-Type must be application/json, got '" + ct + "'");
    return false;
  }
  *out = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    send_error(res, 400, "the request body is not valid JSON (or not valid UTF-8)");
    return false;
  }
  return true;
}

void block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
}

int run_server(const Settings& s) {
  set_log_level(parse_log_level(s.str("log.level")));
  ServerState st;
  st.settings = &s;
  st.default_max_tokens = s.integer("request.max_new_tokens");
  if (st.default_max_tokens < 1) fail("request.max_new_tokens must be at least 1");
  for (const auto& k : s.get("serve.api_keys")) {
    if (k.is_string()) {
      st.api_keys.push_back({k.get<std::string>(), 0});
    } else if (k.is_object() && k.contains("key") && k["key"].is_string()) {
      int32_t prio = k.contains("priority") && k["priority"].is_number_integer() ? k["priority"].get<int32_t>() : 0;
      st.api_keys.push_back({k["key"].get<std::string>(), prio});
    } else {
      fail("serve.api_keys entries must be {key: ..., priority: N}");
    }
  }
  st.model_name = s.str("serve.model_name");
  if (st.model_name.empty()) {
    std::filesystem::path p = s.str("models.ckpt_dir").empty() ? default_model_path() : s.str("models.ckpt_dir");
    p = p.lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    st.model_name = p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
  }
  if (st.model_name.empty()) st.model_name = "redhare";

  httplib::Server svr;
  const int threads = static_cast<int>(s.integer("serve.http_threads"));
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(static_cast<size_t>(s.integer("serve.max_body_bytes")));
  svr.set_read_timeout(static_cast<time_t>(s.integer("serve.read_timeout_s")), 0);
  svr.set_write_timeout(30, 0);
  svr.set_keep_alive_timeout(10);
  // The library writes a response's headers and body separately; without TCP_NODELAY the body
  // waits for the client's delayed ACK (about 40 ms per request). Accepted sockets inherit it.
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    listen_fd = sock;
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&one), sizeof(one));
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const void*>(&one), sizeof(one));
  });

  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const char* what = res.status == 413 ? "the request body is too large"
                       : res.status == 404 ? "no such endpoint"
                       : res.status == 405 ? "method not allowed"
                                           : "request failed";
    send_error(res, res.status, what, res.status == 404 ? "not_found_error" : "invalid_request_error");
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    log_error("handler failed: ", what);
    send_error(res, 500, what, "server_error");
  });

  auto gate = [&st](const httplib::Request& req, httplib::Response& res) -> std::optional<int32_t> {
    if (!st.ready) {
      send_error(res, 503, "the model is still loading", "server_error");
      return std::nullopt;
    }
    if (st.draining) {
      res.set_header("Retry-After", "5");
      send_error(res, 503, "the server is shutting down", "server_error");
      return std::nullopt;
    }
    return authenticate(st, req, res);
  };

  svr.Get("/health", [&st](const httplib::Request&, httplib::Response& res) {
    if (st.draining) res.status = 503, res.set_content(R"({"status":"draining"})", "application/json");
    else if (!st.ready) res.status = 503, res.set_content(R"({"status":"loading"})", "application/json");
    else res.set_content(R"({"status":"ok"})", "application/json");
  });
  svr.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump_json({{"version", REDHARE_VERSION}}), "application/json");
  });
  svr.Get("/metrics", [&st](const httplib::Request&, httplib::Response& res) {
    EngineStats es = st.ready ? st.engine->stats() : EngineStats{};
    res.set_content(st.metrics.render(es, st.ready), "text/plain; version=0.0.4");
  });
  svr.Get("/v1/models", [&st, gate](const httplib::Request& req, httplib::Response& res) {
    if (!gate(req, res)) return;
    json m = {{"id", st.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "redhare"},
              {"root", st.model_name}, {"max_model_len", st.max_seq_len()}};
    res.set_content(dump_json({{"object", "list"}, {"data", json::array({m})}}), "application/json");
  });
  svr.Post("/v1/completions", [&st, gate](const httplib::Request& req, httplib::Response& res) {
    if (auto prio = gate(req, res)) handle_completions(st, req, res, false, *prio);
  });
  svr.Post("/v1/chat/completions", [&st, gate](const httplib::Request& req, httplib::Response& res) {
    if (auto prio = gate(req, res)) handle_completions(st, req, res, true, *prio);
  });
  svr.Post("/tokenize", [&st, gate](const httplib::Request& req, httplib::Response& res) {
    if (gate(req, res)) handle_tokenize(st, req, res);
  });
  svr.Post("/detokenize", [&st, gate](const httplib::Request& req, httplib::Response& res) {
    if (gate(req, res)) handle_detokenize(st, req, res);
  });

  const std::string host = s.str("serve.host");
  const int port = static_cast<int>(s.integer("serve.port"));
  if (!svr.bind_to_port(host, port)) fail("cannot listen on ", host, ":", port, " (in use, or not an address here?)");
  // The library listens with a backlog of 5: a burst of new connections would overflow it and
  // wait for a SYN retransmit (1 s). Listening again on the same socket raises the backlog.
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  log_info("redhare ", REDHARE_VERSION, " listening on http://", host, ":", port);
  std::thread http([&svr] { svr.listen_after_bind(); });

  // Shutdown: the first SIGTERM/SIGINT stops new work and drains; the server then stops.
  std::atomic<bool> loading_failed{false};
  std::thread signals([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == 0) return;
    log_info("signal ", sig, ": draining (no new requests)");
    st.draining = true;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(s.integer("serve.drain_timeout_s"));
    while (st.ready && std::chrono::steady_clock::now() < deadline) {
      EngineStats es = st.engine->stats();
      if (es.running == 0 && es.waiting == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // Let the handlers finish writing their last bytes.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    svr.stop();
  });

  int rc = 0;
  try {
    load(st, s);
    st.ready = true;
    log_info("ready: ", st.model_name, " (", st.model->config().architecture, "), max_model_len ", st.max_seq_len());
  } catch (const Error& e) {
    log_error("cannot load the model: ", e.what());
    loading_failed = true;
    rc = 1;
    svr.stop();
  }
  http.join();
  if (loading_failed) {
    pthread_kill(signals.native_handle(), SIGTERM);
  }
  signals.join();
  if (st.engine) st.engine->stop();
  log_info("stopped");
  return rc;
}

}  // namespace redhare
