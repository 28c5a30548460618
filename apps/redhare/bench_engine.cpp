// The in-process side of `redhare bench offline`: requests go straight to an Engine running on
// its own thread, and are timed from the RequestStream, so the same workload measured here and
// through `bench serve` shows what HTTP, JSON and detokenized streaming cost.
#include "apps/redhare/bench_engine.h"

#include "core/error.h"
#include "server/backend_select.h"
#include "core/thread_pool.h"
#include "engine/detokenizer_stream.h"
#include "text/detokenizer.h"
#include "text/jinja/chat_template.h"

namespace redhare::app::bench {
namespace {


}  // namespace

OfflineEngine::OfflineEngine(const OfflineOptions& o) {
  ThreadPool::set_global_threads(o.threads);
  DeviceChoice dc;
  dc.device = o.device;
  dc.precision = o.precision;
  dc.lower_bit_float = o.lower_bit_float;
  backend_ = make_backend(dc);
  redhare::LoadOptions lo;
  lo.load_format = o.load_format;
  model_ = load_model(o.model, *backend_, lo);
  assets_ = load_text_assets(o.model, model_->config(), o.tokenizer_dir);
  EngineConfig ec;
  ec.max_running = o.max_running;
  ec.max_batched_tokens = o.max_batched_tokens;
  ec.kv_cache_bytes = static_cast<int64_t>(o.kv_cache_gb * static_cast<double>(1ll << 30));
  ec.kv_dtype = parse_kv_cache_dtype(o.kv_cache_dtype);
  ec.enable_prefix_caching = o.prefix_caching;
  ec.eos_token_ids = assets_.eos_token_ids;
  TextStreamFactory tf;
  if (assets_.tokenizer) tf = detokenizer_streams(*assets_.tokenizer);
  engine_ = std::make_unique<Engine>(*model_, *backend_, ec, tf);
  engine_->start();
}

OfflineEngine::~OfflineEngine() {
  if (engine_) engine_->stop();
}

TokenSource OfflineEngine::tokens() const {
  TokenSource ts;
  ts.vocab_size = model_->config().vocab_size;
  if (const Tokenizer* t = assets_.tokenizer.get()) {
    ts.encode = [t](const std::string& s) { return t->encode(s, false); };
    ts.decode = [t](const std::vector<int32_t>& ids) { return t->decode(ids, false); };
  }
  return ts;
}

std::vector<int32_t> OfflineEngine::prompt_ids(const BenchPrompt& p) const {
  if (p.use_ids) return p.ids;
  const Tokenizer* t = assets_.tokenizer.get();
  if (!t) fail("text prompts need the model's tokenizer");
  if (p.messages.is_array()) {
    if (assets_.chat_template.empty())
      fail("a \"messages\" prompt needs a chat template, and the model has none");
    return t->encode(jinja::apply_chat_template(assets_.chat_template, p.messages, nullptr, true,
                                                nullptr, assets_.bos_token, assets_.eos_token),
                     false);
  }
  return t->encode(p.text, true);
}

SenderFactory OfflineEngine::sender_factory(bool ignore_eos, double temperature) {
  return [this, ignore_eos, temperature]() -> Sender {
    return [this, ignore_eos, temperature](const BenchPrompt& p) {
      RequestResult r;
      const auto sent = Clock::now();
      std::shared_ptr<RequestStream> stream;
      try {
        Request q;
        q.id = "bench-" + std::to_string(counter_.fetch_add(1));
        q.prompt = prompt_ids(p);
        q.sampling.max_tokens = p.max_tokens;
        q.sampling.temperature = static_cast<float>(temperature);
        q.sampling.ignore_eos = ignore_eos;
        r.prompt_len = static_cast<int64_t>(q.prompt.size());
        stream = engine_->submit(std::move(q));
      } catch (const std::exception& e) {  // a prompt the engine refuses, or a template error
        r.error = e.what();
        return r;
      }
      RequestOutput o;
      bool first = true;
      auto last = sent;
      while (stream->next(&o)) {
        const auto now = Clock::now();
        if (!o.token_ids.empty()) {
          if (first)
            r.ttft = std::chrono::duration<double>(now - sent).count();
          else
            r.itl.push_back(std::chrono::duration<double>(now - last).count());
          first = false;
          last = now;
        }
        r.output_tokens = o.completion_tokens;
        if (o.finished &&
            (o.finish_reason == FinishReason::kError || o.finish_reason == FinishReason::kAbort))
          r.error = o.error.empty() ? "aborted" : o.error;
      }
      r.e2e = std::chrono::duration<double>(Clock::now() - sent).count();
      if (r.error.empty() && first) r.error = "no output tokens";
      r.ok = r.error.empty();
      return r;
    };
  };
}

}  // namespace redhare::app::bench
