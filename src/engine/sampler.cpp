#include "engine/sampler.h"

namespace redhare {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
    default: return "";
  }
}

RowSampling row_sampling(const SamplingParams& p, const std::vector<int32_t>& history, int64_t num_output,
                         uint64_t seed, int64_t step, int64_t vocab) {
  RowSampling r;
  r.temperature = p.temperature;
  r.top_k = p.top_k;
  r.top_p = p.top_p;
  r.min_p = p.min_p;
  r.repetition_penalty = p.repetition_penalty;
  r.frequency_penalty = p.frequency_penalty;
  r.presence_penalty = p.presence_penalty;
  r.logprobs = p.logprobs;
  r.seed = seed;
  r.step = static_cast<uint64_t>(step);
  set_penalty_history(r, history, num_output, vocab);
  return r;
}

TokenLogprob to_token_logprob(SampledToken t) {
  TokenLogprob lp;
  lp.token = t.token;
  lp.logprob = t.logprob;
  lp.top = std::move(t.top);
  return lp;
}

SampleResult sample_token(const float* logits, int64_t vocab, const SamplingParams& p,
                          const std::vector<int32_t>& history, int64_t num_output, uint64_t seed,
                          int64_t step) {
  SampledToken t = sample_row_reference(logits, vocab, row_sampling(p, history, num_output, seed, step, vocab));
  SampleResult r;
  r.token = t.token;
  if (p.logprobs >= 0) r.logprob = to_token_logprob(std::move(t));
  return r;
}

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int32_t top_n) {
  return to_token_logprob(logprob_of(logits, vocab, token, top_n));
}

}  // namespace redhare
