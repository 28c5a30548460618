// What a caller submits to the engine and what comes back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace redhare {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // transformers-style, over prompt and output tokens
  float frequency_penalty = 0.0f;   // OpenAI-style, over output tokens
  float presence_penalty = 0.0f;
  std::optional<uint64_t> seed;     // same request + same seed -> same output, whatever the batch
  int32_t logprobs = -1;            // -1 = none; N >= 0: the sampled token's logprob + top N
  int32_t prompt_logprobs = -1;     // -1 = none; N >= 0: logprob of each prompt token (+ top N)
  int64_t max_tokens = 16;
  int64_t min_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;    // stop strings, matched on the decoded text
  bool include_stop_str_in_output = false;

  // As RowSampling::has_penalties: a draw that reads the sequence's history.
  bool has_penalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
};

struct Request {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int32_t priority = 0;  // smaller runs first (as vLLM's priority scheduling)
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens at this step, best first
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
const char* finish_reason_name(FinishReason r);

struct RequestOutput {
  std::string request_id;
  std::vector<int32_t> token_ids;      // new tokens since the previous output
  std::string text;                    // new text since the previous output (complete UTF-8)
  std::vector<TokenLogprob> logprobs;  // one per new token, when asked for
  // With prompt_logprobs, on the first output only: entry i is prompt token i + 1 given the
  // tokens before it (the first prompt token has none).
  std::vector<TokenLogprob> prompt_logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;             // the stop string or token id that ended it
  std::string error;                   // with kError
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;           // prompt tokens served from the prefix cache
};

}  // namespace redhare
