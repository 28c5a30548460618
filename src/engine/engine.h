// The engine: continuous batching over one model and one paged KV pool.
//
// One thread owns the model, the KV cache, the block manager and every sequence's state (the
// engine thread, or the caller of run_until_idle()). Other threads talk to it through queues:
// submit() and cancel() enqueue, and each request's outputs arrive on its RequestStream.
//
// Each step the scheduler takes every running decode plus prefill chunks under a token budget
// (so a long prompt never stalls running streams), ordered by priority then arrival; when KV
// blocks run out it preempts the lowest-priority, newest sequence (freeing its blocks; it is
// recomputed later, with identical results). Prefix caching shares the KV of full blocks between
// sequences with the same prefix.
//
// Overlapped decoding: on a backend that runs ahead (Backend::overlaps_draws, the CUDA backend), a
// step whose rows are all sampled on the device leaves its tokens there, and while it runs the
// engine queues the next decode step of the same sequences, whose ids the device reads from that
// draw, before reading the tokens and emitting them. So the host's work of a step (emitting,
// scheduling, staging, launching) hides behind the device's instead of standing between steps. A
// sequence that stops on the token it was waiting for wastes its one queued step, whose token is
// dropped. The engine steps one at a time instead whenever the next step is not that plain decode
// of every running sequence: arrivals to admit, cancels, preemption, penalties (which need the
// previous token on the host), prompt logprobs. Outputs are the same either way.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "engine/block_manager.h"
#include "engine/request.h"
#include "models/model.h"

namespace redhare {

// submit() when the queue is full: the caller should retry later (HTTP 429).
class EngineOverloaded : public Error {
 public:
  using Error::Error;
};

// Turns a growing token stream into text deltas that never split a UTF-8 character.
class TextStream {
 public:
  virtual ~TextStream() = default;
  virtual std::string push(int32_t token) = 0;
  // Text still held back when the sequence ends (e.g. an unfinished byte-fallback run).
  virtual std::string finish() { return {}; }
};
using TextStreamFactory = std::function<std::unique_ptr<TextStream>(const std::vector<int32_t>& prompt)>;

struct EngineConfig {
  int64_t max_running = 64;            // infer.max_reqs
  int64_t max_batched_tokens = 512;    // token budget of one step (prefill chunk size)
  int64_t max_seq_len = 0;             // 0 = the model's max_position_embeddings
  int64_t block_size = 16;
  int64_t num_blocks = 0;              // 0 = derive from the memory budget below
  int64_t kv_cache_bytes = 256ll << 20;  // used when kv_memory_fraction is 0
  double kv_memory_fraction = 0;       // > 0: this fraction of the backend's free memory
  DType kv_dtype = DType::kF32;
  bool enable_prefix_caching = true;
  int64_t max_waiting = 4096;          // submit() refuses more
  std::vector<int32_t> eos_token_ids;
  // Overlapped decoding (above): kAuto where the backend runs ahead.
  enum class Overlap { kAuto, kOn, kOff };
  Overlap overlap = Overlap::kAuto;
};

struct EngineStats {
  int64_t running = 0, waiting = 0;
  int64_t blocks_total = 0, blocks_used = 0, blocks_cached = 0;
  int64_t prefix_lookup_tokens = 0, prefix_hit_tokens = 0;
  int64_t steps = 0, preemptions = 0;
  int64_t overlapped_steps = 0;  // steps queued before the previous step's tokens were read
  int64_t wasted_tokens = 0;     // tokens such steps drew for sequences that had already stopped
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double model_seconds = 0, schedule_seconds = 0;
};

// Outputs of one request, in order. next() blocks until one is ready; after the output with
// finished = true it returns false.
class RequestStream {
 public:
  bool next(RequestOutput* out);
  bool try_next(RequestOutput* out);
  // Like next(), waiting at most `timeout`; kTimeout leaves *out untouched.
  enum class Wait { kOutput, kTimeout, kFinished };
  Wait next_for(RequestOutput* out, std::chrono::milliseconds timeout);
  const std::string& id() const { return id_; }

 private:
  friend class Engine;
  void push(RequestOutput o);
  std::string id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  bool done_ = false;
};

class Engine {
 public:
  Engine(Model& model, Backend& backend, EngineConfig config, TextStreamFactory text = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and enqueues; throws redhare::Error for a request that can never run (empty or
  // too long a prompt, more KV than the pool holds, bad parameters) or when the queue is full.
  std::shared_ptr<RequestStream> submit(Request request);
  // Finishes the request with reason abort and frees its blocks (no-op if unknown or done).
  void cancel(const std::string& request_id);

  // Runs steps on the calling thread until nothing is waiting or running.
  void run_until_idle();
  // Or: a background engine thread.
  void start();
  void stop();

  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  int64_t max_seq_len() const { return config_.max_seq_len; }

 private:
  struct Sequence;
  bool step();  // one scheduling step; false when idle
  bool overlapped_step();   // queues the next decode ahead of the in-flight draw, if it may
  void collect_in_flight();  // the oldest in-flight draw's tokens emitted
  void remove_finished();    // finished sequences out of running_ (retired_ while awaited)
  using Clock = std::chrono::steady_clock;
  // A step's end: finished sequences out, its host time (t0 .. t1 and t2 .. now) and model time
  // (t1 .. t2) counted, the stats published.
  void end_step(Clock::time_point t0, Clock::time_point t1, Clock::time_point t2, bool overlapped);
  void emit_sampled(Sequence& s, SampledToken& t);  // emit_token with the draw's logprobs if asked
  void fail_step(const std::vector<Sequence*>& batch, const std::string& error);  // each ends with the error
  void drain_inbox();
  void schedule(std::vector<Sequence*>& batch, std::vector<int64_t>& chunk);
  bool ensure_blocks(Sequence& s, int64_t tokens_after);
  void preempt(Sequence& s);
  void free_sequence(Sequence& s);
  void admit_prefix(Sequence& s);
  void finish(Sequence& s, FinishReason reason, const std::string& stop_reason, RequestOutput& out);
  void emit_token(Sequence& s, int32_t token, const TokenLogprob* lp);
  void commit_full_blocks(Sequence& s);
  void publish_stats();

  Model& model_;
  Backend& backend_;
  EngineConfig config_;
  TextStreamFactory text_factory_;
  KvCache kv_;
  std::unique_ptr<BlockManager> blocks_;

  // Owned by the engine thread.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<std::unique_ptr<Sequence>> waiting_;
  uint64_t arrival_counter_ = 0;
  bool overlap_ = false;
  // Steps whose draws are not yet collected, oldest first: the sequences of each draw's rows.
  std::deque<std::vector<Sequence*>> in_flight_;
  // Finished sequences an uncollected draw still names, kept until it is collected.
  std::vector<std::unique_ptr<Sequence>> retired_;

  // Shared with other threads.
  mutable std::mutex inbox_mu_;
  std::condition_variable inbox_cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<std::string> cancels_;
  int64_t queued_ = 0;  // inbox + waiting, for max_waiting
  EngineStats counters_;  // engine thread's own
  EngineStats stats_;     // snapshot of counters_ taken at the end of each step, under inbox_mu_
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace redhare
