// Every fast CPU op against its reference on odd sizes, fresh random inputs, poisoned outputs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/linear_kernels.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"

namespace redhare {
namespace {

std::mt19937& rng() {
  static std::mt19937 r(1234);
  return r;
}

Tensor random_tensor(DType dt, Shape shape, float scale = 1.0f) {
  Tensor f = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < f.numel(); ++i) f.data_as<float>()[i] = d(rng());
  if (dt == DType::kF32) return f;
  Tensor t = Tensor::empty(dt, shape);
  convert_from_f32(f.data_as<float>(), dt, t.data(), f.numel());
  return t;
}

Tensor poisoned(Shape shape) {
  Tensor t = Tensor::empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = NAN;
  return t;
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.dtype(), t.shape());
  std::memcpy(c.data(), t.data(), static_cast<size_t>(t.nbytes()));
  return c;
}

// ‖a − b‖ / ‖b‖, with NaN (an unwritten output) never passing.
double rel_error(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    double x = a.data_as<float>()[i], y = b.data_as<float>()[i];
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct LinearCase {
  DType wtype;
  int64_t M, N, K;
  bool bias;
};

class LinearOp : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearOp, FastMatchesReference) {
  const LinearCase c = GetParam();
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor w = random_tensor(c.wtype, {c.N, c.K}, 0.1f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor ref = poisoned({c.M, c.N}), fast = poisoned({c.M, c.N});
  cpu::ref::linear(x, w, c.bias ? &b : nullptr, ref);
  cpu::fast::linear(x, w, c.bias ? &b : nullptr, fast);
  // f32 accumulation over K terms against a double reference.
  EXPECT_LT(rel_error(fast, ref), 1e-5);
}

std::vector<LinearCase> linear_cases() {
  std::vector<LinearCase> v;
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16})
    for (int64_t M : {1, 2, 3, 4, 5, 9, 17})
      for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 13}, {37, 67}, {130, 257}, {64, 512}})
        v.push_back({t, M, N, K, (M + N) % 2 == 0});
  return v;
}

INSTANTIATE_TEST_SUITE_P(OddSizes, LinearOp, ::testing::ValuesIn(linear_cases()));

TEST(LinearKernels, EveryIsaThisCpuRunsAgreesWithScalar) {
  const char* best = nullptr;
  cpu::select_linear_kernel(&best);
  std::vector<cpu::LinearRangeFn> fns = {&cpu::linear_range_scalar};
  if (std::string(best) == "avx512" || std::string(best) == "avx2") fns.push_back(&cpu::linear_range_avx2);
  if (std::string(best) == "avx512") fns.push_back(&cpu::linear_range_avx512);
  const int64_t M = 6, N = 29, K = 83;
  Tensor x = random_tensor(DType::kF32, {M, K});
  for (int wt = 0; wt < 3; ++wt) {
    DType dt = wt == 0 ? DType::kF32 : wt == 1 ? DType::kBF16 : DType::kF16;
    Tensor w = random_tensor(dt, {N, K});
    Tensor ref = poisoned({M, N});
    cpu::ref::linear(x, w, nullptr, ref);
    for (auto fn : fns) {
      Tensor y = poisoned({M, N});
      std::vector<float> scratch(4 * K);
      fn(wt, w.data(), x.data_as<float>(), M, K, y.data_as<float>(), N, nullptr, 0, N, scratch.data());
      EXPECT_LT(rel_error(y, ref), 1e-5) << "weight type " << wt;
    }
  }
}

TEST(NormOps, FastMatchesReference) {
  for (int64_t n : {1, 7, 64, 131}) {
    Tensor x = random_tensor(DType::kF32, {5, n}), w = random_tensor(DType::kF32, {n});
    Tensor a = poisoned({5, n}), b = poisoned({5, n});
    cpu::ref::rms_norm(x, w, 1e-5f, a);
    cpu::fast::rms_norm(x, w, 1e-5f, b);
    EXPECT_LT(rel_error(b, a), 1e-6);

    Tensor d = random_tensor(DType::kF32, {5, n});
    Tensor r1 = copy_of(x), r2 = copy_of(x);
    cpu::ref::add_rms_norm(r1, d, w, 1e-6f, a);
    cpu::fast::add_rms_norm(r2, d, w, 1e-6f, b);
    EXPECT_LT(rel_error(r2, r1), 1e-7);
    EXPECT_LT(rel_error(b, a), 1e-6);
  }
  // Per-head norm on heads 2..4 of 6 heads of width 10; the other heads stay untouched.
  Tensor x = random_tensor(DType::kF32, {3, 60}), w = random_tensor(DType::kF32, {10});
  Tensor a = copy_of(x), b = copy_of(x);
  cpu::ref::head_rms_norm(a, 2, 3, w, 1e-6f);
  cpu::fast::head_rms_norm(b, 2, 3, w, 1e-6f);
  EXPECT_LT(rel_error(b, a), 1e-6);
  EXPECT_EQ(a.data_as<float>()[0], x.data_as<float>()[0]);
  EXPECT_NE(a.data_as<float>()[25], x.data_as<float>()[25]);
}

TEST(ElementwiseOps, FastMatchesReference) {
  Tensor gu = random_tensor(DType::kF32, {7, 2 * 45});
  Tensor a = poisoned({7, 45}), b = poisoned({7, 45});
  cpu::ref::silu_mul(gu, a);
  cpu::fast::silu_mul(gu, b);
  EXPECT_LT(rel_error(b, a), 1e-6);

  Tensor x = random_tensor(DType::kF32, {5, 3 * 18});
  Tensor f = random_tensor(DType::kF32, {9}, 0.5f);
  std::vector<int32_t> pos = {0, 3, 17, 1000, 40000};
  Tensor r1 = copy_of(x), r2 = copy_of(x);
  cpu::ref::rope(r1, 2, 18, pos, f);
  cpu::fast::rope(r2, 2, 18, pos, f);
  EXPECT_LT(rel_error(r2, r1), 1e-6);
  // The third head is not rotated; position 0 is the identity.
  EXPECT_EQ(r1.data_as<float>()[40], x.data_as<float>()[40]);
  EXPECT_EQ(r1.data_as<float>()[5], x.data_as<float>()[5]);
}

struct AttnCase {
  int64_t heads, kv_heads, head_dim, block_size, window;
  DType kv_dtype;
};

class AttentionOp : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionOp, FastMatchesReferenceOnMixedBatch) {
  const AttnCase c = GetParam();
  // Three sequences in one step: a 9-token prefill chunk on top of 14 cached tokens, a fresh
  // 5-token prompt, and a single decode at position 30. Blocks are scattered and shuffled.
  std::vector<int32_t> nq = {9, 5, 1}, ctx = {23, 5, 31};
  const int64_t num_blocks = 64, max_blocks = (31 + c.block_size - 1) / c.block_size;
  AttentionBatch b;
  b.num_seqs = 3;
  b.max_blocks = static_cast<int32_t>(max_blocks);
  b.query_start = {0};
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng());
  for (int s = 0; s < 3; ++s) {
    b.query_start.push_back(b.query_start.back() + nq[static_cast<size_t>(s)]);
    b.context_lens.push_back(ctx[static_cast<size_t>(s)]);
    for (int64_t i = 0; i < max_blocks; ++i) {
      b.block_tables.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    for (int32_t i = 0; i < nq[static_cast<size_t>(s)]; ++i) {
      int64_t p = ctx[static_cast<size_t>(s)] - nq[static_cast<size_t>(s)] + i;
      b.slot_mapping.push_back(static_cast<int32_t>(
          b.block_tables[static_cast<size_t>(s * max_blocks + p / c.block_size)] * c.block_size + p % c.block_size));
    }
  }
  const int64_t T = b.num_tokens(), D = c.head_dim;
  AttentionParams p{c.heads, c.kv_heads, D, 1.0f / std::sqrt(static_cast<float>(D)), c.window};
  Shape kv_shape{num_blocks, c.block_size, c.kv_heads, D};
  // The cached prefix (positions before each query) is random; both versions see the same cache.
  Tensor k1 = random_tensor(c.kv_dtype, kv_shape), v1 = random_tensor(c.kv_dtype, kv_shape);
  KvCacheLayer ref_cache{copy_of(k1), copy_of(v1), {}, {}}, fast_cache{copy_of(k1), copy_of(v1), {}, {}};
  if (c.kv_dtype == DType::kF8E4M3) {
    // Per-(token, head) scales of an FP8 cache, as the store would have written them.
    Shape scale_shape{num_blocks, c.block_size, c.kv_heads};
    std::uniform_real_distribution<float> sd(0.005f, 0.05f);
    Tensor ks = Tensor::empty(DType::kF32, scale_shape), vs = Tensor::empty(DType::kF32, scale_shape);
    for (int64_t i = 0; i < ks.numel(); ++i) ks.data_as<float>()[i] = sd(rng()), vs.data_as<float>()[i] = sd(rng());
    ref_cache.k_scale = copy_of(ks), ref_cache.v_scale = copy_of(vs);
    fast_cache.k_scale = copy_of(ks), fast_cache.v_scale = copy_of(vs);
  }
  Tensor qkv = random_tensor(DType::kF32, {T, (c.heads + 2 * c.kv_heads) * D});
  Tensor a = poisoned({T, c.heads * D}), o = poisoned({T, c.heads * D});
  cpu::ref::attention(qkv, ref_cache, b, p, a);
  cpu::fast::attention(qkv, fast_cache, b, p, o);
  EXPECT_LT(rel_error(o, a), 2e-6);
  EXPECT_EQ(std::memcmp(ref_cache.k.data(), fast_cache.k.data(), static_cast<size_t>(k1.nbytes())), 0);
  EXPECT_EQ(std::memcmp(ref_cache.v.data(), fast_cache.v.data(), static_cast<size_t>(v1.nbytes())), 0);
  if (c.kv_dtype == DType::kF8E4M3) {
    EXPECT_EQ(std::memcmp(ref_cache.k_scale.data(), fast_cache.k_scale.data(), static_cast<size_t>(ref_cache.k_scale.nbytes())), 0);
    EXPECT_EQ(std::memcmp(ref_cache.v_scale.data(), fast_cache.v_scale.data(), static_cast<size_t>(ref_cache.v_scale.nbytes())), 0);
    // The new tokens' K came back through the FP8 store: within half an e4m3 step of the input.
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < c.kv_heads; ++h) {
        std::vector<float> back(static_cast<size_t>(D));
        const int64_t slot = b.slot_mapping[static_cast<size_t>(t)];
        cpu::load_kv_head(ref_cache.k, ref_cache.k_scale, slot, h, c.kv_heads, D, back.data());
        const float* x = qkv.data_as<float>() + t * qkv.size(1) + (c.heads + h) * D;
        const float s = ref_cache.k_scale.data_as<float>()[slot * c.kv_heads + h];
        float amax = 0;
        for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[d]));
        EXPECT_FLOAT_EQ(s, amax / kKvFp8Max);
        for (int64_t d = 0; d < D; ++d)
          EXPECT_LE(std::fabs(back[static_cast<size_t>(d)] - x[d]), std::max(std::fabs(x[d]) / 16, s / 1024) * 1.0001f)
              << "token " << t << " head " << h << " dim " << d;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionOp,
                         ::testing::Values(AttnCase{4, 2, 16, 16, 0, DType::kF32},
                                           AttnCase{6, 1, 24, 4, 0, DType::kF32},
                                           AttnCase{5, 5, 20, 3, 0, DType::kF32},
                                           AttnCase{8, 2, 32, 16, 7, DType::kF32},
                                           AttnCase{4, 2, 64, 8, 0, DType::kBF16},
                                           AttnCase{3, 1, 10, 5, 4, DType::kF16},
                                           AttnCase{4, 2, 64, 16, 0, DType::kF8E4M3},
                                           AttnCase{6, 3, 20, 4, 5, DType::kF8E4M3}));

}  // namespace
}  // namespace redhare

namespace redhare {
namespace {

// A row's result must not depend on how many other rows share the product (batch invariance).
TEST(LinearOp, BitwiseIndependentOfBatchSize) {
  for (DType wt : {DType::kBF16, DType::kF32, DType::kF16}) {
    const int64_t N = 45, K = 203;
    Tensor w = random_tensor(wt, {N, K}, 0.1f);
    Tensor big = random_tensor(DType::kF32, {17, K});
    Tensor y_big = poisoned({17, N});
    cpu::fast::linear(big, w, nullptr, y_big);
    for (int64_t M : {1, 2, 3, 4, 5, 8}) {
      for (int64_t r0 = 0; r0 + M <= 17; r0 += 5) {
        Tensor part = big.slice_rows(r0, r0 + M);
        Tensor y = poisoned({M, N});
        cpu::fast::linear(part, w, nullptr, y);
        ASSERT_EQ(std::memcmp(y.data(), y_big.data_as<float>() + r0 * N, static_cast<size_t>(M * N * 4)), 0)
            << "M=" << M << " rows from " << r0 << " weights " << dtype_name(wt);
      }
    }
  }
}

}  // namespace
}  // namespace redhare

namespace redhare {
namespace {

// Random packed blocks of a GGUF type with sane f16 scales (and mins), so every value is finite.
Tensor random_blocks(DType t, int64_t rows, int64_t k) {
  Tensor w = Tensor::empty(t, {rows, k});
  uint8_t* p = static_cast<uint8_t*>(w.data());
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(byte(rng()));
  std::normal_distribution<float> nd(0.0f, 0.01f);
  const int64_t bb = dtype_info(t).block_bytes, d_off = t == DType::kQ6_K ? 208 : 0;
  const bool has_min = t == DType::kQ4_1 || t == DType::kQ5_1 || t == DType::kQ4_K || t == DType::kQ5_K;
  for (int64_t b = 0; b < w.nbytes() / bb; ++b) {
    uint16_t d = f32_to_f16(nd(rng())), m = f32_to_f16(nd(rng()));
    std::memcpy(p + b * bb + d_off, &d, 2);
    if (has_min) std::memcpy(p + b * bb + 2, &m, 2);
  }
  return w;
}

// The default block-quantized path keeps activations in f32: it must equal the reference
// (dequantize, accumulate in double) to f32 rounding, and be batch invariant like f32 weights.
TEST(LinearOp, BlockQuantizedWeightsMatchTheReference) {
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ4_K,
                  DType::kQ5_K, DType::kQ6_K}) {
    const int64_t K = dtype_info(t).block_elems == 256 ? 512 : 96, N = 37;
    Tensor w = random_blocks(t, N, K);
    Tensor x = random_tensor(DType::kF32, {9, K});
    Tensor b = random_tensor(DType::kF32, {N});
    for (int64_t M : {1, 3, 9}) {
      Tensor xm = x.slice_rows(0, M);
      Tensor ref = poisoned({M, N}), fast = poisoned({M, N});
      cpu::ref::linear(xm, w, &b, ref);
      cpu::fast::linear(xm, w, &b, fast);
      EXPECT_LT(rel_error(fast, ref), 1e-5) << dtype_name(t) << " M=" << M;
    }
    Tensor y1 = poisoned({1, N}), y9 = poisoned({9, N});
    cpu::fast::linear(x.slice_rows(0, 1), w, nullptr, y1);
    cpu::fast::linear(x, w, nullptr, y9);
    EXPECT_EQ(std::memcmp(y1.data(), y9.data(), static_cast<size_t>(N * 4)), 0) << dtype_name(t);
  }
}

}  // namespace
}  // namespace redhare

namespace redhare {
namespace {

TEST(LinearKernels, BlockKernelsOfEveryIsaThisCpuRunsAgreeBitwise) {
  const char* best = nullptr;
  cpu::select_linear_kernel(&best);
  struct Case {
    DType t;
    int code;
    cpu::DequantRowFn fb;
  };
  const Case cases[] = {
      {DType::kQ8_0, cpu::kQuantQ8_0, +[](const void* s, float* d, int64_t n) { dequantize_row_ref(DType::kQ8_0, s, d, n); }},
      {DType::kQ4_0, cpu::kQuantQ4_0, +[](const void* s, float* d, int64_t n) { dequantize_row_ref(DType::kQ4_0, s, d, n); }},
      {DType::kQ4_1, cpu::kQuantQ4_1, +[](const void* s, float* d, int64_t n) { dequantize_row_ref(DType::kQ4_1, s, d, n); }},
      {DType::kQ4_K, cpu::kQuantQ4_K, +[](const void* s, float* d, int64_t n) { dequantize_row_ref(DType::kQ4_K, s, d, n); }},
  };
  for (const Case& c : cases) {
    const int64_t K = c.t == DType::kQ4_K ? 768 : 160, N = 11, M = 3;
    Tensor w = random_blocks(c.t, N, K);
    Tensor x = random_tensor(DType::kF32, {M, K});
    std::vector<float> scratch(static_cast<size_t>(4 * K));
    const int64_t row_bytes = dtype_bytes(c.t, K);
    // The scalar path (reference dequantization) against each SIMD dequantization: the same
    // values must come out, so the products agree bitwise with the AVX2 one...
    Tensor ys = poisoned({M, N}), y2 = poisoned({M, N});
    cpu::linear_range_block_scalar(cpu::kQuantOther, row_bytes, c.fb, w.data(), x.data_as<float>(), M, K,
                                   ys.data_as<float>(), N, nullptr, 0, N, scratch.data());
    if (std::string(best) == "scalar") continue;
    cpu::linear_range_block_avx2(c.code, row_bytes, c.fb, w.data(), x.data_as<float>(), M, K, y2.data_as<float>(), N,
                                 nullptr, 0, N, scratch.data());
    EXPECT_LT(rel_error(y2, ys), 1e-5) << dtype_name(c.t);
    // ...and SIMD dequantization equals the reference exactly: AVX2 with the fast code and with
    // the reference fallback give identical results.
    Tensor y2ref = poisoned({M, N});
    cpu::linear_range_block_avx2(cpu::kQuantOther, row_bytes, c.fb, w.data(), x.data_as<float>(), M, K,
                                 y2ref.data_as<float>(), N, nullptr, 0, N, scratch.data());
    EXPECT_EQ(std::memcmp(y2.data(), y2ref.data(), static_cast<size_t>(M * N * 4)), 0) << dtype_name(c.t);
    if (std::string(best) != "avx512") continue;
    Tensor y5 = poisoned({M, N}), y5ref = poisoned({M, N});
    cpu::linear_range_block_avx512(c.code, row_bytes, c.fb, w.data(), x.data_as<float>(), M, K, y5.data_as<float>(),
                                   N, nullptr, 0, N, scratch.data());
    cpu::linear_range_block_avx512(cpu::kQuantOther, row_bytes, c.fb, w.data(), x.data_as<float>(), M, K,
                                   y5ref.data_as<float>(), N, nullptr, 0, N, scratch.data());
    EXPECT_EQ(std::memcmp(y5.data(), y5ref.data(), static_cast<size_t>(M * N * 4)), 0) << dtype_name(c.t);
  }
}

}  // namespace
}  // namespace redhare
