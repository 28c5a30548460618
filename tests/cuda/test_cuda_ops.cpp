// Every CUDA op against the CPU reference (cpu::ref) on odd sizes, fresh random inputs and
// NaN-poisoned outputs. Tolerances: the GPU sums in f32 where the reference sums in double, so
// reductions differ by about sqrt(n) ulp; ops without reductions must match bit for bit.
#include <algorithm>
#include <numeric>
#include <vector>

#include "backends/cpu/ops.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace redhare::cuda_test {
namespace {

struct LinearCase {
  DType wtype;
  int64_t M, N, K;
  bool bias;
};

class CudaLinear : public CudaTest, public ::testing::WithParamInterface<LinearCase> {};

TEST_P(CudaLinear, MatchesReference) {
  const LinearCase c = GetParam();
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor w = random_tensor(c.wtype, {c.N, c.K}, 0.1f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor ref = poisoned({c.M, c.N});
  cpu::ref::linear(x, w, c.bias ? &b : nullptr, ref);
  Tensor dw = gpu->upload(w), db = gpu->upload(b), out = gpu->upload(poisoned({c.M, c.N}));
  gpu->linear(gpu->upload(x), dw, c.bias ? &db : nullptr, out);
  EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-5)
      << dtype_name(c.wtype) << " M=" << c.M << " N=" << c.N << " K=" << c.K;
}

std::vector<LinearCase> linear_cases() {
  std::vector<LinearCase> v;
  // M covers the decode kernel (<= 4), the 64-row tiles (<= 64) and the 128-row tiles, each
  // with partial tiles. K covers: scalar only (13, 67, 257), 16-byte loads without (512) and with the unrolled main
  // loop plus remainders (2056, 4100), and f32 rows that are 16-byte aligned but bf16 ones not (1004).
  const std::vector<std::pair<int64_t, int64_t>> nk = {{1, 1},    {7, 13},    {37, 67},  {130, 257},
                                                       {64, 512}, {301, 2056}, {9, 1004}, {70, 4100}};
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16})
    for (int64_t M : {1, 2, 3, 4, 5, 9, 17, 64, 67, 130})
      for (auto [N, K] : nk) v.push_back({t, M, N, K, (M + N) % 2 == 0});
  return v;
}

INSTANTIATE_TEST_SUITE_P(OddSizes, CudaLinear, ::testing::ValuesIn(linear_cases()),
                         [](const ::testing::TestParamInfo<LinearCase>& p) {
                           const LinearCase& c = p.param;
                           return std::string(dtype_name(c.wtype)) + "_M" + std::to_string(c.M) + "_N" +
                                  std::to_string(c.N) + "_K" + std::to_string(c.K) + (c.bias ? "_bias" : "");
                         });

using CudaOps = CudaTest;

TEST_F(CudaOps, EmbeddingCopiesRowsExactly) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor table = random_tensor(dt, {37, 45});
    std::vector<int32_t> ids = {3, 0, 36, 3, 17};
    Tensor ref = poisoned({5, 45}), out = gpu->upload(poisoned({5, 45}));
    cpu::ref::embedding(table, ids, ref);
    gpu->embedding(gpu->upload(table), ids, out);
    EXPECT_TRUE(same_bytes(gpu->to_host(out), ref)) << dtype_name(dt);
    // A second call with other ids must not reuse the first call's device copy of them.
    std::vector<int32_t> ids2 = {36, 1, 2, 35, 0};
    cpu::ref::embedding(table, ids2, ref);
    gpu->embedding(gpu->upload(table), ids2, out);
    EXPECT_TRUE(same_bytes(gpu->to_host(out), ref)) << dtype_name(dt) << " second ids";
  }
  Tensor table = gpu->upload(random_tensor(DType::kBF16, {37, 8}));
  Tensor out = gpu->alloc(DType::kF32, {1, 8});
  EXPECT_THROW(gpu->embedding(table, {37}, out), std::logic_error);
}

TEST_F(CudaOps, NormsMatchReference) {
  for (int64_t n : {1, 7, 64, 131, 2049, 4096}) {  // 64 and 4096: four values per thread
    Tensor x = random_tensor(DType::kF32, {5, n}), w = random_tensor(DType::kF32, {n});
    Tensor ref = poisoned({5, n}), out = gpu->upload(poisoned({5, n}));
    Tensor dw = gpu->upload(w);
    cpu::ref::rms_norm(x, w, 1e-5f, ref);
    gpu->rms_norm(gpu->upload(x), dw, 1e-5f, out);
    EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-6) << "rms_norm n=" << n;

    Tensor d = random_tensor(DType::kF32, {5, n});
    Tensor r_ref = copy_of(x), r_gpu = gpu->upload(x);
    cpu::ref::add_rms_norm(r_ref, d, w, 1e-6f, ref);
    gpu->add_rms_norm(r_gpu, gpu->upload(d), dw, 1e-6f, out);
    EXPECT_TRUE(same_bytes(gpu->to_host(r_gpu), r_ref)) << "add_rms_norm residual n=" << n;
    EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-6) << "add_rms_norm n=" << n;
  }
  // Per-head norm on heads 2..4 of 6 heads of width 10; the other heads stay untouched.
  for (int64_t hd : {10, 128, 300}) {
    Tensor x = random_tensor(DType::kF32, {3, 6 * hd}), w = random_tensor(DType::kF32, {hd});
    Tensor ref = copy_of(x), dx = gpu->upload(x);
    cpu::ref::head_rms_norm(ref, 2, 3, w, 1e-6f);
    gpu->head_rms_norm(dx, 2, 3, gpu->upload(w), 1e-6f);
    Tensor got = gpu->to_host(dx);
    EXPECT_LT(rel_error(got, ref), 1e-6) << "head_dim " << hd;
    EXPECT_EQ(got.data_as<float>()[0], x.data_as<float>()[0]);
    EXPECT_EQ(got.data_as<float>()[5 * hd + 1], x.data_as<float>()[5 * hd + 1]);
    EXPECT_NE(got.data_as<float>()[2 * hd + 1], x.data_as<float>()[2 * hd + 1]);
  }
}

TEST_F(CudaOps, ElementwiseMatchReference) {
  for (int64_t I : {1, 45, 1000, 4096}) {  // 1000 and 4096: four values per thread
    Tensor gu = random_tensor(DType::kF32, {7, 2 * I}, 3.0f);
    Tensor ref = poisoned({7, I}), out = gpu->upload(poisoned({7, I}));
    cpu::ref::silu_mul(gu, ref);
    gpu->silu_mul(gpu->upload(gu), out);
    EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-6) << "silu_mul I=" << I;
  }
  Tensor a = random_tensor(DType::kF32, {3, 333}), b = random_tensor(DType::kF32, {3, 333});
  Tensor ref = copy_of(a), da = gpu->upload(a);
  cpu::ref::add(ref, b);
  gpu->add(da, gpu->upload(b));
  EXPECT_TRUE(same_bytes(gpu->to_host(da), ref)) << "add";
}

TEST_F(CudaOps, RopeMatchesReference) {
  for (int64_t hd : {18, 64, 128}) {
    Tensor x = random_tensor(DType::kF32, {5, 3 * hd});
    Tensor f = random_tensor(DType::kF32, {hd / 2}, 0.5f);
    std::vector<int32_t> pos = {0, 3, 17, 1000, 40000};
    Tensor ref = copy_of(x), dx = gpu->upload(x);
    cpu::ref::rope(ref, 2, hd, pos, f);
    gpu->rope(dx, 2, hd, pos, gpu->upload(f));
    Tensor got = gpu->to_host(dx);
    // sin/cos of angles up to 2e4 rad differ by an ulp or two between libm and CUDA.
    EXPECT_LT(rel_error(got, ref), 1e-6) << "head_dim " << hd;
    EXPECT_EQ(got.data_as<float>()[2 * hd + 3], x.data_as<float>()[2 * hd + 3]) << "third head rotated";
    EXPECT_EQ(got.data_as<float>()[5], x.data_as<float>()[5]) << "position 0 is the identity";
    EXPECT_NE(got.data_as<float>()[4 * 3 * hd + 1], x.data_as<float>()[4 * 3 * hd + 1]);
  }
}

TEST_F(CudaOps, GatherRowsCopiesExactly) {
  Tensor x = random_tensor(DType::kF32, {9, 77});
  std::vector<int32_t> rows = {8, 0, 3, 3};
  auto cpu = make_cpu_backend(true);
  Tensor ref = poisoned({4, 77}), out = gpu->upload(poisoned({4, 77}));
  cpu->gather_rows(x, rows, ref);
  gpu->gather_rows(gpu->upload(x), rows, out);
  EXPECT_TRUE(same_bytes(gpu->to_host(out), ref));
  EXPECT_THROW(gpu->gather_rows(gpu->upload(x), {9}, out), std::logic_error);
}

TEST_F(CudaOps, MemoryAllocZeroedUploadRoundTrip) {
  for (int round = 0; round < 3; ++round) {
    // Fill an allocation, release it and allocate again: pooled memory must come back zeroed.
    {
      Tensor t = gpu->alloc(DType::kF32, {64, 1001});
      gpu->add(t, gpu->upload(random_tensor(DType::kF32, {64, 1001})));
    }
    Tensor z = gpu->to_host(gpu->alloc(DType::kF32, {64, 1001}));
    EXPECT_TRUE(std::all_of(z.data_as<float>(), z.data_as<float>() + z.numel(), [](float v) { return v == 0.0f; }));
  }
  Tensor h = random_tensor(DType::kBF16, {13, 29});
  Tensor d = gpu->upload(h);
  EXPECT_EQ(d.device().type, DeviceType::kCUDA);
  EXPECT_TRUE(same_bytes(gpu->to_host(d), h));
  EXPECT_GT(gpu->free_memory_bytes(), int64_t{0});
  EXPECT_THROW(make_cuda_backend(cuda_device_count()), Error);
  // Ops refuse host tensors instead of handing host pointers to a kernel.
  Tensor out = gpu->alloc(DType::kF32, {13, 29});
  EXPECT_THROW(gpu->add(out, random_tensor(DType::kF32, {13, 29})), std::logic_error);
}

struct AttnCase {
  int64_t heads, kv_heads, head_dim, block_size, window;
  DType kv_dtype;
  int64_t extra_context;  // added to every sequence's cached prefix: long contexts span many chunks
};

class CudaAttention : public CudaTest, public ::testing::WithParamInterface<AttnCase> {};

TEST_P(CudaAttention, MatchesReferenceOnMixedBatch) {
  const AttnCase c = GetParam();
  const int64_t D = c.head_dim, E = c.extra_context;
  // Three sequences in one step: a 9-token prefill chunk on top of a cached prefix, a fresh
  // 5-token prompt, and a single decode. Blocks are scattered and shuffled. Two rounds on the same
  // backend with different layouts, so a stale device copy of the metadata would show.
  for (int round = 0; round < 2; ++round) {
    std::vector<int32_t> nq = {9, 5, 1}, ctx = {static_cast<int32_t>(23 + E), 5, static_cast<int32_t>(31 + E + round)};
    const int64_t max_ctx = *std::max_element(ctx.begin(), ctx.end());
    const int64_t max_blocks = (max_ctx + c.block_size - 1) / c.block_size, num_blocks = 3 * max_blocks + 5;
    AttentionBatch b;
    b.num_seqs = 3;
    b.max_blocks = static_cast<int32_t>(max_blocks);
    b.query_start = {0};
    std::vector<int32_t> free_blocks(static_cast<size_t>(num_blocks));
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), rng());
    for (size_t s = 0; s < 3; ++s) {
      b.query_start.push_back(b.query_start.back() + nq[s]);
      b.context_lens.push_back(ctx[s]);
      for (int64_t i = 0; i < max_blocks; ++i) {
        b.block_tables.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      for (int32_t i = 0; i < nq[s]; ++i) {
        int64_t p = ctx[s] - nq[s] + i;
        b.slot_mapping.push_back(static_cast<int32_t>(
            b.block_tables[s * static_cast<size_t>(max_blocks) + static_cast<size_t>(p / c.block_size)] * c.block_size +
            p % c.block_size));
      }
    }
    const int64_t T = b.num_tokens();
    AttentionParams p{c.heads, c.kv_heads, D, 1.0f / std::sqrt(static_cast<float>(D)), c.window};
    Shape kv_shape{num_blocks, c.block_size, c.kv_heads, D};
    Tensor k = random_tensor(c.kv_dtype, kv_shape), v = random_tensor(c.kv_dtype, kv_shape);
    KvCacheLayer ref_cache{copy_of(k), copy_of(v), {}, {}}, gpu_cache{gpu->upload(k), gpu->upload(v), {}, {}};
    Tensor qkv = random_tensor(DType::kF32, {T, (c.heads + 2 * c.kv_heads) * D});
    Tensor ref = poisoned({T, c.heads * D}), out = gpu->upload(poisoned({T, c.heads * D}));
    cpu::ref::attention(qkv, ref_cache, b, p, ref);
    gpu->attention(gpu->upload(qkv), gpu_cache, b, p, out);
    EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-5) << "round " << round;
    EXPECT_TRUE(same_bytes(gpu->to_host(gpu_cache.k), ref_cache.k)) << "K cache, round " << round;
    EXPECT_TRUE(same_bytes(gpu->to_host(gpu_cache.v), ref_cache.v)) << "V cache, round " << round;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention,
                         ::testing::Values(AttnCase{4, 2, 16, 16, 0, DType::kF32, 0},
                                           AttnCase{6, 1, 24, 4, 0, DType::kF32, 0},
                                           AttnCase{5, 5, 20, 3, 0, DType::kF32, 0},
                                           AttnCase{8, 2, 32, 16, 7, DType::kF32, 0},
                                           AttnCase{4, 2, 64, 8, 0, DType::kBF16, 0},
                                           AttnCase{3, 1, 10, 5, 4, DType::kF16, 0},
                                           AttnCase{8, 2, 128, 16, 0, DType::kF32, 300},
                                           AttnCase{4, 4, 256, 7, 100, DType::kBF16, 250},
                                           AttnCase{2, 1, 80, 32, 0, DType::kF16, 129},
                                           AttnCase{2, 1, 320, 16, 0, DType::kF32, 70},
                                           AttnCase{3, 3, 36, 5, 9, DType::kBF16, 600}));

}  // namespace
}  // namespace redhare::cuda_test
