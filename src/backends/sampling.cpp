#include "backends/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "core/error.h"

namespace redhare {

double counter_uniform(uint64_t seed, uint64_t step, uint64_t stream) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + step * 0xd1b54a32d192ed03ull + stream * 0x8cb92ba72f3d8dd7ull;
  for (int i = 0; i < 2; ++i) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
  }
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

void set_penalty_history(RowSampling& p, const std::vector<int32_t>& history, int64_t num_output, int64_t vocab) {
  p.penalty_tokens.clear();
  p.output_counts.clear();
  if (!p.has_penalties()) return;
  RH_CHECK(num_output >= 0 && static_cast<size_t>(num_output) <= history.size(), "sampling history: ", num_output,
           " outputs among ", history.size(), " tokens");
  std::unordered_map<int32_t, size_t> at;
  const size_t first_output = history.size() - static_cast<size_t>(num_output);
  for (size_t i = 0; i < history.size(); ++i) {
    const int32_t t = history[i];
    if (t < 0 || t >= vocab) continue;
    auto [it, fresh] = at.emplace(t, p.penalty_tokens.size());
    if (fresh) {
      p.penalty_tokens.push_back(t);
      p.output_counts.push_back(0);
    }
    if (i >= first_output) ++p.output_counts[it->second];
  }
}

SampledToken logprob_of(const float* logits, int64_t vocab, int32_t token, int32_t top_n) {
  // Logprobs of the model's own distribution (raw logits), as OpenAI and vLLM report them.
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  SampledToken out;
  out.token = token;
  out.logprob = logits[token] - lse;
  if (top_n <= 0) return out;
  const int64_t n = std::min<int64_t>(top_n, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t i = 0; i < n; ++i) out.top.emplace_back(idx[static_cast<size_t>(i)], logits[idx[static_cast<size_t>(i)]] - lse);
  return out;
}

SampledToken sample_row_reference(const float* raw, int64_t vocab, const RowSampling& p) {
  RH_CHECK(p.penalty_tokens.size() == p.output_counts.size(), "sampling: penalty lists differ in length");
  std::vector<float> logits(raw, raw + vocab);
  for (size_t j = 0; j < p.penalty_tokens.size(); ++j) {
    const int32_t t = p.penalty_tokens[j];
    RH_CHECK(t >= 0 && t < vocab, "sampling: penalty token ", t, " outside the vocabulary");
    float& x = logits[static_cast<size_t>(t)];
    if (p.repetition_penalty != 1.0f) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    if (p.output_counts[j] > 0 && (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f))
      x -= p.frequency_penalty * static_cast<float>(p.output_counts[j]) + p.presence_penalty;
  }
  int32_t token = 0;
  if (p.temperature <= 0.0f) {
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
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
    const double u = counter_uniform(p.seed, p.step, 0) * total;
    // The first candidate whose cumulative mass passes u.
    size_t pick = n - 1;
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i];
      if (cum > u) {
        pick = i;
        break;
      }
    }
    token = idx[pick];
  }
  if (p.logprobs >= 0) return logprob_of(raw, vocab, token, p.logprobs);
  SampledToken r;
  r.token = token;
  return r;
}

}  // namespace redhare
