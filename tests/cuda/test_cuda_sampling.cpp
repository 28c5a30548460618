// Sampling on the GPU (CudaBackend::sample_rows) against the host reference
// (sample_row_reference): the same tokens for every mix of greedy, temperature, top-k, top-p,
// min-p and penalties, the same logprobs and top logprobs, ties broken by the smaller id, and rows
// spread over several of the backend's groups.
#include <cmath>
#include <vector>

#include "cuda_test_util.h"

namespace redhare::cuda_test {
namespace {

Tensor random_logits(int64_t rows, int64_t V, float scale, bool ties) {
  Tensor t = random_tensor(DType::kF32, {rows, V}, scale);
  // Ties: a handful of distinct values, so orders hinge on the smaller-id rule.
  if (ties)
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = std::round(t.data_as<float>()[i]);
  return t;
}

// A sequence of `len` tokens, the last `outputs` of them generated, with repeats.
RowSampling with_history(RowSampling p, int64_t V, int64_t len, int64_t outputs) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(std::min<int64_t>(V, 64) - 1));
  std::vector<int32_t> history;
  for (int64_t i = 0; i < len; ++i) history.push_back(d(rng()));
  set_penalty_history(p, history, outputs, V);
  return p;
}

// The parameter mixes every test draws with.
std::vector<RowSampling> mixes(int64_t V) {
  std::vector<RowSampling> m;
  auto add = [&](float t, int32_t k, float top_p, float min_p, int32_t lp) {
    RowSampling p;
    p.temperature = t;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.logprobs = lp;
    m.push_back(p);
  };
  add(0.0f, 0, 1.0f, 0.0f, -1);   // plain greedy
  add(0.0f, 0, 1.0f, 0.0f, 5);    // greedy with top logprobs
  add(0.7f, 0, 1.0f, 0.0f, -1);   // temperature alone, the whole vocabulary
  add(1.0f, 40, 1.0f, 0.0f, 0);   // top-k, the drawn token's logprob only
  add(1.0f, 0, 0.9f, 0.0f, -1);   // top-p
  add(1.3f, 0, 1.0f, 0.05f, -1);  // min-p
  add(0.8f, 50, 0.8f, 0.02f, 3);  // all three
  add(1.0f, 1, 1.0f, 0.0f, -1);   // top-k 1 is greedy
  add(1.0f, static_cast<int32_t>(V + 5), 1.0f, 0.0f, -1);  // top-k beyond the vocabulary: off
  add(2.0f, 0, 0.01f, 0.0f, 20);  // top-p so small only the first candidate stays
  // Penalties, greedy and drawn.
  RowSampling rep;
  rep.repetition_penalty = 1.3f;
  m.push_back(with_history(rep, V, 40, 10));
  RowSampling freq;
  freq.temperature = 0.9f;
  freq.top_p = 0.95f;
  freq.frequency_penalty = 0.7f;
  freq.presence_penalty = 0.4f;
  freq.logprobs = 4;
  m.push_back(with_history(freq, V, 60, 30));
  RowSampling all;
  all.temperature = 1.1f;
  all.top_k = 100;
  all.repetition_penalty = 0.8f;
  all.frequency_penalty = -0.5f;
  all.presence_penalty = 1.0f;
  m.push_back(with_history(all, V, 30, 30));
  return m;
}

void expect_same(const SampledToken& gpu, const SampledToken& ref, const RowSampling& p, const std::string& what) {
  EXPECT_EQ(gpu.token, ref.token) << what;
  if (p.logprobs < 0) {
    EXPECT_TRUE(gpu.top.empty()) << what;
    return;
  }
  EXPECT_NEAR(gpu.logprob, ref.logprob, 1e-4) << what;
  ASSERT_EQ(gpu.top.size(), ref.top.size()) << what;
  for (size_t j = 0; j < ref.top.size(); ++j) {
    EXPECT_EQ(gpu.top[j].first, ref.top[j].first) << what << " top " << j;
    EXPECT_NEAR(gpu.top[j].second, ref.top[j].second, 1e-4) << what << " top " << j;
  }
}

class CudaSampling : public CudaTest {
 protected:
  // Draws `rows` over steps with new seeds and compares every row with the reference.
  void check(const Tensor& host_logits, std::vector<RowSampling> rows, int draws, const std::string& what) {
    const int64_t V = host_logits.size(1);
    Tensor dev = gpu->upload(host_logits);
    for (int d = 0; d < draws; ++d) {
      for (size_t r = 0; r < rows.size(); ++r) {
        rows[r].seed = 1000 + r;
        rows[r].step = static_cast<uint64_t>(d);
      }
      const std::vector<SampledToken> got = gpu->sample_rows(dev, rows);
      ASSERT_EQ(got.size(), rows.size());
      for (size_t r = 0; r < rows.size(); ++r) {
        const SampledToken ref =
            sample_row_reference(host_logits.data_as<float>() + static_cast<int64_t>(r) * V, V, rows[r]);
        expect_same(got[r], ref, rows[r], what + " V=" + std::to_string(V) + " row " + std::to_string(r) + " draw " +
                                              std::to_string(d));
      }
    }
  }
};

TEST_F(CudaSampling, MatchesReferenceAtVocabularySizes) {
  for (int64_t V : {7, 1000, 32001, 151936}) {
    const std::vector<RowSampling> m = mixes(V);
    check(random_logits(static_cast<int64_t>(m.size()), V, 3.0f, false), m, V > 100000 ? 3 : 8, "random");
  }
}

TEST_F(CudaSampling, TiesGoToTheSmallerId) {
  for (int64_t V : {50, 4099}) {
    const std::vector<RowSampling> m = mixes(V);
    check(random_logits(static_cast<int64_t>(m.size()), V, 1.5f, true), m, 8, "ties");
  }
}

TEST_F(CudaSampling, GreedyRowsTakeTheFirstLargestLogit) {
  // Every row plain greedy: the argmax kernel alone, over several blocks per row for large
  // vocabularies (a candidate per block, reduced by the row's last block). Ties within and across
  // those blocks go to the smaller id; the largest at the first and last ids; unaligned rows.
  for (int64_t V : {7, 1000, 4099, 32001, 128256, 151936}) {
    for (int64_t R : {1, 5, 70}) {
      Tensor host = random_logits(R, V, 2.0f, V == 4099);
      for (int64_t r = 0; r < R; ++r) {
        float* row = host.data_as<float>() + r * V;
        if (r % 5 == 1) row[V - 1] = 100.0f;
        if (r % 5 == 2) row[0] = 100.0f;
        if (r % 5 == 3) row[V / 3] = row[V - 2] = row[2 * V / 3] = 100.0f;  // a tie across blocks
      }
      check(host, std::vector<RowSampling>(static_cast<size_t>(R)), 2, "greedy R=" + std::to_string(R));
    }
  }
}

TEST_F(CudaSampling, SharpAndFlatDistributions) {
  // Scale 30: nearly one-hot rows; scale 0.01: nearly uniform, so top-p keeps most of the row.
  for (float scale : {30.0f, 0.01f}) {
    const std::vector<RowSampling> m = mixes(2048);
    check(random_logits(static_cast<int64_t>(m.size()), 2048, scale, false), m, 6, "scale " + std::to_string(scale));
  }
}

TEST_F(CudaSampling, ManyRowsAcrossGroupsAndExtraLogitRows) {
  const int64_t V = 3001;
  const std::vector<RowSampling> m = mixes(V);
  std::vector<RowSampling> rows;
  for (int i = 0; i < 77; ++i) rows.push_back(m[static_cast<size_t>(i) % m.size()]);
  // The logits hold more rows than are sampled (prompt-logprob rows follow the sampled ones).
  Tensor host = random_logits(80, V, 2.0f, false);
  check(host, rows, 3, "many rows");
}

TEST_F(CudaSampling, DrawsFollowTheDistribution) {
  // A four-token row: frequencies over 4000 draws near the softmax at temperature 1.
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f};
  Tensor host = Tensor::from_f32(l, {1, 4});
  Tensor dev = gpu->upload(host);
  std::vector<int> counts(4, 0);
  RowSampling p;
  p.temperature = 1.0f;
  p.seed = 77;
  const int n = 4000;
  for (int s = 0; s < n; ++s) {
    p.step = static_cast<uint64_t>(s);
    ++counts[static_cast<size_t>(gpu->sample_rows(dev, {p})[0].token)];
  }
  double z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x));
  for (size_t i = 0; i < l.size(); ++i) {
    const double expect = std::exp(static_cast<double>(l[i])) / z;
    // Five standard deviations of a binomial count.
    EXPECT_NEAR(counts[i] / static_cast<double>(n), expect, 5 * std::sqrt(expect * (1 - expect) / n)) << i;
  }
}

TEST_F(CudaSampling, RejectsBadInput) {
  Tensor dev = gpu->upload(random_logits(2, 100, 1.0f, false));
  RowSampling p;
  p.repetition_penalty = 1.2f;
  p.penalty_tokens = {100};
  p.output_counts = {1};
  EXPECT_ANY_THROW(gpu->sample_rows(dev, {p}));
  EXPECT_ANY_THROW(gpu->sample_rows(dev, {RowSampling{}, RowSampling{}, RowSampling{}}));
  RowSampling nan_t;
  nan_t.temperature = NAN;
  EXPECT_ANY_THROW(gpu->sample_rows(dev, {nan_t}));
  EXPECT_TRUE(gpu->sample_rows(dev, {}).empty());
}

}  // namespace
}  // namespace redhare::cuda_test
