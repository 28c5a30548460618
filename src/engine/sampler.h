// Turning rows of logits into next tokens: a request's SamplingParams become the backend's
// RowSampling (penalties, temperature, top-k/top-p/min-p, a per-request counter-based random
// stream, logprobs of the model's distribution); backends/sampling.h holds the draw itself.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/sampling.h"
#include "engine/request.h"

namespace redhare {

struct SampleResult {
  int32_t token = 0;
  TokenLogprob logprob;  // filled when params.logprobs >= 0
};

// The draw for a sequence: `history` holds the prompt followed by the tokens generated so far;
// `num_output` counts the latter. `step` is the index of the token being drawn; with `seed` it
// fixes the random draw, so the result does not depend on what else runs in the same batch.
RowSampling row_sampling(const SamplingParams& params, const std::vector<int32_t>& history, int64_t num_output,
                         uint64_t seed, int64_t step, int64_t vocab);

// One draw on the host (the reference): row_sampling() then sample_row_reference().
SampleResult sample_token(const float* logits, int64_t vocab, const SamplingParams& params,
                          const std::vector<int32_t>& history, int64_t num_output, uint64_t seed,
                          int64_t step);

// The logprob of `token` under the distribution of raw `logits`, with the top_n most likely.
TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int32_t top_n);

TokenLogprob to_token_logprob(SampledToken t);

}  // namespace redhare
