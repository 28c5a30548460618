#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/logging.h"
#include "engine/sampler.h"

namespace redhare {

struct Engine::Sequence {
  Request req;
  std::shared_ptr<RequestStream> stream;
  uint64_t arrival = 0;
  uint64_t seed = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  int64_t num_output = 0;
  int64_t computed = 0;         // leading tokens whose KV is in the cache
  std::vector<int32_t> block_table;
  int64_t hashed_blocks = 0;    // leading blocks registered in the prefix cache
  uint64_t chain_hash = BlockManager::kRootHash;
  int64_t cached_tokens = 0;
  std::unique_ptr<TextStream> text;
  std::vector<TokenLogprob> prompt_lps;  // with prompt_logprobs: prompt tokens 1.. so far
  std::string full_text;        // decoded output so far (cut at a stop string)
  size_t text_sent = 0;         // bytes of full_text already streamed
  bool finished = false;
  int awaiting = 0;             // in-flight draws that hold this sequence's next tokens

  int64_t remaining() const { return static_cast<int64_t>(tokens.size()) - computed; }
  bool before(const Sequence& o) const {
    return req.priority != o.req.priority ? req.priority < o.req.priority : arrival < o.arrival;
  }
};

// ---- RequestStream ----

void RequestStream::push(RequestOutput o) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(o));
  cv_.notify_all();
}

bool RequestStream::next(RequestOutput* out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (done_ && queue_.empty()) return false;
  cv_.wait(lock, [&] { return !queue_.empty(); });
  *out = std::move(queue_.front());
  queue_.pop_front();
  if (out->finished) done_ = true;
  return true;
}

RequestStream::Wait RequestStream::next_for(RequestOutput* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (done_ && queue_.empty()) return Wait::kFinished;
  if (!cv_.wait_for(lock, timeout, [&] { return !queue_.empty(); })) return Wait::kTimeout;
  *out = std::move(queue_.front());
  queue_.pop_front();
  if (out->finished) done_ = true;
  return Wait::kOutput;
}

bool RequestStream::try_next(RequestOutput* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty()) return false;
  *out = std::move(queue_.front());
  queue_.pop_front();
  if (out->finished) done_ = true;
  return true;
}

// ---- Engine ----

Engine::Engine(Model& model, Backend& backend, EngineConfig config, TextStreamFactory text)
    : model_(model), backend_(backend), config_(std::move(config)), text_factory_(std::move(text)) {
  const ModelConfig& mc = model_.config();
  if (config_.max_seq_len <= 0 || config_.max_seq_len > mc.max_position_embeddings)
    config_.max_seq_len = mc.max_position_embeddings;
  if (config_.block_size <= 0) fail("block size must be positive");
  if (config_.max_running <= 0) fail("max running requests must be positive");
  if (config_.max_batched_tokens <= 0) fail("max batched tokens must be positive");
  KvCacheSpec spec = model_.kv_spec(1, config_.block_size, config_.kv_dtype);
  if (config_.kv_memory_fraction > 0) {
    if (config_.kv_memory_fraction > 1) fail("the KV memory fraction must be in (0, 1]");
    config_.kv_cache_bytes = static_cast<int64_t>(config_.kv_memory_fraction *
                                                  static_cast<double>(backend_.free_memory_bytes()));
  }
  if (config_.num_blocks <= 0) config_.num_blocks = config_.kv_cache_bytes / spec.bytes_per_block();
  if (config_.num_blocks <= 0)
    fail("the KV cache budget of ", config_.kv_cache_bytes, " bytes holds no ", config_.block_size,
         "-token block (", spec.bytes_per_block(), " bytes each)");
  spec.num_blocks = config_.num_blocks;
  kv_ = backend_.alloc_kv_cache(spec);
  blocks_ = std::make_unique<BlockManager>(config_.num_blocks, config_.block_size,
                                           config_.enable_prefix_caching);
  log_info("KV cache: ", config_.num_blocks, " blocks = ", config_.num_blocks * config_.block_size,
           " tokens (", spec.bytes_per_block() * config_.num_blocks / (1 << 20), " MiB, ",
           dtype_name(config_.kv_dtype), "), prefix caching ",
           config_.enable_prefix_caching ? "on" : "off");
  overlap_ = config_.overlap == EngineConfig::Overlap::kOn ||
             (config_.overlap == EngineConfig::Overlap::kAuto && backend_.overlaps_draws());
  counters_.blocks_total = config_.num_blocks;
  publish_stats();
}

Engine::~Engine() {
  stop();
  // Draws still in flight (the engine thread stopped mid-run) are collected, so that the backend
  // has none left for the next engine.
  while (!in_flight_.empty()) collect_in_flight();
}

std::shared_ptr<RequestStream> Engine::submit(Request r) {
  const ModelConfig& mc = model_.config();
  const SamplingParams& p = r.sampling;
  const int64_t P = static_cast<int64_t>(r.prompt.size());
  if (P == 0) fail("the prompt is empty");
  for (int32_t t : r.prompt)
    if (t < 0 || t >= mc.vocab_size) fail("prompt token id ", t, " is outside the vocabulary [0, ", mc.vocab_size, ")");
  if (p.max_tokens < 1) fail("max_tokens must be at least 1, got ", p.max_tokens);
  if (P + p.max_tokens > config_.max_seq_len)
    fail("this model's maximum context length is ", config_.max_seq_len, " tokens, but the request has ", P,
         " prompt tokens and max_tokens ", p.max_tokens, " (", P + p.max_tokens, " in all)");
  const int64_t need = (P + p.max_tokens + config_.block_size - 1) / config_.block_size;
  if (need > config_.num_blocks)
    fail("the request needs ", need, " KV blocks (", P + p.max_tokens, " tokens) but the whole cache holds ",
         config_.num_blocks);
  if (!(p.temperature >= 0)) fail("temperature must be >= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("top_p must be in (0, 1]");
  if (p.top_k < 0) fail("top_k must be >= 0");
  if (!(p.min_p >= 0 && p.min_p <= 1)) fail("min_p must be in [0, 1]");
  if (!(p.repetition_penalty > 0)) fail("repetition_penalty must be > 0");
  if (p.logprobs > 20) fail("logprobs must be at most 20");
  if (p.prompt_logprobs > 20) fail("prompt logprobs must be at most 20");
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) fail("min_tokens must be in [0, max_tokens]");
  for (const std::string& s : p.stop)
    if (s.empty()) fail("stop strings must not be empty");
  if (!p.stop.empty() && !text_factory_) fail("stop strings need a tokenizer, and this engine has none");

  auto s = std::make_unique<Sequence>();
  s->req = std::move(r);
  s->stream = std::make_shared<RequestStream>();
  s->tokens = s->req.prompt;
  s->prompt_len = P;
  if (s->req.sampling.seed) {
    s->seed = *s->req.sampling.seed;
  } else {
    static std::mt19937_64 rng(std::random_device{}());
    static std::mutex rng_mu;
    std::lock_guard<std::mutex> lock(rng_mu);
    s->seed = rng();
  }
  if (text_factory_) s->text = text_factory_(s->req.prompt);
  auto stream = s->stream;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (queued_ >= config_.max_waiting)
      throw EngineOverloaded("too many waiting requests (" + std::to_string(queued_) + "); try again later");
    if (s->req.id.empty()) s->req.id = "req-" + std::to_string(arrival_counter_);
    s->arrival = arrival_counter_++;
    stream->id_ = s->req.id;
    ++queued_;
    inbox_.push_back(std::move(s));
  }
  inbox_cv_.notify_all();
  return stream;
}

void Engine::cancel(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    cancels_.push_back(id);
  }
  inbox_cv_.notify_all();
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> incoming;
  std::vector<std::string> cancels;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    incoming.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (auto& s : incoming) waiting_.push_back(std::move(s));
  for (const std::string& id : cancels) {
    for (auto* list : {&running_, &waiting_})
      for (auto& s : *list)
        if (!s->finished && s->req.id == id) {
          RequestOutput out;
          finish(*s, FinishReason::kAbort, "", out);
          s->stream->push(std::move(out));
        }
  }
  auto gone = [](const std::unique_ptr<Sequence>& s) { return s->finished; };
  int64_t removed_waiting = std::count_if(waiting_.begin(), waiting_.end(), gone);
  remove_finished();
  if (removed_waiting) {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    queued_ -= removed_waiting;
  }
}

void Engine::remove_finished() {
  for (auto* list : {&running_, &waiting_}) {
    for (auto& s : *list)
      if (s->finished && s->awaiting > 0) retired_.push_back(std::move(s));
    list->erase(std::remove_if(list->begin(), list->end(), [](const auto& s) { return !s || s->finished; }),
                list->end());
  }
}

void Engine::free_sequence(Sequence& s) {
  for (int32_t b : s.block_table) blocks_->release(b);
  s.block_table.clear();
  s.computed = 0;
  s.hashed_blocks = 0;
  s.chain_hash = BlockManager::kRootHash;
}

void Engine::preempt(Sequence& s) {
  // Recompute later: drop the KV, keep every token (prompt and output so far).
  free_sequence(s);
  ++counters_.preemptions;
  log_debug("preempted ", s.req.id, " at ", s.tokens.size(), " tokens");
}

bool Engine::ensure_blocks(Sequence& s, int64_t tokens_after) {
  const int64_t need = (tokens_after + config_.block_size - 1) / config_.block_size;
  while (static_cast<int64_t>(s.block_table.size()) < need) {
    auto b = blocks_->allocate();
    if (!b) return false;
    s.block_table.push_back(*b);
  }
  return true;
}

void Engine::admit_prefix(Sequence& s) {
  if (s.computed > 0 || !s.block_table.empty()) return;
  // Prompt logprobs need every prompt position's logits: nothing may be skipped.
  if (s.req.sampling.prompt_logprobs >= 0 && s.num_output == 0) return;
  // The last token is always computed: its logits give the next token.
  std::vector<int32_t> head(s.tokens.begin(), s.tokens.end() - 1);
  s.block_table = blocks_->match_prefix(head);
  s.computed = static_cast<int64_t>(s.block_table.size()) * config_.block_size;
  s.hashed_blocks = static_cast<int64_t>(s.block_table.size());
  s.chain_hash = BlockManager::kRootHash;
  for (int64_t i = 0; i < s.hashed_blocks; ++i)
    s.chain_hash = BlockManager::chain_hash(s.chain_hash, s.tokens.data() + i * config_.block_size, config_.block_size);
  if (s.num_output == 0) s.cached_tokens = s.computed;
}

void Engine::schedule(std::vector<Sequence*>& batch, std::vector<int64_t>& chunks) {
  auto order = [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return a->before(*b); };
  std::stable_sort(running_.begin(), running_.end(), order);
  std::stable_sort(waiting_.begin(), waiting_.end(), order);
  int64_t budget = config_.max_batched_tokens;
  int64_t decodes_left = std::count_if(running_.begin(), running_.end(),
                                       [](const auto& s) { return s->remaining() == 1; });
  std::vector<std::unique_ptr<Sequence>> preempted;
  // Running sequences, best first; victims for preemption come from the back of the list.
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = *running_[i];
    int64_t chunk;
    if (s.remaining() == 1) {
      chunk = 1;
      --decodes_left;
    } else {
      chunk = std::min(s.remaining(), budget - decodes_left);  // decodes are never starved
    }
    if (chunk <= 0 || budget <= 0) continue;
    bool ok = ensure_blocks(s, s.computed + chunk);
    while (!ok && running_.size() - 1 > i) {
      Sequence& victim = *running_.back();
      if (victim.remaining() == 1) --decodes_left;
      preempt(victim);
      preempted.push_back(std::move(running_.back()));
      running_.pop_back();
      ok = ensure_blocks(s, s.computed + chunk);
    }
    if (!ok) {
      preempt(s);
      preempted.push_back(std::move(running_[i]));
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
    batch.push_back(&s);
    chunks.push_back(chunk);
    budget -= chunk;
  }
  // Waiting sequences, best first, while there is room.
  size_t admitted = 0;
  for (auto& ws : waiting_) {
    Sequence& s = *ws;
    if (budget <= 0) break;
    const bool full = static_cast<int64_t>(running_.size()) >= config_.max_running;
    if (full && (running_.empty() || !s.before(*running_.back()))) break;
    admit_prefix(s);
    int64_t chunk = std::min(s.remaining(), budget);
    bool ok = ensure_blocks(s, s.computed + chunk);
    // A better-priority arrival may take the blocks (or the slot) of worse running sequences,
    // as long as those are not already in this step's batch.
    while ((!ok || static_cast<int64_t>(running_.size()) >= config_.max_running) && !running_.empty() &&
           s.before(*running_.back()) &&
           std::find(batch.begin(), batch.end(), running_.back().get()) == batch.end()) {
      preempt(*running_.back());
      preempted.push_back(std::move(running_.back()));
      running_.pop_back();
      ok = ok || ensure_blocks(s, s.computed + chunk);
    }
    if (!ok || static_cast<int64_t>(running_.size()) >= config_.max_running) {
      free_sequence(s);  // give back the prefix-cache references; it stays waiting
      break;
    }
    batch.push_back(&s);
    chunks.push_back(chunk);
    budget -= chunk;
    running_.push_back(std::move(ws));
    ++admitted;
  }
  waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<std::ptrdiff_t>(admitted));
  for (auto& p : preempted) waiting_.push_back(std::move(p));
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    queued_ += static_cast<int64_t>(preempted.size()) - static_cast<int64_t>(admitted);
  }
}

void Engine::commit_full_blocks(Sequence& s) {
  const int64_t bs = config_.block_size;
  // Blocks whose every token is known (an overlapped step computes a token before the host has it).
  const int64_t known = std::min(s.computed, static_cast<int64_t>(s.tokens.size()));
  while ((s.hashed_blocks + 1) * bs <= known) {
    const int32_t* t = s.tokens.data() + s.hashed_blocks * bs;
    s.chain_hash = blocks_->commit(s.block_table[static_cast<size_t>(s.hashed_blocks)], s.chain_hash, t);
    ++s.hashed_blocks;
  }
}

void Engine::finish(Sequence& s, FinishReason reason, const std::string& stop_reason, RequestOutput& out) {
  s.finished = true;
  out.request_id = s.req.id;
  out.finished = true;
  out.finish_reason = reason;
  out.stop_reason = stop_reason;
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.num_output;
  out.cached_tokens = s.cached_tokens;
  if (s.text_sent < s.full_text.size()) {
    out.text += s.full_text.substr(s.text_sent);
    s.text_sent = s.full_text.size();
  }
  free_sequence(s);
}

void Engine::emit_token(Sequence& s, int32_t token, const TokenLogprob* lp) {
  const SamplingParams& p = s.req.sampling;
  s.tokens.push_back(token);
  ++s.num_output;
  ++counters_.generated_tokens;
  RequestOutput out;
  out.request_id = s.req.id;
  out.token_ids.push_back(token);
  if (lp) out.logprobs.push_back(*lp);
  if (s.num_output == 1 && p.prompt_logprobs >= 0) out.prompt_logprobs = std::move(s.prompt_lps);
  out.prompt_tokens = s.prompt_len;
  out.completion_tokens = s.num_output;
  out.cached_tokens = s.cached_tokens;

  size_t search_from = s.full_text.size();
  if (s.text) s.full_text += s.text->push(token);
  const bool may_stop = s.num_output >= p.min_tokens;
  // Stop strings, matched on text (so also across token boundaries); the text is cut before
  // the match and nothing of the stop string is ever streamed.
  size_t max_stop = 0;
  for (const std::string& st : p.stop) max_stop = std::max(max_stop, st.size());
  if (may_stop && !p.stop.empty()) {
    size_t from = search_from >= max_stop ? search_from - max_stop + 1 : 0;
    size_t best = std::string::npos;
    const std::string* which = nullptr;
    for (const std::string& st : p.stop) {
      size_t pos = s.full_text.find(st, from);
      if (pos != std::string::npos && pos < best) {
        best = pos;
        which = &st;
      }
    }
    if (which) {
      s.full_text.resize(best + (p.include_stop_str_in_output ? which->size() : 0));
      finish(s, FinishReason::kStop, *which, out);
      s.stream->push(std::move(out));
      return;
    }
  }
  const bool is_eos = std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(), token) !=
                      config_.eos_token_ids.end();
  const bool ends = (may_stop && is_eos && !p.ignore_eos) ||
                    (may_stop && std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end()) ||
                    s.num_output >= p.max_tokens || static_cast<int64_t>(s.tokens.size()) >= config_.max_seq_len;
  if (ends && s.text) s.full_text += s.text->finish();
  if (may_stop && is_eos && !p.ignore_eos) {
    finish(s, FinishReason::kStop, "", out);
  } else if (may_stop && std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end()) {
    finish(s, FinishReason::kStop, std::to_string(token), out);
  } else if (s.num_output >= p.max_tokens || static_cast<int64_t>(s.tokens.size()) >= config_.max_seq_len) {
    finish(s, FinishReason::kLength, "", out);
  } else {
    // Hold back a tail that could still grow into a stop string.
    size_t hold = 0;
    for (const std::string& st : p.stop)
      for (size_t k = std::min(st.size() - 1, s.full_text.size()); k > hold; --k)
        if (s.full_text.compare(s.full_text.size() - k, k, st, 0, k) == 0) {
          hold = k;
          break;
        }
    size_t upto = s.full_text.size() - hold;
    if (upto > s.text_sent) {
      out.text = s.full_text.substr(s.text_sent, upto - s.text_sent);
      s.text_sent = upto;
    }
  }
  s.stream->push(std::move(out));
}

bool Engine::step() {
  drain_inbox();
  if (!in_flight_.empty()) {
    if (overlapped_step()) return true;
    while (!in_flight_.empty()) collect_in_flight();
    remove_finished();
  }
  if (running_.empty() && waiting_.empty()) {
    publish_stats();
    return false;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Sequence*> batch;
  std::vector<int64_t> chunks;
  schedule(batch, chunks);
  if (batch.empty()) {
    // Nothing could run. submit() rejects requests larger than the whole pool, so with nothing
    // running this cannot happen; should it anyway, fail the head request rather than spin.
    if (running_.empty() && !waiting_.empty()) {
      RequestOutput out;
      out.error = "the engine could not schedule this request";
      finish(*waiting_.front(), FinishReason::kError, "", out);
      waiting_.front()->stream->push(std::move(out));
      waiting_.erase(waiting_.begin());
      std::lock_guard<std::mutex> lock(inbox_mu_);
      --queued_;
    }
    publish_stats();
    return true;
  }
  ForwardBatch fb;
  fb.attn.num_seqs = static_cast<int32_t>(batch.size());
  fb.attn.query_start.push_back(0);
  int32_t max_blocks = 0;
  for (Sequence* s : batch) max_blocks = std::max(max_blocks, static_cast<int32_t>(s->block_table.size()));
  fb.attn.max_blocks = max_blocks;
  const int64_t bs = config_.block_size;
  std::vector<bool> wants_logits;
  // Logits rows of prompt positions whose next token's logprob is wanted: (sequence, position).
  std::vector<std::pair<size_t, int64_t>> prompt_rows;
  std::vector<int32_t> prompt_row_index;
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& s = *batch[i];
    if (s.req.sampling.prompt_logprobs >= 0 && s.num_output == 0) {
      const int64_t next = static_cast<int64_t>(s.prompt_lps.size());  // position whose successor is due
      for (int64_t pos = std::max(s.computed, next); pos < std::min(s.computed + chunks[i], s.prompt_len - 1); ++pos) {
        prompt_rows.emplace_back(i, pos);
        prompt_row_index.push_back(fb.attn.query_start.back() + static_cast<int32_t>(pos - s.computed));
      }
    }
    for (int64_t j = 0; j < chunks[i]; ++j) {
      int64_t pos = s.computed + j;
      fb.token_ids.push_back(s.tokens[static_cast<size_t>(pos)]);
      fb.positions.push_back(static_cast<int32_t>(pos));
      fb.attn.slot_mapping.push_back(static_cast<int32_t>(s.block_table[static_cast<size_t>(pos / bs)] * bs + pos % bs));
    }
    fb.attn.query_start.push_back(fb.attn.query_start.back() + static_cast<int32_t>(chunks[i]));
    fb.attn.context_lens.push_back(static_cast<int32_t>(s.computed + chunks[i]));
    for (int32_t b = 0; b < max_blocks; ++b)
      fb.attn.block_tables.push_back(b < static_cast<int32_t>(s.block_table.size()) ? s.block_table[static_cast<size_t>(b)] : 0);
    bool done_prompt = s.computed + chunks[i] == static_cast<int64_t>(s.tokens.size());
    wants_logits.push_back(done_prompt);
    if (done_prompt) fb.logit_rows.push_back(fb.attn.query_start.back() - 1);
    if (s.num_output == 0) counters_.prompt_tokens += chunks[i];
  }
  fb.logit_rows.insert(fb.logit_rows.end(), prompt_row_index.begin(), prompt_row_index.end());
  // Sampled rows are drawn on the model's device: only their tokens (and asked-for logprobs) come
  // back, never rows of logits (a GPU step at batch 256 would otherwise copy 256 rows of them).
  std::vector<SampledToken> sampled;
  fb.sampled = &sampled;
  const int64_t V = model_.config().vocab_size;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!wants_logits[i]) continue;
    const Sequence& s = *batch[i];
    fb.sampling.push_back(row_sampling(s.req.sampling, s.tokens, s.num_output, s.seed, s.num_output, V));
  }
  // The draw stays on the device (the next step may be queued before its tokens are read) when
  // every logit row is sampled there and none needs the host before the next draw (penalties).
  fb.draw_async = overlap_ && !fb.sampling.empty() && fb.sampling.size() == fb.logit_rows.size();
  for (const RowSampling& r : fb.sampling) fb.draw_async = fb.draw_async && !r.has_penalties();
  auto t1 = std::chrono::steady_clock::now();
  Tensor logits;
  try {
    if (!fb.logit_rows.empty() || !fb.token_ids.empty()) logits = model_.forward(fb, kv_);
  } catch (const std::exception& e) {
    fail_step(batch, e.what());
    remove_finished();
    publish_stats();
    return true;
  }
  auto t2 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < prompt_rows.size(); ++k) {
    Sequence& s = *batch[prompt_rows[k].first];
    const int64_t pos = prompt_rows[k].second;
    if (pos != static_cast<int64_t>(s.prompt_lps.size())) continue;  // already have it
    const float* lrow = logits.data_as<float>() + static_cast<int64_t>(k) * V;
    s.prompt_lps.push_back(token_logprob(lrow, V, s.tokens[static_cast<size_t>(pos + 1)], s.req.sampling.prompt_logprobs));
  }
  int64_t row = 0;
  std::vector<Sequence*> drawn;  // fb.draw_async: the draw's sequences, its rows in order
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& s = *batch[i];
    s.computed += chunks[i];
    commit_full_blocks(s);
    if (!wants_logits[i]) continue;
    if (fb.draw_async) {
      ++s.awaiting;
      drawn.push_back(&s);
      continue;
    }
    emit_sampled(s, sampled[static_cast<size_t>(row++)]);
  }
  if (fb.draw_async) in_flight_.push_back(std::move(drawn));
  end_step(t0, t1, t2, false);
  return true;
}

void Engine::fail_step(const std::vector<Sequence*>& batch, const std::string& error) {
  log_error("forward step failed: ", error);
  for (Sequence* s : batch) {
    RequestOutput out;
    out.error = error;
    finish(*s, FinishReason::kError, "", out);
    s->stream->push(std::move(out));
  }
}

void Engine::emit_sampled(Sequence& s, SampledToken& t) {
  if (s.req.sampling.logprobs >= 0) {
    const TokenLogprob lp = to_token_logprob(std::move(t));
    emit_token(s, lp.token, &lp);
  } else {
    emit_token(s, t.token, nullptr);
  }
}

void Engine::end_step(Clock::time_point t0, Clock::time_point t1, Clock::time_point t2, bool overlapped) {
  remove_finished();
  const auto t3 = Clock::now();
  ++counters_.steps;
  if (overlapped) ++counters_.overlapped_steps;
  counters_.model_seconds += std::chrono::duration<double>(t2 - t1).count();
  counters_.schedule_seconds += std::chrono::duration<double>((t1 - t0) + (t3 - t2)).count();
  publish_stats();
}

bool Engine::overlapped_step() {
  if (!overlap_ || in_flight_.size() != 1) return false;
  const std::vector<Sequence*>& prev = in_flight_.back();
  const auto t0 = std::chrono::steady_clock::now();
  // Arrivals the scheduler would admit (there is room, or they rank before a running sequence,
  // which they may preempt) go through it.
  if (!waiting_.empty()) {
    if (static_cast<int64_t>(running_.size()) < config_.max_running || running_.empty()) return false;
    const Sequence* worst = running_.front().get();
    for (const auto& r : running_)
      if (worst->before(*r)) worst = r.get();
    for (const auto& w : waiting_)
      if (w->before(*worst)) return false;
  }
  // Every running sequence decodes the token it awaits from that draw, with nothing the host
  // must see first; those sure to stop on that token (their length) are left out.
  std::vector<char> take(prev.size(), 0);
  int64_t n = 0;
  for (const auto& r : running_) {
    const Sequence& s = *r;
    if (s.awaiting != 1 || (s.req.sampling.prompt_logprobs >= 0 && s.num_output == 0)) return false;
    if (s.req.sampling.has_penalties()) return false;
    const auto at = std::find(prev.begin(), prev.end(), &s);
    if (at == prev.end()) return false;
    const bool last = s.num_output + 1 >= s.req.sampling.max_tokens ||
                      static_cast<int64_t>(s.tokens.size()) + 1 >= config_.max_seq_len;
    if (last) continue;
    take[static_cast<size_t>(at - prev.begin())] = 1;
    ++n;
  }
  if (n == 0 || n > config_.max_batched_tokens) return false;
  for (size_t r = 0; r < prev.size(); ++r)
    if (take[r] && !ensure_blocks(*prev[r], prev[r]->computed + 1)) return false;  // may need preemption

  ForwardBatch fb;
  fb.attn.num_seqs = static_cast<int32_t>(n);
  fb.attn.query_start.push_back(0);
  int32_t max_blocks = 0;
  for (size_t r = 0; r < prev.size(); ++r)
    if (take[r]) max_blocks = std::max(max_blocks, static_cast<int32_t>(prev[r]->block_table.size()));
  fb.attn.max_blocks = max_blocks;
  const int64_t bs = config_.block_size, V = model_.config().vocab_size;
  std::vector<Sequence*> batch;
  for (size_t r = 0; r < prev.size(); ++r) {
    if (!take[r]) continue;
    Sequence& s = *prev[r];
    const int64_t pos = s.computed;  // the awaited token's position
    fb.token_ids.push_back(0);       // read on the device from the draw
    fb.from_draw.push_back(static_cast<int32_t>(r));
    fb.positions.push_back(static_cast<int32_t>(pos));
    fb.attn.slot_mapping.push_back(static_cast<int32_t>(s.block_table[static_cast<size_t>(pos / bs)] * bs + pos % bs));
    fb.attn.query_start.push_back(fb.attn.query_start.back() + 1);
    fb.attn.context_lens.push_back(static_cast<int32_t>(pos + 1));
    for (int32_t b = 0; b < max_blocks; ++b)
      fb.attn.block_tables.push_back(b < static_cast<int32_t>(s.block_table.size()) ? s.block_table[static_cast<size_t>(b)] : 0);
    fb.logit_rows.push_back(static_cast<int32_t>(batch.size()));
    // The token after the awaited one: output index num_output + 1 (no penalties, so the history
    // is not read).
    fb.sampling.push_back(row_sampling(s.req.sampling, s.tokens, s.num_output, s.seed, s.num_output + 1, V));
    batch.push_back(&s);
  }
  fb.draw_async = true;
  const auto t1 = std::chrono::steady_clock::now();
  try {
    model_.forward(fb, kv_);
  } catch (const std::exception& e) {
    fail_step(batch, e.what());
    while (!in_flight_.empty()) collect_in_flight();
    remove_finished();
    publish_stats();
    return true;
  }
  for (Sequence* s : batch) {
    s->computed += 1;
    ++s->awaiting;
  }
  in_flight_.push_back(std::move(batch));
  const auto t2 = std::chrono::steady_clock::now();
  collect_in_flight();  // the previous step's tokens, while this one runs
  end_step(t0, t1, t2, true);
  return true;
}

void Engine::collect_in_flight() {
  std::vector<Sequence*> seqs = std::move(in_flight_.front());
  in_flight_.pop_front();
  std::vector<SampledToken> tokens;
  std::string error;
  try {
    tokens = backend_.collect_draw();
    if (tokens.size() != seqs.size())
      error = "a draw returned " + std::to_string(tokens.size()) + " tokens for " + std::to_string(seqs.size()) + " rows";
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) log_error("collecting a step's tokens failed: ", error);
  for (size_t r = 0; r < seqs.size(); ++r) {
    Sequence& s = *seqs[r];
    --s.awaiting;
    if (s.finished) {
      ++counters_.wasted_tokens;  // stopped (or cancelled) while this token was drawn
      continue;
    }
    if (!error.empty()) {
      RequestOutput out;
      out.error = error;
      finish(s, FinishReason::kError, "", out);
      s.stream->push(std::move(out));
      continue;
    }
    emit_sampled(s, tokens[r]);
    if (!s.finished) commit_full_blocks(s);
  }
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(), [](const auto& s) { return s->awaiting == 0; }),
                 retired_.end());
}

void Engine::publish_stats() {
  counters_.running = static_cast<int64_t>(running_.size());
  counters_.blocks_used = blocks_->num_used();
  counters_.blocks_cached = blocks_->num_cached();
  counters_.prefix_lookup_tokens = blocks_->stats().lookups_tokens;
  counters_.prefix_hit_tokens = blocks_->stats().hit_tokens;
  std::lock_guard<std::mutex> lock(inbox_mu_);
  stats_ = counters_;
  stats_.waiting = queued_;
}

void Engine::run_until_idle() {
  while (step()) {
  }
}

void Engine::start() {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] {
    while (!stop_) {
      if (step()) continue;
      std::unique_lock<std::mutex> lock(inbox_mu_);
      inbox_cv_.wait(lock, [&] { return stop_ || !inbox_.empty() || !cancels_.empty(); });
    }
  });
}

void Engine::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    stop_ = true;
  }
  inbox_cv_.notify_all();
  thread_.join();
  // The tokens of draws still in flight go to their requests.
  while (!in_flight_.empty()) collect_in_flight();
  remove_finished();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(inbox_mu_);
  return stats_;
}

}  // namespace redhare
