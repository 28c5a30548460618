// Quantized weights: the reference dequantization against gguf-py's, and every fast kernel against
// the reference matmul on odd sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "backends/cpu/quant.h"
#include "backends/cpu/quant_kernels.h"
#include "core/error.h"

namespace redhare {
namespace {

struct RefEntry {
  std::string name;
  int rows = 0, k = 0;
  std::vector<uint8_t> raw;
  std::vector<float> expected;
};

// Reads fixtures/gguf/quant_reference.bin (format in tools/gguf/make_fixtures.py).
std::vector<RefEntry> read_reference() {
  std::ifstream in(std::string(REDHARE_SOURCE_DIR) + "/fixtures/gguf/quant_reference.bin",
                   std::ios::binary);
  std::vector<uint8_t> b(std::istreambuf_iterator<char>(in), {});
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    if (pos + n > b.size()) throw std::runtime_error("quant_reference.bin is truncated");
    std::memcpy(dst, b.data() + pos, n);
    pos += n;
  };
  char magic[4];
  uint32_t count;
  take(magic, 4);
  take(&count, 4);
  std::vector<RefEntry> out(count);
  for (RefEntry& e : out) {
    uint32_t len, rows, k;
    uint64_t nraw;
    take(&len, 4);
    e.name.resize(len);
    take(e.name.data(), len);
    take(&rows, 4);
    take(&k, 4);
    take(&nraw, 8);
    e.rows = static_cast<int>(rows);
    e.k = static_cast<int>(k);
    e.raw.resize(nraw);
    take(e.raw.data(), nraw);
    e.expected.resize(static_cast<size_t>(rows) * k);
    take(e.expected.data(), e.expected.size() * 4);
  }
  return out;
}

DType dtype_of(const std::string& ggml_name) {
  static const std::pair<const char*, DType> kMap[] = {
      {"F32", DType::kF32},   {"F16", DType::kF16},   {"BF16", DType::kBF16},
      {"Q8_0", DType::kQ8_0}, {"Q4_0", DType::kQ4_0}, {"Q4_1", DType::kQ4_1},
      {"Q5_0", DType::kQ5_0}, {"Q5_1", DType::kQ5_1}, {"Q4_K", DType::kQ4_K},
      {"Q5_K", DType::kQ5_K}, {"Q6_K", DType::kQ6_K}};
  for (const auto& [n, t] : kMap)
    if (ggml_name == n) return t;
  throw std::runtime_error("unknown type in fixture: " + ggml_name);
}

TEST(Quant, DequantizeMatchesGgufPy) {
  std::vector<RefEntry> entries = read_reference();
  ASSERT_EQ(entries.size(), 11u);  // every type redhare handles
  for (const RefEntry& e : entries) {
    DType t = dtype_of(e.name);
    ASSERT_EQ(static_cast<int64_t>(e.raw.size()), dtype_bytes(t, int64_t{e.rows} * e.k)) << e.name;
    std::vector<float> got(e.expected.size());
    dequantize_row_ref(t, e.raw.data(), got.data(), static_cast<int64_t>(got.size()));
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      // gguf-py computes in float32 in the same order (d * sc * q - dmin * m) except where numpy
      // promotes; allow a few float ulps.
      float tol = 4e-7f * std::fabs(e.expected[i]) + 1e-30f;
      if (std::fabs(got[i] - e.expected[i]) > tol && mismatches++ < 5)
        ADD_FAILURE() << e.name << " element " << i << ": got " << got[i] << ", gguf-py "
                      << e.expected[i];
    }
    EXPECT_EQ(mismatches, 0) << e.name;
  }
}

// ---- fast kernels ----

constexpr DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                               DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                               DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// Offsets of the f16 scale fields in each block: random bytes there could be NaN or huge.
std::vector<int> scale_offsets(DType t) {
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      return {0, 2};
    case DType::kQ6_K:
      return {208};
    default:
      return {0};
  }
}

// Random weights: for block types random bytes (every bit pattern of the packed values, Q8_0's
// -128 included) with ordinary f16 scales; for float types random normal values.
std::vector<uint8_t> random_weights(DType t, int64_t n_rows, int64_t k, std::mt19937& rng) {
  std::vector<uint8_t> w(static_cast<size_t>(dtype_bytes(t, n_rows * k)));
  std::normal_distribution<float> normal(0.0f, 0.05f);
  if (!is_block_quantized(t)) {
    std::vector<float> v(static_cast<size_t>(n_rows * k));
    for (float& f : v) f = normal(rng) * 20;
    convert_from_f32(v.data(), t, w.data(), n_rows * k);
    return w;
  }
  for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
  const DTypeInfo& info = dtype_info(t);
  for (size_t off = 0; off < w.size(); off += static_cast<size_t>(info.block_bytes))
    for (int s : scale_offsets(t)) {
      uint16_t h = f32_to_f16(normal(rng));
      std::memcpy(&w[off + static_cast<size_t>(s)], &h, 2);
    }
  return w;
}

std::vector<float> dequantize_all(DType t, const std::vector<uint8_t>& w, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row_ref(t, w.data(), out.data(), n);
  return out;
}

// Values per activation block of the fast kernels (0: activations used as they are).
int act_block(DType t) {
  return is_block_quantized(t) ? dtype_info(t).block_elems : 0;
}

struct Case {
  QuantIsa isa;
  DType t;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (QuantIsa isa : {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512})
    if (quant_isa_available(isa))
      for (DType t : kAllTypes) cases.push_back({isa, t});
  return cases;
}

// k: several blocks, plus an odd length for the float types (their vector loop has a tail).
int64_t test_k(DType t) {
  if (!is_block_quantized(t)) return 83;
  return dtype_info(t).block_elems == 32 ? 32 * 7 : 256 * 3;
}

// The fast kernels round each activation to 8 bits per block: |x_j - d_b q_j| <= d_b / 2 with
// d_b = max|x in block| / 127. So for each output
//   |y_fast - y_ref| <= sum_j |W[r, j]| * d_b(j) / 2  (+ float rounding, 1e-5 of sum |W x|).
// With random data the typical error is much smaller, about d / sqrt(12) per term, which gives a
// relative RMS error near 0.7%; a wrong unpacking or scale gives errors of order 100%.
TEST(Quant, FastKernelsWithinActivationQuantizationBound) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Case& c : all_cases()) {
    const int64_t k = test_k(c.t);
    for (int64_t m : {1, 3, 7, 17}) {
      const int64_t n_rows = m == 1 ? 37 : 13;
      std::vector<uint8_t> w = random_weights(c.t, n_rows, k, rng);
      std::vector<float> x(static_cast<size_t>(m * k));
      for (float& v : x) v = normal(rng);
      std::vector<float> y_ref(static_cast<size_t>(m * n_rows)), y(y_ref.size(), -1e30f);
      quant_matmul_ref(c.t, w.data(), n_rows, k, x.data(), m, y_ref.data());
      quant_matmul_isa(c.isa, c.t, w.data(), n_rows, k, x.data(), m, y.data());

      std::vector<float> wf = dequantize_all(c.t, w, n_rows * k);
      const int block = act_block(c.t);
      double err2 = 0, ref2 = 0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t r = 0; r < n_rows; ++r) {
          double bound = 0, mag = 0;
          for (int64_t j0 = 0; j0 < k; j0 += block ? block : k) {
            int64_t j1 = block ? j0 + block : k;
            double amax = 0, wsum = 0;
            for (int64_t j = j0; j < j1; ++j) {
              amax = std::max(amax, std::fabs(double{x[i * k + j]}));
              wsum += std::fabs(double{wf[r * k + j]});
              mag += std::fabs(double{wf[r * k + j]} * x[i * k + j]);
            }
            if (block) bound += wsum * amax / 127.0 / 2.0;
          }
          bound += 1e-5 * mag + 1e-6;
          const float got = y[i * n_rows + r], want = y_ref[i * n_rows + r];
          ASSERT_LE(std::fabs(double{got} - want), bound)
              << quant_isa_name(c.isa) << " " << dtype_name(c.t) << " m=" << m << " row " << r
              << " batch " << i << ": fast " << got << " ref " << want;
          err2 += (double{got} - want) * (double{got} - want);
          ref2 += double{want} * want;
        }
      }
      // Typical error: ~0.7% for the block types, float rounding for the float types.
      const double rel = std::sqrt(err2 / ref2);
      EXPECT_LT(rel, block ? 0.02 : 1e-5) << quant_isa_name(c.isa) << " " << dtype_name(c.t);
    }
  }
}

// Activations that 8-bit blocks represent exactly (a power-of-two scale times integers in
// [-127, 127], each block reaching 127) leave only float rounding: this checks the integer
// pipeline of every kernel — unpacking, offsets, mins, sub-block scales — to 1e-5.
TEST(Quant, FastKernelsExactOnRepresentableActivations) {
  std::mt19937 rng(7);
  for (const Case& c : all_cases()) {
    const int block = act_block(c.t);
    if (block == 0) continue;
    const int64_t k = test_k(c.t), n_rows = 11, m = 3;
    std::vector<uint8_t> w = random_weights(c.t, n_rows, k, rng);
    std::vector<float> x(static_cast<size_t>(m * k));
    for (int64_t b = 0; b < m * k / block; ++b) {
      const float d = std::ldexp(1.0f, -static_cast<int>(rng() % 6));
      for (int j = 0; j < block; ++j)
        x[b * block + j] = d * static_cast<float>(static_cast<int>(rng() % 255) - 127);
      x[b * block + rng() % block] = (rng() & 1 ? 127.0f : -127.0f) * d;
    }
    std::vector<float> y_ref(static_cast<size_t>(m * n_rows)), y(y_ref.size());
    quant_matmul_ref(c.t, w.data(), n_rows, k, x.data(), m, y_ref.data());
    quant_matmul_isa(c.isa, c.t, w.data(), n_rows, k, x.data(), m, y.data());
    std::vector<float> wf = dequantize_all(c.t, w, n_rows * k);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < n_rows; ++r) {
        double mag = 0;
        for (int64_t j = 0; j < k; ++j) mag += std::fabs(double{wf[r * k + j]} * x[i * k + j]);
        EXPECT_NEAR(y[i * n_rows + r], y_ref[i * n_rows + r], 1e-5 * mag + 1e-6)
            << quant_isa_name(c.isa) << " " << dtype_name(c.t) << " row " << r << " batch " << i;
      }
  }
}

#if defined(__x86_64__)
// The SIMD activation quantizers must produce the reference's bytes exactly (same scale, same
// round-to-nearest-even), zero blocks included.
TEST(Quant, SimdActivationQuantizationMatchesReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t k = 768;
  std::vector<float> x(k);
  for (float& v : x) v = normal(rng);
  x[40] = 0;
  for (int j = 64; j < 96; ++j) x[j] = 0;  // an all-zero block
  for (auto [isa, table] : {std::pair{QuantIsa::kAvx2, &quant::avx2_kernels},
                            std::pair{QuantIsa::kAvx512, &quant::avx512_kernels}}) {
    if (!quant_isa_available(isa)) continue;
    for (DType t : {DType::kQ4_0, DType::kQ6_K}) {
      const int64_t bytes = quant::act_row_bytes(t, k);
      std::vector<uint8_t> want(static_cast<size_t>(bytes)), got(want.size());
      quant::quantize_act_row(t, x.data(), k, want.data());
      const quant::KernelTable& kt = table();
      (quant::act_block_elems(t) == 32 ? kt.quantize32 : kt.quantize256)(x.data(), k, got.data());
      EXPECT_EQ(got, want) << quant_isa_name(isa) << " " << dtype_name(t);
    }
  }
}
#endif

TEST(Quant, DefaultEntryUsesTheBestInstructionSet) {
  std::mt19937 rng(3);
  const int64_t n_rows = 19, k = 512, m = 2;
  std::vector<uint8_t> w = random_weights(DType::kQ4_K, n_rows, k, rng);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 500.0f;
  std::vector<float> a(static_cast<size_t>(m * n_rows)), b(a.size());
  quant_matmul(DType::kQ4_K, w.data(), n_rows, k, x.data(), m, a.data());
  quant_matmul_isa(quant_best_isa(), DType::kQ4_K, w.data(), n_rows, k, x.data(), m, b.data());
  EXPECT_EQ(a, b);
#if defined(__x86_64__)
  __builtin_cpu_init();
  EXPECT_EQ(quant_isa_available(QuantIsa::kAvx512), __builtin_cpu_supports("avx512vnni") &&
                                                        __builtin_cpu_supports("avx512bw") &&
                                                        __builtin_cpu_supports("avx512vl"));
#endif
}

TEST(Quant, RejectsBadShapesAndTypes) {
  std::vector<uint8_t> w(1024);
  std::vector<float> x(1024), y(64);
  EXPECT_THROW(quant_matmul(DType::kQ4_0, w.data(), 2, 48, x.data(), 1, y.data()), Error);
  EXPECT_THROW(quant_matmul(DType::kQ6_K, w.data(), 1, 128, x.data(), 1, y.data()), Error);
  EXPECT_THROW(quant_matmul(DType::kI8, w.data(), 1, 16, x.data(), 1, y.data()), Error);
  EXPECT_THROW(dequantize_row_ref(DType::kQ8_0, w.data(), x.data(), 33), Error);
  EXPECT_FALSE(quant_supported(DType::kI32));
  EXPECT_TRUE(quant_supported(DType::kQ5_K));
}

}  // namespace
}  // namespace redhare
