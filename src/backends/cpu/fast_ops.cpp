// Fast CPU ops: threaded over rows / heads with the global thread pool; the matrix kernel is
// vectorized per instruction set (linear_kernel.inl). Each has a reference twin in ref_ops.cpp.
#include <algorithm>
#include <atomic>
#include <string>
#include <cmath>
#include <vector>

#include "backends/cpu/linear_kernels.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace redhare::cpu {

void linear_range_scalar(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                         int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch) {
  static const DType kTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
  DType t = kTypes[wtype];
  for (int64_t n = n0; n < n1; ++n) {
    convert_to_f32(t, static_cast<const uint8_t*>(w) + dtype_bytes(t, n * K), scratch, K);
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += x[m * K + k] * scratch[k];
      y[m * N + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

LinearRangeFn select_linear_kernel(const char** name) {
  static const char* chosen = nullptr;
  static LinearRangeFn fn = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      chosen = "avx512";
      return &linear_range_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      chosen = "avx2";
      return &linear_range_avx2;
    }
    chosen = "scalar";
    return &linear_range_scalar;
  }();
  if (name) *name = chosen;
  return fn;
}

void linear_range_block_scalar(int, int64_t row_bytes, DequantRowFn fallback, const void* w, const float* x,
                               int64_t M, int64_t K, float* y, int64_t N, const float* bias, int64_t n0,
                               int64_t n1, float* scratch) {
  for (int64_t n = n0; n < n1; ++n) {
    fallback(static_cast<const uint8_t*>(w) + n * row_bytes, scratch, K);
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += x[m * K + k] * scratch[k];
      y[m * N + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

LinearBlockFn select_linear_block_kernel() {
  const char* isa = nullptr;
  select_linear_kernel(&isa);
  if (std::string(isa) == "avx512") return &linear_range_block_avx512;
  if (std::string(isa) == "avx2") return &linear_range_block_avx2;
  return &linear_range_block_scalar;
}

namespace {
std::atomic<bool> g_int8_activations{false};

template <DType T>
void dequant_fallback(const void* src, float* dst, int64_t n) {
  dequantize_row_ref(T, src, dst, n);
}

DequantRowFn dequant_fallback_for(DType t) {
  switch (t) {
    case DType::kQ8_0: return &dequant_fallback<DType::kQ8_0>;
    case DType::kQ4_0: return &dequant_fallback<DType::kQ4_0>;
    case DType::kQ4_1: return &dequant_fallback<DType::kQ4_1>;
    case DType::kQ5_0: return &dequant_fallback<DType::kQ5_0>;
    case DType::kQ5_1: return &dequant_fallback<DType::kQ5_1>;
    case DType::kQ4_K: return &dequant_fallback<DType::kQ4_K>;
    case DType::kQ5_K: return &dequant_fallback<DType::kQ5_K>;
    case DType::kQ6_K: return &dequant_fallback<DType::kQ6_K>;
    case DType::kF8B128: return &dequant_fallback<DType::kF8B128>;
    default: fail("the CPU matrix kernel does not take ", dtype_name(t), " weights");
  }
}

int quant_code(DType t) {
  switch (t) {
    case DType::kQ8_0: return kQuantQ8_0;
    case DType::kQ4_0: return kQuantQ4_0;
    case DType::kQ4_1: return kQuantQ4_1;
    case DType::kQ4_K: return kQuantQ4_K;
    default: return kQuantOther;
  }
}
}  // namespace

namespace fast {

namespace {
ThreadPool& pool() { return ThreadPool::global(); }

void norm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i] * x[i];
    s1 += x[i + 1] * x[i + 1];
    s2 += x[i + 2] * x[i + 2];
    s3 += x[i + 3] * x[i + 3];
  }
  for (; i < n; ++i) s0 += x[i] * x[i];
  float inv = 1.0f / std::sqrt((s0 + s1 + s2 + s3) / static_cast<float>(n) + eps);
  for (i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

int weight_type_code(DType t) {
  switch (t) {
    case DType::kF32: return 0;
    case DType::kBF16: return 1;
    case DType::kF16: return 2;
    default: fail("the CPU matrix kernel does not take ", dtype_name(t), " weights");
  }
}
}  // namespace

void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  ref::embedding(table, ids, out);  // one row copy per token: nothing to gain from threads
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  int64_t n = x.size(1);
  pool().parallel_for(x.size(0), 1, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      norm_row(x.data_as<float>() + r * n, weight.data_as<float>(), eps, n,
               out.data_as<float>() + r * n);
  });
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                  Tensor& out) {
  int64_t n = x.size(1);
  pool().parallel_for(x.size(0), 1, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* res = residual.data_as<float>() + r * n;
      const float* a = x.data_as<float>() + r * n;
      for (int64_t i = 0; i < n; ++i) res[i] += a[i];
      norm_row(res, weight.data_as<float>(), eps, n, out.data_as<float>() + r * n);
    }
  });
}

void head_rms_norm(Tensor& x, int64_t head_offset, int64_t num_heads, const Tensor& weight,
                   float eps) {
  int64_t d = weight.numel(), cols = x.size(1);
  pool().parallel_for(x.size(0) * num_heads, 8, [&](int, int64_t i0, int64_t i1) {
    std::vector<float> tmp(static_cast<size_t>(d));
    for (int64_t i = i0; i < i1; ++i) {
      float* p = x.data_as<float>() + (i / num_heads) * cols + (head_offset + i % num_heads) * d;
      norm_row(p, weight.data_as<float>(), eps, d, tmp.data());
      std::copy(tmp.begin(), tmp.end(), p);
    }
  });
}

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) {
  check_linear(x, w, bias, out);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  if (is_block_quantized(w.dtype())) {
    // (GGUF types only: FP8 weights keep f32 activations, W8A16.)
    if (g_int8_activations.load(std::memory_order_relaxed) && w.dtype() != DType::kF8B128) {
      // Opt-in: activations quantized to 8 bits and integer dot products on the packed blocks
      // (faster prefill; logits drift from the f32 result by a few tenths on deep models).
      quant_matmul(w.dtype(), w.data(), N, K, x.data_as<float>(), M, out.data_as<float>());
      if (bias)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) out.data_as<float>()[m * N + n] += bias->data_as<float>()[n];
      return;
    }
    const LinearBlockFn bfn = select_linear_block_kernel();
    const DequantRowFn fb = dequant_fallback_for(w.dtype());
    const int qc = quant_code(w.dtype());
    const int64_t row_bytes = dtype_bytes(w.dtype(), K);
    const float* bb = bias ? bias->data_as<float>() : nullptr;
    pool().parallel_for(N, 16, [&](int, int64_t n0, int64_t n1) {
      thread_local std::vector<float> scratch;
      if (scratch.size() < static_cast<size_t>(4 * K)) scratch.resize(static_cast<size_t>(4 * K));
      bfn(qc, row_bytes, fb, w.data(), x.data_as<float>(), M, K, out.data_as<float>(), N, bb, n0, n1, scratch.data());
    });
    return;
  }
  const int wt = weight_type_code(w.dtype());
  LinearRangeFn fn = select_linear_kernel();
  const float* b = bias ? bias->data_as<float>() : nullptr;
  // Rows go to threads in multiples of 16 so tiles of 4 rows never straddle two threads.
  pool().parallel_for(N, 16, [&](int, int64_t n0, int64_t n1) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < static_cast<size_t>(4 * K)) scratch.resize(static_cast<size_t>(4 * K));
    fn(wt, w.data(), x.data_as<float>(), M, K, out.data_as<float>(), N, b, n0, n1, scratch.data());
  });
}

void silu_mul(const Tensor& gate_up, Tensor& out) {
  int64_t I = out.size(1);
  pool().parallel_for(out.size(0) * I, 4096, [&](int, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t t = i / I, c = i % I;
      float g = gate_up.data_as<float>()[t * 2 * I + c];
      float u = gate_up.data_as<float>()[t * 2 * I + I + c];
      out.data_as<float>()[i] = g / (1.0f + std::exp(-g)) * u;
    }
  });
}

void rope(Tensor& x, int64_t num_heads, int64_t head_dim, const std::vector<int32_t>& positions,
          const Tensor& inv_freq) {
  int64_t half = head_dim / 2, cols = x.size(1);
  const float* f = inv_freq.data_as<float>();
  pool().parallel_for(x.size(0), 1, [&](int, int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(2 * half));
    for (int64_t t = t0; t < t1; ++t) {
      float pos = static_cast<float>(positions[static_cast<size_t>(t)]);
      for (int64_t i = 0; i < half; ++i) {
        float angle = pos * f[i];
        cs[static_cast<size_t>(i)] = std::cos(angle);
        cs[static_cast<size_t>(half + i)] = std::sin(angle);
      }
      for (int64_t h = 0; h < num_heads; ++h) {
        float* p = x.data_as<float>() + t * cols + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          float c = cs[static_cast<size_t>(i)], s = cs[static_cast<size_t>(half + i)];
          float a = p[i], b = p[i + half];
          p[i] = a * c - b * s;
          p[i + half] = b * c + a * s;
        }
      }
    }
  });
}

void add(Tensor& out, const Tensor& x) {
  RH_CHECK(out.numel() == x.numel(), "add: ", out.str(), " + ", x.str());
  pool().parallel_for(out.numel(), 1 << 14, [&](int, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out.data_as<float>()[i] += x.data_as<float>()[i];
  });
}

void attention(const Tensor& qkv, KvCacheLayer& cache, const AttentionBatch& batch,
               const AttentionParams& p, Tensor& out) {
  check_attention(qkv, cache, batch, p, out);
  const int64_t D = p.head_dim, H = p.num_heads, Hkv = p.num_kv_heads, G = H / Hkv;
  const int64_t cols = qkv.size(1), bs = cache.k.size(1), slot_elems = Hkv * D;
  const DType kt = cache.k.dtype();
  auto kv_ptr = [&](const Tensor& pool_t, int64_t slot, int64_t kvh) {
    return static_cast<const uint8_t*>(pool_t.data()) + dtype_bytes(kt, slot * slot_elems + kvh * D);
  };
  const int64_t T = batch.num_tokens();
  pool().parallel_for(T, 4, [&](int, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = qkv.data_as<float>() + t * cols;
      int64_t slot = batch.slot_mapping[static_cast<size_t>(t)];
      store_kv_row(row + H * D, cache.k, cache.k_scale, slot, Hkv, D);
      store_kv_row(row + (H + Hkv) * D, cache.v, cache.v_scale, slot, Hkv, D);
    }
  });
  // One work item per (token, kv head): the G query heads sharing that kv head read each cached
  // K/V row once.
  pool().parallel_for(T * Hkv, 1, [&](int, int64_t i0, int64_t i1) {
    std::vector<float> scores, kbuf(static_cast<size_t>(D)), acc(static_cast<size_t>(G * D));
    const bool f32_cache = kt == DType::kF32;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t t = item / Hkv, kvh = item % Hkv;
      // Find the token's sequence (few sequences per step: a linear scan is cheapest).
      int32_t s = 0;
      while (batch.query_start[s + 1] <= t) ++s;
      const int64_t nq = batch.query_start[s + 1] - batch.query_start[s];
      const int64_t pos = batch.context_lens[s] - nq + (t - batch.query_start[s]);
      const int64_t first = p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      const int64_t n = pos - first + 1;
      const int32_t* table = batch.block_tables.data() + static_cast<int64_t>(s) * batch.max_blocks;
      scores.assign(static_cast<size_t>(G * n), 0.0f);
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / bs] * bs + j % bs;
        const float* k;
        if (f32_cache) {
          k = reinterpret_cast<const float*>(kv_ptr(cache.k, slot, kvh));
        } else {
          load_kv_head(cache.k, cache.k_scale, slot, kvh, Hkv, D, kbuf.data());
          k = kbuf.data();
        }
        for (int64_t g = 0; g < G; ++g) {
          const float* q = qkv.data_as<float>() + t * cols + (kvh * G + g) * D;
          float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
          int64_t d = 0;
          for (; d + 4 <= D; d += 4) {
            d0 += q[d] * k[d];
            d1 += q[d + 1] * k[d + 1];
            d2 += q[d + 2] * k[d + 2];
            d3 += q[d + 3] * k[d + 3];
          }
          for (; d < D; ++d) d0 += q[d] * k[d];
          scores[static_cast<size_t>(g * n + j - first)] = (d0 + d1 + d2 + d3) * p.scale;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* sc = scores.data() + g * n;
        float mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[j]);
        for (int64_t j = 0; j < n; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) sc[j] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = table[j / bs] * bs + j % bs;
        const float* v;
        if (f32_cache) {
          v = reinterpret_cast<const float*>(kv_ptr(cache.v, slot, kvh));
        } else {
          load_kv_head(cache.v, cache.v_scale, slot, kvh, Hkv, D, kbuf.data());
          v = kbuf.data();
        }
        for (int64_t g = 0; g < G; ++g) {
          float wgt = scores[static_cast<size_t>(g * n + j - first)];
          float* a = acc.data() + g * D;
          for (int64_t d = 0; d < D; ++d) a[d] += wgt * v[d];
        }
      }
      for (int64_t g = 0; g < G; ++g)
        std::copy(acc.begin() + g * D, acc.begin() + (g + 1) * D,
                  out.data_as<float>() + t * H * D + (kvh * G + g) * D);
    }
  });
}

}  // namespace fast

void set_int8_activations(bool on) { g_int8_activations.store(on); }

}  // namespace redhare::cpu

namespace redhare {
void set_cpu_int8_activations(bool on) { cpu::set_int8_activations(on); }
}  // namespace redhare
