// Block-quantized (GGUF) weights on the CUDA backend: linear and embedding for every block type
// against cpu::ref (which dequantizes with quant_ref.cpp and sums in double), the real SmolLM2
// GGUF against the CPU fast backend, and a decode-bandwidth measurement.
//
// Tolerances: the kernels dequantize each weight to the reference's exact f32 value and keep the
// activations in f32, so linear differs from the reference only by f32 summation order (about
// sqrt(K) ulp, far under the 1e-5 relative bound) and embedding rows must match bit for bit.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <vector>

#include <cuda_runtime.h>

#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"
#include "backends/cuda/kernels.h"
#include "cuda_test_util.h"
#include "engine/generate.h"
#include "models/gguf_model.h"

namespace redhare::cuda_test {
namespace {

constexpr DType kBlockTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0,
                                 DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// Byte offsets of the f16 scale fields (d, and dmin/m where the type has one) in a block.
std::vector<int> f16_fields(DType t) {
  switch (t) {
    case DType::kQ8_0: case DType::kQ4_0: case DType::kQ5_0: return {0};
    case DType::kQ4_1: case DType::kQ5_1: case DType::kQ4_K: case DType::kQ5_K: return {0, 2};
    case DType::kQ6_K: return {208};
    default: return {};
  }
}

// Fresh random blocks: random quant bits and sub-block scales, with every f16 scale replaced by
// a small normal value (random bits there would give infinities and NaNs).
Tensor random_blocks(DType t, int64_t rows, int64_t cols) {
  Tensor w = Tensor::empty(t, {rows, cols});
  auto* p = static_cast<uint8_t*>(w.data());
  for (int64_t i = 0; i < w.nbytes(); i += 4) {
    const uint32_t r = rng()();  // four random bytes per draw: the bandwidth test fills 142 MB
    std::memcpy(p + i, &r, static_cast<size_t>(std::min<int64_t>(4, w.nbytes() - i)));
  }
  std::normal_distribution<float> scale(0.0f, 0.02f);
  const DTypeInfo& info = dtype_info(t);
  for (int64_t b = 0; b < w.nbytes() / info.block_bytes; ++b)
    for (int off : f16_fields(t)) {
      const uint16_t h = f32_to_f16(scale(rng()));
      std::memcpy(p + b * info.block_bytes + off, &h, 2);
    }
  return w;
}

struct QuantCase {
  DType wtype;
  int64_t M, N, K;
  bool bias;
};

class CudaQuantLinear : public CudaTest, public ::testing::WithParamInterface<QuantCase> {};

TEST_P(CudaQuantLinear, MatchesReference) {
  const QuantCase c = GetParam();
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor w = random_blocks(c.wtype, c.N, c.K);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor ref = poisoned({c.M, c.N});
  cpu::ref::linear(x, w, c.bias ? &b : nullptr, ref);
  Tensor dw = gpu->upload(w), db = gpu->upload(b), out = gpu->upload(poisoned({c.M, c.N}));
  gpu->linear(gpu->upload(x), dw, c.bias ? &db : nullptr, out);
  // Relative to the size of the terms (sum |x_k w_k| + |b|), not of the result: a sum of a few
  // terms can cancel to far below them (N = 1, K = 32 once came out 1.9e-5 off relative to |ref|),
  // where f32 summation order alone shows. A wrong weight or scale is off by about a whole term.
  std::vector<float> wf(static_cast<size_t>(c.N * c.K));
  const int64_t row_bytes = dtype_bytes(c.wtype, c.K);
  for (int64_t n = 0; n < c.N; ++n)
    dequantize_row_ref(c.wtype, static_cast<const uint8_t*>(w.data()) + n * row_bytes, wf.data() + n * c.K, c.K);
  const auto abs_of = [](std::vector<float> v, const Shape& shape) {
    for (float& f : v) f = std::fabs(f);
    return Tensor::from_f32(v, shape);
  };
  Tensor mag = poisoned({c.M, c.N}), ab = abs_of(b.to_f32_vector(), {c.N});
  cpu::ref::linear(abs_of(x.to_f32_vector(), {c.M, c.K}), abs_of(wf, {c.N, c.K}), c.bias ? &ab : nullptr, mag);
  EXPECT_LT(error_to_magnitude(gpu->to_host(out), ref, mag), 1e-5)
      << dtype_name(c.wtype) << " M=" << c.M << " N=" << c.N << " K=" << c.K;
}

std::vector<QuantCase> quant_cases() {
  std::vector<QuantCase> v;
  for (DType t : kBlockTypes) {
    const bool k_quant = dtype_info(t).block_elems == 256;
    // 32-value types: one block, a partial 256-value step (576 = SmolLM2's hidden size), and
    // more steps than the decode kernel's unroll with a remainder. K types: 1, 3 and 9 blocks.
    const std::vector<std::pair<int64_t, int64_t>> nk =
        k_quant ? std::vector<std::pair<int64_t, int64_t>>{{1, 256}, {7, 768}, {37, 2304}, {131, 256}}
                : std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {7, 576}, {37, 2080}, {131, 96}};
    for (int64_t M : {1, 3, 5, 17, 70})
      for (auto [N, K] : nk) v.push_back({t, M, N, K, (M + N) % 4 == 2});
    // The decode kernel's four-rows-per-warp path, with a partial last warp.
    for (int64_t M : {1, 4}) v.push_back({t, M, cuda::kQuantGemvWideRows + 5, k_quant ? 512 : 160, M == 4});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(QuantOddSizes, CudaQuantLinear, ::testing::ValuesIn(quant_cases()),
                         [](const ::testing::TestParamInfo<QuantCase>& p) {
                           const QuantCase& c = p.param;
                           return std::string(dtype_name(c.wtype)) + "_M" + std::to_string(c.M) + "_N" +
                                  std::to_string(c.N) + "_K" + std::to_string(c.K) + (c.bias ? "_bias" : "");
                         });

using CudaQuant = CudaTest;

TEST_F(CudaQuant, EmbeddingDequantizesRowsExactly) {
  for (DType t : kBlockTypes) {
    const int64_t hidden = dtype_info(t).block_elems == 256 ? 768 : 576, V = 37;
    Tensor table = random_blocks(t, V, hidden);
    Tensor dt = gpu->upload(table);
    for (const std::vector<int32_t>& ids : {std::vector<int32_t>{3, 0, 36, 3, 17}, std::vector<int32_t>{36, 1}}) {
      const auto T = static_cast<int64_t>(ids.size());
      Tensor ref = poisoned({T, hidden}), out = gpu->upload(poisoned({T, hidden}));
      cpu::ref::embedding(table, ids, ref);
      gpu->embedding(dt, ids, out);
      EXPECT_TRUE(same_bytes(gpu->to_host(out), ref)) << dtype_name(t) << " ids of " << T;
    }
  }
  Tensor out = gpu->alloc(DType::kF32, {1, 576});
  EXPECT_THROW(gpu->embedding(gpu->upload(random_blocks(DType::kQ8_0, 37, 576)), {37}, out), std::logic_error);
}

// ---- the real model ----

float max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel()) return INFINITY;
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float d = std::fabs(a.data_as<float>()[i] - b.data_as<float>()[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// Same bounds as tests/models/test_smollm2.cpp: logits of magnitude ~25 after 30 layers.
constexpr float kModelLogitTolerance = 2e-3f;
constexpr float kModelNearTie = 4e-3f;

TEST_F(CudaQuant, SmolLM2GgufMatchesCpuBackend) {
  const std::string path = default_model_path();
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: run scripts/fetch_default_model.sh";
  auto cpu = make_cpu_backend(false);
  auto cpu_model = load_model(path, *cpu);
  auto gpu_model = load_model(path, *gpu);
  const std::vector<int32_t> prompt = {1, 4093, 198, 19556, 905, 2, 198, 1, 520, 9531, 198};
  const float logit_err = max_abs_diff(prompt_logits(*gpu_model, *gpu, prompt), prompt_logits(*cpu_model, *cpu, prompt));
  EXPECT_LE(logit_err, kModelLogitTolerance);
  std::printf("[ smollm2  ] max |logit cuda - cpu| = %.3g\n", logit_err);

  GreedyOptions g;
  g.max_new_tokens = 16;
  g.ignore_eos = true;
  const std::vector<int32_t> want = greedy_generate(*cpu_model, *cpu, prompt, g);
  const std::vector<int32_t> got = greedy_generate(*gpu_model, *gpu, prompt, g);
  ASSERT_EQ(want.size(), 16u);
  ASSERT_EQ(got.size(), 16u);
  // The CPU's top-2 margin at each generated position, from its logits over prompt + its tokens.
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), want.begin(), want.end() - 1);
  Tensor logits = prompt_logits(*cpu_model, *cpu, seq);
  const int64_t V = logits.size(1);
  size_t compared = 0;
  for (size_t t = 0; t < want.size(); ++t) {
    const float* row = logits.data_as<float>() + (static_cast<int64_t>(prompt.size()) - 1 + static_cast<int64_t>(t)) * V;
    std::vector<float> top(row, row + V);
    std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
    if (top[0] - top[1] < kModelNearTie) break;  // a near-tie: either token is right from here on
    EXPECT_EQ(got[t], want[t]) << "step " << t;
    if (got[t] != want[t]) break;
    ++compared;
  }
  std::printf("[ smollm2  ] greedy tokens identical over the first %zu (of 16) steps before any near-tie\n", compared);
}

// ---- decode bandwidth ----
//
// Not a timing assertion: it checks the big GEMV's result on sampled rows and prints GB/s of
// packed weights next to the device-to-device copy bandwidth measured in the same run.

float median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST_F(CudaQuant, DecodeGemvBandwidth) {
  const int64_t N = 16384, K = 8192;  // 64-142 MB of weights: larger than the L2 cache
  cudaStream_t s;
  cudaEvent_t e0, e1;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  auto time_ms = [&](auto&& launch) {
    for (int i = 0; i < 3; ++i) launch();
    std::vector<float> t;
    for (int i = 0; i < 20; ++i) {
      cudaEventRecord(e0, s);
      launch();
      cudaEventRecord(e1, s);
      EXPECT_EQ(cudaEventSynchronize(e1), cudaSuccess);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms);
    }
    return median_ms(t);
  };

  // The copy ceiling: bytes read plus bytes written.
  const size_t copy_bytes = size_t{256} << 20;
  void *src = nullptr, *dst = nullptr;
  ASSERT_EQ(cudaMalloc(&src, copy_bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dst, copy_bytes), cudaSuccess);
  cudaMemsetAsync(src, 1, copy_bytes, s);
  const float copy_ms = time_ms([&] { cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, s); });
  const double copy_gbs = 2.0 * static_cast<double>(copy_bytes) / (copy_ms * 1e6);
  cudaFree(src);
  cudaFree(dst);
  std::printf("[ bench    ] device-to-device copy: %.0f GB/s (read + write)\n", copy_gbs);

  Tensor x = random_tensor(DType::kF32, {1, K});
  float *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), K * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dy), N * sizeof(float)), cudaSuccess);
  cudaMemcpy(dx, x.data(), K * sizeof(float), cudaMemcpyHostToDevice);
  for (DType t : kBlockTypes) {
    Tensor w = random_blocks(t, N, K);
    void* dw = nullptr;
    ASSERT_EQ(cudaMalloc(&dw, static_cast<size_t>(w.nbytes() + cuda::kBlockPadBytes)), cudaSuccess);
    cudaMemcpy(dw, w.data(), static_cast<size_t>(w.nbytes()), cudaMemcpyHostToDevice);
    const float ms = time_ms([&] { cuda::launch_quant_linear(dx, dw, t, nullptr, 1, N, K, dy, s); });
    std::vector<float> y(static_cast<size_t>(N));
    ASSERT_EQ(cudaMemcpy(y.data(), dy, N * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    // 64 rows at the start and 64 at the end against the reference.
    const int64_t row_bytes = dtype_bytes(t, K);
    for (int64_t r0 : {int64_t{0}, N - 64}) {
      std::vector<float> ref(64);
      quant_matmul_ref(t, static_cast<const uint8_t*>(w.data()) + r0 * row_bytes, 64, K, x.data_as<float>(), 1,
                       ref.data());
      double num = 0, den = 0;
      for (int64_t i = 0; i < 64; ++i) {
        const double d = y[static_cast<size_t>(r0 + i)] - ref[static_cast<size_t>(i)];
        num += d * d;
        den += static_cast<double>(ref[static_cast<size_t>(i)]) * ref[static_cast<size_t>(i)];
      }
      EXPECT_LT(std::sqrt(num / den), 1e-5) << dtype_name(t) << " rows from " << r0;
    }
    const double gbs = static_cast<double>(w.nbytes()) / (ms * 1e6);
    std::printf("[ bench    ] %-5s M=1 N=%lld K=%lld: %.1f MB in %.1f us = %.0f GB/s (%.0f%% of copy)\n",
                std::string(dtype_name(t)).c_str(), static_cast<long long>(N), static_cast<long long>(K),
                static_cast<double>(w.nbytes()) / 1e6, ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
    cudaFree(dw);
  }
  cudaFree(dx);
  cudaFree(dy);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace redhare::cuda_test
