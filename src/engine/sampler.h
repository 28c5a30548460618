// Turning one row of logits into the next token: penalties, temperature, top-k/top-p/min-p,
// a per-request counter-based random stream, and logprobs of the model's distribution.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/request.h"

namespace redhare {

struct SampleResult {
  int32_t token = 0;
  TokenLogprob logprob;  // filled when params.logprobs >= 0
};

// `history` holds the prompt followed by the tokens generated so far; `num_output` counts the
// latter. `step` is the index of the token being drawn; with `seed` it fixes the random draw, so
// the result does not depend on what else runs in the same batch.
SampleResult sample_token(const float* logits, int64_t vocab, const SamplingParams& params,
                          const std::vector<int32_t>& history, int64_t num_output, uint64_t seed,
                          int64_t step);

// The logprob of `token` under the distribution of raw `logits`, with the top_n most likely.
TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int32_t top_n);

// A uniform double in [0, 1) from (seed, step, stream): a pure function, no state.
double counter_uniform(uint64_t seed, uint64_t step, uint64_t stream);

}  // namespace redhare
