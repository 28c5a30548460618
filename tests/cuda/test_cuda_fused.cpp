// Backend::fused_linear on the GPU (the decode kernel with the norm and epilogue folded in, and
// the composed path for more rows) against the CPU reference composition of the plain ops:
// rms_norm, linear, then add or silu_mul; and the batch-1 bulk-copy kernel beside the register one.
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cuda/kernels.h"
#include "cuda_test_util.h"

namespace redhare::cuda_test {
namespace {

struct FusedCase {
  DType wtype;
  int64_t M, N, K;
  bool norm, bias;
  LinearOut mode;
};

class CudaFusedLinear : public CudaTest, public ::testing::WithParamInterface<FusedCase> {};

// fused_linear's result for case c against the reference composition (relative error).
double fused_error(Backend& gpu, const FusedCase& c) {
  const int64_t cols = c.mode == LinearOut::kSiluMul ? c.N / 2 : c.N;
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor nw = random_tensor(DType::kF32, {c.K}, 0.5f);
  Tensor w = random_tensor(c.wtype, {c.N, c.K}, 0.1f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor start = random_tensor(DType::kF32, {c.M, cols});  // what kAccumulate adds to

  Tensor xin = x;
  if (c.norm) {
    xin = Tensor::empty(DType::kF32, {c.M, c.K});
    cpu::ref::rms_norm(x, nw, 1e-5f, xin);
  }
  Tensor p = poisoned({c.M, c.N});
  cpu::ref::linear(xin, w, c.bias ? &b : nullptr, p);
  Tensor ref = copy_of(start);
  if (c.mode == LinearOut::kStore) ref = p;
  else if (c.mode == LinearOut::kAccumulate) cpu::ref::add(ref, p);
  else cpu::ref::silu_mul(p, ref);

  Tensor dnw = gpu.upload(nw), dw = gpu.upload(w), db = gpu.upload(b);
  Tensor out = gpu.upload(c.mode == LinearOut::kAccumulate ? start : poisoned({c.M, cols}));
  gpu.fused_linear(gpu.upload(x), c.norm ? &dnw : nullptr, 1e-5f, dw, c.bias ? &db : nullptr, c.mode, out);
  return rel_error(gpu.to_host(out), ref);
}

TEST_P(CudaFusedLinear, MatchesReferenceComposition) {
  const FusedCase c = GetParam();
  EXPECT_LT(fused_error(*gpu, c), 1e-5)
      << dtype_name(c.wtype) << " M=" << c.M << " N=" << c.N << " K=" << c.K << " mode " << static_cast<int>(c.mode);
}

// One activation row on sm_90+ takes the bulk-copy kernel where its row width is compiled
// (kernels_gemv_bulk.cu); with it turned off the register kernel takes the same products. Both
// must match the reference: widths on 8 and 7 consumer warps, more columns per block than ring
// stages (the ring wraps) and than it keeps sums for, fewer columns than blocks, an odd N (a
// two-column stage half filled), both block footprints (K = 16384 and SwiGLU at K = 8192: rings
// of 2 stages in the small one), every mode.
TEST_F(CudaTest, BulkGemvAndRegisterKernelMatchReference) {
  // 34000 columns: more than a block keeps before storing (kBulkMaxCols) on up to 132 SMs.
  const std::vector<std::pair<int64_t, int64_t>> nk = {
      {38, 4096}, {2640, 4096}, {2641, 4096}, {3960, 2048}, {600, 8192}, {660, 14336}, {300, 16384}, {34000, 2048}};
  for (bool bulk : {true, false}) {
    cuda::set_bulk_gemv_enabled(bulk);
    for (DType t : {DType::kBF16, DType::kF16})
      for (auto [N, K] : nk)
        for (LinearOut mode : {LinearOut::kStore, LinearOut::kAccumulate, LinearOut::kSiluMul}) {
          if (N > 10000 && (t != DType::kBF16 || mode == LinearOut::kAccumulate)) continue;  // time: one type
          if (N % 2 != 0 && mode == LinearOut::kSiluMul) continue;  // SwiGLU: gate and up halves
          const FusedCase c{t, 1, N, K, mode != LinearOut::kAccumulate, N % 3 == 0, mode};
          // The bulk-copy kernel twice: with the large block footprint (as after attention), then
          // the small one, whose rings hold different numbers of stages.
          if (bulk) cuda::bulk_gemv_after_attention();
          for (int launch = 0; launch < (bulk ? 2 : 1); ++launch)
            EXPECT_LT(fused_error(*gpu, c), 1e-5) << (bulk ? "bulk" : "register") << " kernel, " << dtype_name(t)
                                                  << " N=" << N << " K=" << K << " mode " << static_cast<int>(mode)
                                                  << " launch " << launch;
          // The kernel asked for ran (sm_90+, where the width is compiled).
          const bool ran = bulk && cuda::bulk_gemv_enabled() && cuda::bulk_gemv_width(K, 2, mode == LinearOut::kSiluMul);
          EXPECT_EQ(cuda::last_bulk_gemv_bytes(), ran ? 2 : 0) << dtype_name(t) << " N=" << N << " K=" << K;
        }
  }
  cuda::set_bulk_gemv_enabled(true);
}

// A decode layer's batch-1 products as a chain, each one's output the next one's input, launched
// without a host wait between: a = norm(h) Wa^T; h += a Wo^T; g = swiglu(norm(h) Wgu^T); h += g Wd^T.
struct ChainWeights {
  Tensor nw, wa, wo, wgu, wd;       // host copies
  Tensor dnw, dwa, dwo, dwgu, dwd;  // on the GPU
};

ChainWeights chain_weights(Backend& gpu, int64_t H, int64_t I) {
  ChainWeights c;
  c.nw = random_tensor(DType::kF32, {H}, 0.5f);
  c.wa = random_tensor(DType::kBF16, {H, H}, 0.02f);
  c.wo = random_tensor(DType::kBF16, {H, H}, 0.02f);
  c.wgu = random_tensor(DType::kBF16, {2 * I, H}, 0.02f);
  c.wd = random_tensor(DType::kBF16, {H, I}, 0.02f);
  c.dnw = gpu.upload(c.nw), c.dwa = gpu.upload(c.wa), c.dwo = gpu.upload(c.wo);
  c.dwgu = gpu.upload(c.wgu), c.dwd = gpu.upload(c.wd);
  return c;
}

void ref_chain_layer(Tensor& h, const ChainWeights& c) {
  const int64_t H = h.size(1), I = c.wd.size(1);
  Tensor xn = Tensor::empty(DType::kF32, {1, H}), a = Tensor::empty(DType::kF32, {1, H});
  Tensor p = Tensor::empty(DType::kF32, {1, H}), gu = Tensor::empty(DType::kF32, {1, 2 * I});
  Tensor g = Tensor::empty(DType::kF32, {1, I});
  cpu::ref::rms_norm(h, c.nw, 1e-5f, xn);
  cpu::ref::linear(xn, c.wa, nullptr, a);
  cpu::ref::linear(a, c.wo, nullptr, p);
  cpu::ref::add(h, p);
  cpu::ref::rms_norm(h, c.nw, 1e-5f, xn);
  cpu::ref::linear(xn, c.wgu, nullptr, gu);
  cpu::ref::silu_mul(gu, g);
  cpu::ref::linear(g, c.wd, nullptr, p);
  cpu::ref::add(h, p);
}

void gpu_chain_layer(Backend& gpu, Tensor& h, Tensor& a, Tensor& g, const ChainWeights& c) {
  gpu.fused_linear(h, &c.dnw, 1e-5f, c.dwa, nullptr, LinearOut::kStore, a);
  gpu.fused_linear(a, nullptr, 1e-5f, c.dwo, nullptr, LinearOut::kAccumulate, h);
  gpu.fused_linear(h, &c.dnw, 1e-5f, c.dwgu, nullptr, LinearOut::kSiluMul, g);
  gpu.fused_linear(g, nullptr, 1e-5f, c.dwd, nullptr, LinearOut::kAccumulate, h);
}

// The bulk-copy products' ring order (kernels.h: each ring fills once the previous product's
// copies on its SM are issued) changes when copies are issued, never a result: chains of
// dependent products, eagerly and replayed from a graph, have the same bits with it on and off
// and match the reference composition.
TEST_F(CudaTest, BulkChainRingOrderKeepsResults) {
  const int64_t H = 2048, I = 4096;  // widths the bulk-copy kernel compiles: K = 2048, 4096; SwiGLU 2048
  ASSERT_TRUE(cuda::bulk_gemv_width(H, 2, true) && cuda::bulk_gemv_width(I, 2, false));
  const ChainWeights c = chain_weights(*gpu, H, I);
  const Tensor h0 = random_tensor(DType::kF32, {1, H});
  constexpr int kLayers = 4;
  Tensor ref = copy_of(h0);
  for (int l = 0; l < kLayers; ++l) ref_chain_layer(ref, c);
  auto eager = [&] {
    Tensor h = gpu->upload(h0), a = gpu->upload(poisoned({1, H})), g = gpu->upload(poisoned({1, I}));
    for (int l = 0; l < kLayers; ++l) gpu_chain_layer(*gpu, h, a, g, c);
    return gpu->to_host(h);
  };
  auto replayed = [&] {
    Tensor h = gpu->upload(h0), a = gpu->upload(poisoned({1, H})), g = gpu->upload(poisoned({1, I}));
    gpu->graph_capture_begin();
    for (int l = 0; l < kLayers; ++l) gpu_chain_layer(*gpu, h, a, g, c);
    gpu->graph_capture_end(11);
    EXPECT_TRUE(gpu->graph_replay(11));
    Tensor out = gpu->to_host(h);
    gpu->graph_clear();
    return out;
  };
  cuda::set_bulk_ring_order_enabled(false);
  const Tensor off = eager();
  cuda::set_bulk_ring_order_enabled(true);
  const Tensor on = eager();
  EXPECT_LT(rel_error(on, ref), 1e-4);
  EXPECT_TRUE(same_bytes(on, off)) << "the ring order changed results";
  if (gpu->supports_graphs()) {
    EXPECT_TRUE(same_bytes(replayed(), on)) << "graph replay";
  }
}

// Kernel attributes belong to a device (kernels.h, once_per_device): in a process driving two GPUs
// the bulk-copy product (a 114 KB block) and the staged decode GEMV run on the second device after
// the first, and on the first again.
TEST(CudaMultiDevice, ProductsRunOnEveryDevice) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "fewer than two CUDA devices";
  for (int device : {0, 1, 0}) {
    auto g = make_cuda_backend(device);
    for (const FusedCase& c : {FusedCase{DType::kBF16, 1, 2640, 4096, true, false, LinearOut::kStore},
                               FusedCase{DType::kBF16, 1, 2640, 4096, true, false, LinearOut::kSiluMul},
                               FusedCase{DType::kF16, 2, 256, 4096, true, true, LinearOut::kAccumulate}})
      EXPECT_LT(fused_error(*g, c), 1e-5) << "device " << device << " M=" << c.M;
  }
}

std::vector<FusedCase> fused_cases() {
  std::vector<FusedCase> v;
  // M 1-4 run the fused decode kernel; 5 and 9 the composed path. K: scalar-only (67), one
  // unrolled round plus remainder (2056), and a staged normalized row of 4096 floats per M.
  const std::vector<std::pair<int64_t, int64_t>> nk = {{38, 67}, {130, 2056}, {256, 4096}};
  for (DType t : {DType::kBF16, DType::kF16, DType::kF32})
    for (int64_t M : {1, 2, 4, 5, 9})
      for (auto [N, K] : nk)
        for (LinearOut mode : {LinearOut::kStore, LinearOut::kAccumulate, LinearOut::kSiluMul})
          v.push_back({t, M, N, K, mode != LinearOut::kAccumulate, (M + N) % 3 == 0, mode});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaFusedLinear, ::testing::ValuesIn(fused_cases()),
                         [](const ::testing::TestParamInfo<FusedCase>& p) {
                           const FusedCase& c = p.param;
                           const char* mode = c.mode == LinearOut::kStore ? "store" : c.mode == LinearOut::kAccumulate ? "acc" : "silu";
                           return std::string(dtype_name(c.wtype)) + "_M" + std::to_string(c.M) + "_N" +
                                  std::to_string(c.N) + "_K" + std::to_string(c.K) + "_" + mode +
                                  (c.norm ? "_norm" : "") + (c.bias ? "_bias" : "");
                         });

}  // namespace
}  // namespace redhare::cuda_test
