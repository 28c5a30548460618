// Drawing tokens from rows of logits: the parameters of one draw, its result, and the host
// reference every backend's sample_rows() matches.
//
// A draw is a pure function of (logits, parameters, seed, step): penalties first, then greedy
// (temperature <= 0) or a draw from the tempered distribution restricted by top-k, min-p and
// top-p, candidates ordered by logit with ties broken by the smaller id. The random number comes
// from counter_uniform(seed, step), so a sequence's tokens do not depend on what else shares its
// batch, or on which backend draws them.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace redhare {

struct RowSampling {
  float temperature = 0.0f;  // <= 0: greedy (the first largest logit after penalties)
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // over penalty_tokens: logit / p if > 0, else logit * p
  float frequency_penalty = 0.0f;   // logit -= frequency * output_count + presence
  float presence_penalty = 0.0f;    //   for penalty_tokens with output_count > 0
  int32_t logprobs = -1;            // >= 0: the drawn token's logprob under the raw logits + top N
  uint64_t seed = 0;
  uint64_t step = 0;
  // Each distinct token of the sequence so far (prompt and output) once, with how often it
  // occurs among the output tokens. Only read when a penalty is set.
  std::vector<int32_t> penalty_tokens;
  std::vector<int32_t> output_counts;

  bool has_penalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
  // Greedy with nothing that needs more than the row's argmax.
  bool plain_greedy() const { return temperature <= 0.0f && !has_penalties() && logprobs < 0; }
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;                         // with logprobs >= 0
  std::vector<std::pair<int32_t, float>> top;  // the `logprobs` most likely tokens, best first
};

// A uniform double in [0, 1) from (seed, step, stream): a pure function, no state.
double counter_uniform(uint64_t seed, uint64_t step, uint64_t stream);

// The reference draw from one row of `vocab` logits.
SampledToken sample_row_reference(const float* logits, int64_t vocab, const RowSampling& p);

// The logprob of `token` under the distribution of raw `logits`, with the top_n most likely
// (ties: smaller id first).
SampledToken logprob_of(const float* logits, int64_t vocab, int32_t token, int32_t top_n);

// Builds penalty_tokens / output_counts from a sequence's tokens: `history` is the prompt
// followed by the `num_output` tokens generated so far.
void set_penalty_history(RowSampling& p, const std::vector<int32_t>& history, int64_t num_output, int64_t vocab);

}  // namespace redhare
