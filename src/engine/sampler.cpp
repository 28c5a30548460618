#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

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

double counter_uniform(uint64_t seed, uint64_t step, uint64_t stream) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + step * 0xd1b54a32d192ed03ull + stream * 0x8cb92ba72f3d8dd7ull;
  for (int i = 0; i < 2; ++i) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
  }
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

namespace {

void fill_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_n, TokenLogprob* out) {
  // Logprobs of the model's own distribution (raw logits), as OpenAI and vLLM report them.
  float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  out->token = token;
  out->logprob = logits[token] - lse;
  out->top.clear();
  if (top_n <= 0) return;
  const int64_t n = std::min<int64_t>(top_n, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t i = 0; i < n; ++i) out->top.emplace_back(idx[static_cast<size_t>(i)], logits[idx[static_cast<size_t>(i)]] - lse);
}

}  // namespace

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int32_t top_n) {
  TokenLogprob lp;
  fill_logprobs(logits, vocab, token, top_n, &lp);
  return lp;
}

SampleResult sample_token(const float* raw, int64_t vocab, const SamplingParams& p,
                          const std::vector<int32_t>& history, int64_t num_output, uint64_t seed,
                          int64_t step) {
  std::vector<float> logits(raw, raw + vocab);
  // Penalties.
  if (p.repetition_penalty != 1.0f) {
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int32_t t : history)
      if (t >= 0 && t < vocab) seen[static_cast<size_t>(t)] = true;
    for (int64_t i = 0; i < vocab; ++i)
      if (seen[static_cast<size_t>(i)])
        logits[static_cast<size_t>(i)] = logits[static_cast<size_t>(i)] > 0
                                             ? logits[static_cast<size_t>(i)] / p.repetition_penalty
                                             : logits[static_cast<size_t>(i)] * p.repetition_penalty;
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    std::unordered_map<int32_t, int32_t> counts;
    for (size_t i = history.size() - static_cast<size_t>(num_output); i < history.size(); ++i) ++counts[history[i]];
    for (const auto& [t, c] : counts)
      if (t >= 0 && t < vocab)
        logits[static_cast<size_t>(t)] -= p.frequency_penalty * static_cast<float>(c) + p.presence_penalty;
  }
  SampleResult r;
  if (p.temperature <= 0.0f) {
    r.token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    // Candidates sorted by logit (ties by id, so the order is deterministic).
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    int64_t keep = vocab;
    if (p.top_k > 0 && p.top_k < vocab) keep = p.top_k;
    auto by_logit = [&](int32_t a, int32_t b) {
      return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
             (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
    };
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
    idx.resize(static_cast<size_t>(keep));
    const double inv_t = 1.0 / p.temperature;
    const double mx = logits[static_cast<size_t>(idx[0])];
    std::vector<double> prob(idx.size());
    double sum = 0;
    for (size_t i = 0; i < idx.size(); ++i) sum += (prob[i] = std::exp((logits[static_cast<size_t>(idx[i])] - mx) * inv_t));
    for (double& v : prob) v /= sum;
    size_t n = idx.size();
    if (p.min_p > 0.0f) {
      // Keep tokens at least min_p times as likely as the most likely one.
      const double floor = p.min_p * prob[0];
      size_t m = 1;
      while (m < n && prob[m] >= floor) ++m;
      n = m;
    }
    if (p.top_p < 1.0f) {
      // The smallest prefix whose mass reaches top_p (the token that crosses it is kept).
      double cum = 0;
      size_t m = 0;
      while (m < n) {
        cum += prob[m++];
        if (cum >= p.top_p) break;
      }
      n = std::max<size_t>(m, 1);
    }
    double total = 0;
    for (size_t i = 0; i < n; ++i) total += prob[i];
    double u = counter_uniform(seed, static_cast<uint64_t>(step), 0) * total;
    size_t pick = n - 1;
    for (size_t i = 0; i < n; ++i) {
      u -= prob[i];
      if (u < 0) {
        pick = i;
        break;
      }
    }
    r.token = idx[pick];
  }
  if (p.logprobs >= 0) fill_logprobs(raw, vocab, r.token, p.logprobs, &r.logprob);
  return r;
}

}  // namespace redhare
