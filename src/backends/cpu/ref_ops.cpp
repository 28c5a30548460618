// Reference CPU ops: the definitions the fast ops and every other backend are tested against.
// Plain loops, one thread, sums accumulated in double.
#include <cmath>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"
#include "core/error.h"

namespace redhare::cpu {

void row_to_f32(const Tensor& t, int64_t row, float* dst) {
  int64_t cols = t.shape().back();
  const uint8_t* base = static_cast<const uint8_t*>(t.data()) + dtype_bytes(t.dtype(), row * cols);
  if (is_block_quantized(t.dtype())) dequantize_row_ref(t.dtype(), base, dst, cols);
  else convert_to_f32(t.dtype(), base, dst, cols);
}

void check_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& out) {
  RH_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2, "linear: ", x.str(), " x ", w.str());
  RH_CHECK(x.dtype() == DType::kF32 && out.dtype() == DType::kF32, "linear wants f32 activations");
  RH_CHECK(x.size(1) == w.size(1) && out.size(0) == x.size(0) && out.size(1) == w.size(0),
           "linear: ", x.str(), " @ ", w.str(), "^T -> ", out.str());
  RH_CHECK(!bias || (bias->numel() == w.size(0) && bias->dtype() == DType::kF32), "linear bias");
}

void check_attention(const Tensor& qkv, const KvCacheLayer& cache, const AttentionBatch& batch,
                     const AttentionParams& p, const Tensor& out) {
  int64_t T = batch.num_tokens();
  RH_CHECK(qkv.size(0) == T && qkv.size(1) == (p.num_heads + 2 * p.num_kv_heads) * p.head_dim,
           "attention qkv ", qkv.str());
  RH_CHECK(out.size(0) == T && out.size(1) == p.num_heads * p.head_dim, "attention out ", out.str());
  RH_CHECK(cache.k.dim() == 4 && cache.k.size(2) == p.num_kv_heads && cache.k.size(3) == p.head_dim,
           "kv cache ", cache.k.str());
  RH_CHECK(static_cast<int64_t>(batch.slot_mapping.size()) == T, "slot mapping size");
  RH_CHECK(static_cast<int32_t>(batch.context_lens.size()) == batch.num_seqs, "context lens");
  RH_CHECK(p.num_heads % p.num_kv_heads == 0, "heads");
  int64_t slots = cache.k.size(0) * cache.k.size(1);
  RH_CHECK(cache.v.shape() == cache.k.shape() && cache.v.dtype() == cache.k.dtype(), "kv cache ", cache.k.str(),
           " and ", cache.v.str());
  if (cache.k.dtype() == DType::kF8E4M3) {
    const Shape scales{cache.k.size(0), cache.k.size(1), p.num_kv_heads};
    RH_CHECK(cache.k_scale.dtype() == DType::kF32 && cache.k_scale.shape() == scales &&
                 cache.v_scale.dtype() == DType::kF32 && cache.v_scale.shape() == scales,
             "FP8 kv cache needs f32 scales [blocks, block_size, kv heads], has ", cache.k_scale.str());
  }
  for (int32_t s : batch.slot_mapping) RH_CHECK(s >= 0 && s < slots, "slot ", s, " out of range");
  for (int32_t i = 0; i < batch.num_seqs; ++i) {
    int32_t nq = batch.query_start[i + 1] - batch.query_start[i];
    RH_CHECK(nq >= 0 && batch.context_lens[i] >= nq, "sequence ", i, " context shorter than query");
    RH_CHECK(batch.context_lens[i] <= batch.max_blocks * cache.k.size(1), "block table too short");
  }
}

void store_kv_row(const float* x, Tensor& pool, Tensor& scales, int64_t slot, int64_t Hkv, int64_t D) {
  const DType t = pool.dtype();
  uint8_t* dst = static_cast<uint8_t*>(pool.data()) + dtype_bytes(t, slot * Hkv * D);
  if (t != DType::kF8E4M3) {
    convert_from_f32(x, t, dst, Hkv * D);
    return;
  }
  for (int64_t h = 0; h < Hkv; ++h) store_kv_fp8(x + h * D, D, dst + h * D, scales.data_as<float>() + slot * Hkv + h);
}

void load_kv_head(const Tensor& pool, const Tensor& scales, int64_t slot, int64_t kvh, int64_t Hkv, int64_t D,
                  float* out) {
  const DType t = pool.dtype();
  const uint8_t* src = static_cast<const uint8_t*>(pool.data()) + dtype_bytes(t, (slot * Hkv + kvh) * D);
  if (t == DType::kF8E4M3) load_kv_fp8(src, scales.data_as<float>()[slot * Hkv + kvh], D, out);
  else convert_to_f32(t, src, out, D);
}

namespace ref {

void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  int64_t V = table.size(0);
  for (size_t t = 0; t < ids.size(); ++t) {
    RH_CHECK(ids[t] >= 0 && ids[t] < V, "token id ", ids[t], " out of range");
    row_to_f32(table, ids[t], out.data_as<float>() + t * out.size(1));
  }
}

namespace {
void norm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}
}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  int64_t n = x.size(1);
  for (int64_t r = 0; r < x.size(0); ++r)
    norm_row(x.data_as<float>() + r * n, weight.data_as<float>(), eps, n,
             out.data_as<float>() + r * n);
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                  Tensor& out) {
  add(residual, x);
  rms_norm(residual, weight, eps, out);
}

void head_rms_norm(Tensor& x, int64_t head_offset, int64_t num_heads, const Tensor& weight,
                   float eps) {
  int64_t d = weight.numel(), cols = x.size(1);
  std::vector<float> tmp(static_cast<size_t>(d));
  for (int64_t r = 0; r < x.size(0); ++r)
    for (int64_t h = 0; h < num_heads; ++h) {
      float* p = x.data_as<float>() + r * cols + (head_offset + h) * d;
      norm_row(p, weight.data_as<float>(), eps, d, tmp.data());
      for (int64_t i = 0; i < d; ++i) p[i] = tmp[static_cast<size_t>(i)];
    }
}

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) {
  check_linear(x, w, bias, out);
  int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    row_to_f32(w, n, row.data());
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x.data_as<float>() + m * K;
      double acc = bias ? bias->data_as<float>()[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(xr[k]) * row[static_cast<size_t>(k)];
      out.data_as<float>()[m * N + n] = static_cast<float>(acc);
    }
  }
}

void silu_mul(const Tensor& gate_up, Tensor& out) {
  int64_t I = out.size(1);
  for (int64_t t = 0; t < out.size(0); ++t) {
    const float* g = gate_up.data_as<float>() + t * 2 * I;
    float* o = out.data_as<float>() + t * I;
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * g[I + i];
  }
}

void rope(Tensor& x, int64_t num_heads, int64_t head_dim, const std::vector<int32_t>& positions,
          const Tensor& inv_freq) {
  int64_t half = head_dim / 2, cols = x.size(1);
  const float* f = inv_freq.data_as<float>();
  for (int64_t t = 0; t < x.size(0); ++t)
    for (int64_t h = 0; h < num_heads; ++h) {
      float* p = x.data_as<float>() + t * cols + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        // Angle in f32 as transformers computes it, so long positions round the same way.
        float angle = static_cast<float>(positions[static_cast<size_t>(t)]) * f[i];
        float c = std::cos(angle), s = std::sin(angle);
        float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = b * c + a * s;
      }
    }
}

void add(Tensor& out, const Tensor& x) {
  RH_CHECK(out.numel() == x.numel(), "add: ", out.str(), " + ", x.str());
  float* o = out.data_as<float>();
  const float* a = x.data_as<float>();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] += a[i];
}

void attention(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,
               const AttentionParams& p, Tensor& out) {
  check_attention(qkv, cache, batch, p, out);
  const int64_t D = p.head_dim, H = p.num_heads, Hkv = p.num_kv_heads;
  const int64_t cols = qkv.size(1), bs = cache.k.size(1);
  // Store the new tokens' K and V.
  for (int64_t t = 0; t < batch.num_tokens(); ++t) {
    const float* row = qkv.data_as<float>() + t * cols;
    int64_t slot = batch.slot_mapping[static_cast<size_t>(t)];
    store_kv_row(row + H * D, cache.k, cache.k_scale, slot, Hkv, D);
    store_kv_row(row + (H + Hkv) * D, cache.v, cache.v_scale, slot, Hkv, D);
  }
  std::vector<float> kbuf(static_cast<size_t>(D)), vbuf(static_cast<size_t>(D));
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    int64_t q0 = batch.query_start[s], nq = batch.query_start[s + 1] - q0;
    int64_t ctx = batch.context_lens[s];
    const int32_t* table = batch.block_tables.data() + static_cast<int64_t>(s) * batch.max_blocks;
    for (int64_t i = 0; i < nq; ++i) {
      int64_t pos = ctx - nq + i;  // the query's own position; it sees keys 0..pos
      int64_t first = p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      for (int64_t h = 0; h < H; ++h) {
        int64_t kvh = h / (H / Hkv);
        const float* q = qkv.data_as<float>() + (q0 + i) * cols + h * D;
        std::vector<double> scores;
        for (int64_t j = first; j <= pos; ++j) {
          int64_t slot = table[j / bs] * bs + j % bs;
          load_kv_head(cache.k, cache.k_scale, slot, kvh, Hkv, D, kbuf.data());
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * kbuf[static_cast<size_t>(d)];
          scores.push_back(dot * p.scale);
        }
        double mx = -INFINITY, sum = 0;
        for (double v : scores) mx = std::max(mx, v);
        for (double& v : scores) sum += (v = std::exp(v - mx));
        std::vector<double> acc(static_cast<size_t>(D), 0.0);
        for (int64_t j = first; j <= pos; ++j) {
          int64_t slot = table[j / bs] * bs + j % bs;
          load_kv_head(cache.v, cache.v_scale, slot, kvh, Hkv, D, vbuf.data());
          double wgt = scores[static_cast<size_t>(j - first)] / sum;
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += wgt * vbuf[static_cast<size_t>(d)];
        }
        float* o = out.data_as<float>() + (q0 + i) * H * D + h * D;
        for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(acc[static_cast<size_t>(d)]);
      }
    }
  }
}

}  // namespace ref
}  // namespace redhare::cpu
