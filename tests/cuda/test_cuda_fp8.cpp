// FP8 (kF8B128) weights on the GPU: the block-quantized products against the CPU reference at
// odd sizes (decode kernel and tiles; in tensor-core mode the W8A16 decode kernel and the W8A16
// mma kernel, every fused_linear mode; decode steps replayed from graphs under PDL), the W8A8 path (activation quantization bit for bit, products
// against a host reference that quantizes as the kernel does), the
// infer.raise_lower_bit_float_to values, and a converted model on the GPU against the CPU backend.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/ops.h"
#include "backends/cpu/quant.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gemm_lt.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "cuda_test_util.h"
#include "engine/generate.h"
#include "formats/safetensors.h"
#include "models/fp8.h"

namespace redhare::cuda_test {
namespace {

// Random finite e4m3 bytes [N, K] with random scales in [5e-4, 5e-3) of the given shape
// (pack_fp8_weight's forms), packed as redhare keeps FP8 weights.
Tensor random_fp8_scaled(int64_t N, int64_t K, const Shape& scale_shape, const std::vector<int64_t>& block) {
  Tensor w = Tensor::empty(DType::kF8E4M3, {N, K});
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < w.numel(); ++i) {
    int v = byte(rng());
    if ((v & 0x7F) == 0x7F) v = 0;
    static_cast<uint8_t*>(w.data())[i] = static_cast<uint8_t>(v);
  }
  int64_t count = 1;
  for (int64_t d : scale_shape) count *= d;
  std::vector<float> sc(static_cast<size_t>(count));
  std::uniform_real_distribution<float> s(0.0005f, 0.005f);
  for (float& v : sc) v = s(rng());
  return pack_fp8_weight(w, Tensor::from_f32(sc, scale_shape), block, "random");
}

// Per-channel scales.
Tensor random_fp8(int64_t N, int64_t K) { return random_fp8_scaled(N, K, {N}, {}); }

// One scale per 128 x 128 block (as redhare convert and DeepSeek-V3 write them).
Tensor random_fp8_blocks(int64_t N, int64_t K) {
  return random_fp8_scaled(N, K, {(N + 127) / 128, K / 128}, {128, 128});
}

constexpr int64_t kFp8WidenRows = 128;  // cuda::kFp8WidenRows

struct Fp8Case {
  int64_t M, N, K;
};

class CudaFp8Linear : public CudaTest, public ::testing::WithParamInterface<Fp8Case> {};

TEST_P(CudaFp8Linear, MatchesReference) {
  const Fp8Case c = GetParam();
  Tensor w = random_fp8(c.N, c.K);
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor ref = poisoned({c.M, c.N});
  cpu::ref::linear(x, w, &b, ref);
  Tensor dw = gpu->upload(w), db = gpu->upload(b), out = gpu->upload(poisoned({c.M, c.N}));
  gpu->linear(gpu->upload(x), dw, &db, out);
  EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-5) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaFp8Linear,
                         ::testing::Values(Fp8Case{1, 37, 384}, Fp8Case{3, 300, 128}, Fp8Case{4, 9000, 256},
                                           Fp8Case{5, 37, 384}, Fp8Case{7, 9000, 256}, Fp8Case{8, 300, 1024},
                                           Fp8Case{9, 200, 384}, Fp8Case{70, 130, 640}, Fp8Case{1, 64, 4096}),
                         [](const ::testing::TestParamInfo<Fp8Case>& p) {
                           std::string name = "M";  // built with += (GCC 12 warns on + chains)
                           name += std::to_string(p.param.M);
                           name += "_N";
                           name += std::to_string(p.param.N);
                           name += "_K";
                           name += std::to_string(p.param.K);
                           return name;
                         });

TEST_F(CudaFp8Linear, WeightsComeBackFromTheirDeviceLayoutUnchanged) {
  // upload() re-lays FP8 weights for the device (values, then a block-major scale table) and
  // to_host() lays them out again: the round trip gives the host blocks back byte for byte, and a
  // single row or block is no special case.
  for (const auto& [N, K] : {std::pair<int64_t, int64_t>{300, 384}, {1, 128}, {7, 4096}}) {
    const Tensor w = random_fp8(N, K);
    EXPECT_TRUE(same_bytes(gpu->to_host(gpu->upload(w)), w)) << "N=" << N << " K=" << K;
    const Tensor wb = random_fp8_blocks(N, K);  // its layout also holds the 128 x 128 block table
    EXPECT_TRUE(same_bytes(gpu->to_host(gpu->upload(wb)), wb)) << "blocks N=" << N << " K=" << K;
  }
}

TEST_F(CudaFp8Linear, FusedDecodeProductsMatchTheComposition) {
  // fused_linear on FP8 weights at decode sizes: norm folded in (staged), residual add, SiLU.
  for (int64_t M : {1, 4, 6, 8}) {
    for (LinearOut mode : {LinearOut::kStore, LinearOut::kAccumulate, LinearOut::kSiluMul}) {
      const int64_t N = 192, K = 1024, cols = mode == LinearOut::kSiluMul ? N / 2 : N;
      const bool norm = mode != LinearOut::kAccumulate;
      Tensor w = random_fp8(N, K);
      Tensor x = random_tensor(DType::kF32, {M, K});
      Tensor nw = random_tensor(DType::kF32, {K}, 0.5f);
      Tensor b = random_tensor(DType::kF32, {N});
      Tensor start = random_tensor(DType::kF32, {M, cols});
      Tensor xin = x;
      if (norm) {
        xin = Tensor::empty(DType::kF32, {M, K});
        cpu::ref::rms_norm(x, nw, 1e-5f, xin);
      }
      Tensor p = poisoned({M, N});
      cpu::ref::linear(xin, w, &b, p);
      Tensor ref = copy_of(start);
      if (mode == LinearOut::kStore) ref = p;
      else if (mode == LinearOut::kAccumulate) cpu::ref::add(ref, p);
      else cpu::ref::silu_mul(p, ref);
      Tensor dnw = gpu->upload(nw), db = gpu->upload(b);
      Tensor out = gpu->upload(mode == LinearOut::kAccumulate ? start : poisoned({M, cols}));
      gpu->fused_linear(gpu->upload(x), norm ? &dnw : nullptr, 1e-5f, gpu->upload(w), &db, mode, out);
      EXPECT_LT(rel_error(gpu->to_host(out), ref), 1e-5) << "M=" << M << " mode " << static_cast<int>(mode);
    }
  }
}

// Tensor-core mode, more than four rows: the W8A16 tensor-core kernel below kFp8WidenRows rows,
// through fused_linear with every mode, bias and norm, and through linear; from kFp8WidenRows the
// weights widened to bf16 for cuBLASLt.
struct Fp8TcCase {
  int64_t M, N, K;
  LinearOut mode;
  bool bias, norm;
  bool block_scales = false;  // weights with one scale per 128 x 128 block (random_fp8_blocks)
  bool bulk = false;          // launch_bulk_gemv_fp8 itself rather than through the backend
};

class CudaFp8TensorCore : public CudaTest, public ::testing::WithParamInterface<Fp8TcCase> {};

void check_fp8_tensor_core(const Fp8TcCase& c) {
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = LowerBitFloat::kBf16;  // W8A16 only
  auto tc = make_cuda_backend(0, o);
  const int64_t cols = c.mode == LinearOut::kSiluMul ? c.N / 2 : c.N;
  Tensor w = c.block_scales ? random_fp8_blocks(c.N, c.K) : random_fp8(c.N, c.K);
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor nw = random_tensor(DType::kF32, {c.K}, 0.5f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor start = random_tensor(DType::kF32, {c.M, cols});
  // Reference: the activations as the kernels see them (normalized in f32 as the norm op rounds,
  // then rounded to bf16 for the tensor-core kernels; the bulk-copy kernel keeps them in f32),
  // times the exactly dequantized weights, summed in f32 on the CPU.
  const bool silu = c.mode == LinearOut::kSiluMul;
  // One row on block-scaled weights that the backend prefers on the bulk-copy kernel runs it
  // (sm_90+).
  const bool bulk = c.bulk || (c.M == 1 && c.block_scales && cuda::bulk_gemv_enabled() &&
                               cuda::bulk_gemv_fp8_preferred(c.N, c.K, silu));
  Tensor xin = x;
  if (c.norm) {
    xin = Tensor::empty(DType::kF32, {c.M, c.K});
    cpu::ref::rms_norm(x, nw, 1e-5f, xin);
  }
  auto round_bf16 = [](std::vector<float> v) {
    for (float& f : v) f = bf16_to_f32(f32_to_bf16(f));
    return v;
  };
  if (!bulk) xin = Tensor::from_f32(round_bf16(xin.to_f32_vector()), {c.M, c.K});
  Tensor wref = w;  // the mma kernel: exact weights
  if (c.M >= kFp8WidenRows) {
    std::vector<float> wf(static_cast<size_t>(c.N * c.K));
    for (int64_t r = 0; r < c.N; ++r)
      dequantize_row_ref(DType::kF8B128,
                         static_cast<const uint8_t*>(w.data()) + r * dtype_bytes(DType::kF8B128, c.K),
                         wf.data() + r * c.K, c.K);
    wref = Tensor::from_f32(round_bf16(wf), {c.N, c.K});
  }
  Tensor p = poisoned({c.M, c.N});
  cpu::ref::linear(xin, wref, c.bias ? &b : nullptr, p);
  Tensor ref = copy_of(start);
  if (c.mode == LinearOut::kStore) ref = p;
  else if (c.mode == LinearOut::kAccumulate) cpu::ref::add(ref, p);
  else cpu::ref::silu_mul(p, ref);
  Tensor dnw = tc->upload(nw), db = tc->upload(b), dw = tc->upload(w);
  Tensor out = tc->upload(c.mode == LinearOut::kAccumulate ? start : poisoned({c.M, cols}));
  if (c.bulk) {
    // The kernel at any size it is compiled for (the backend takes it for large products only).
    if (!cuda::bulk_gemv_enabled()) GTEST_SKIP() << "the bulk-copy kernel runs on sm_90 and later only";
    ASSERT_TRUE(cuda::bulk_gemv_width(c.K, 1, silu)) << "K=" << c.K << " is not compiled";
    Tensor dx = tc->upload(x);
    // Twice: with the large block footprint (as after attention), then the small one, whose rings
    // hold different numbers of stages (kernels_gemv_bulk.cu).
    cuda::bulk_gemv_after_attention();
    for (int launch = 0; launch < 2; ++launch) {
      if (launch == 1) {
        EXPECT_LT(rel_error(tc->to_host(out), ref), 1e-5) << "large footprint, N=" << c.N << " K=" << c.K;
        out = tc->upload(c.mode == LinearOut::kAccumulate ? start : poisoned({c.M, cols}));
      }
      ASSERT_TRUE(cuda::launch_bulk_gemv_fp8(dx.data_as<float>(), c.norm ? dnw.data_as<float>() : nullptr, 1e-5f,
                                             dw.data(), c.bias ? db.data_as<float>() : nullptr, c.M, c.N, c.K,
                                             static_cast<cuda::LinearMode>(static_cast<int>(c.mode)),
                                             out.data_as<float>(), nullptr));
      RH_CUDA(cudaDeviceSynchronize());
    }
  } else {
    if (c.mode == LinearOut::kStore && !c.norm) tc->linear(tc->upload(x), dw, c.bias ? &db : nullptr, out);
    else tc->fused_linear(tc->upload(x), c.norm ? &dnw : nullptr, 1e-5f, dw, c.bias ? &db : nullptr, c.mode, out);
    EXPECT_EQ(cuda::last_bulk_gemv_bytes(), bulk ? 1 : 0) << "M=" << c.M << " N=" << c.N << " K=" << c.K;
  }
  // The products of bf16 activations and e4m3 (or, widened, bf16) weights are exact in f32; what
  // differs from the reference is the f32 summation (tensor-core order, one rounding per 128-value
  // block when its scale is applied, split-K partials added last; the bulk-copy kernel's norm
  // scale applied to the sums): ~1e-7 relative per step, well under 1e-5 over K <= 4096. A weight
  // rounded to bf16 where it should not be (2^-9 relative), or an activation rounded where it
  // should not be or left unrounded where it should be, would show as ~1e-3.
  EXPECT_LT(rel_error(tc->to_host(out), ref), 1e-5)
      << "M=" << c.M << " N=" << c.N << " K=" << c.K << " mode " << static_cast<int>(c.mode) << " bias " << c.bias
      << " norm " << c.norm;
}

TEST_P(CudaFp8TensorCore, MatchesTheKernelsActivationsTimesExactWeights) { check_fp8_tensor_core(GetParam()); }

// With the shared memory of smaller GPUs (sm_86/sm_89: 99 KB, A100: 163 KB) the tiles that would
// not fit give way to the 32-row tile, with the same results.
TEST_F(CudaFp8Linear, SmallerGpusTakeTilesThatFit) {
  struct Restore {
    ~Restore() { cuda::set_max_block_smem_for_tests(0); }
  } restore;
  for (int limit_kb : {99, 163}) {
    cuda::set_max_block_smem_for_tests(limit_kb * 1024);
    for (const Fp8TcCase& c : {Fp8TcCase{5, 200, 128, LinearOut::kStore, true, false},
                               Fp8TcCase{17, 448, 1024, LinearOut::kSiluMul, false, true},
                               Fp8TcCase{40, 384, 512, LinearOut::kAccumulate, true, false},
                               Fp8TcCase{100, 200, 4096, LinearOut::kStore, true, true}})
      check_fp8_tensor_core(c);
  }
}

constexpr LinearOut kS = LinearOut::kStore, kA = LinearOut::kAccumulate, kU = LinearOut::kSiluMul;

std::string fp8_tc_case_name(const ::testing::TestParamInfo<Fp8TcCase>& p) {
  std::string name = "M";
  name += std::to_string(p.param.M);
  name += "_N";
  name += std::to_string(p.param.N);
  name += "_K";
  name += std::to_string(p.param.K);
  name += p.param.mode == kS ? "_store" : p.param.mode == kA ? "_add" : "_silu";
  if (p.param.bias) name += "_bias";
  if (p.param.norm) name += "_norm";
  if (p.param.block_scales) name += "_blocks";
  if (p.param.bulk) name += "_bulk";
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaFp8TensorCore,
    ::testing::Values(Fp8TcCase{5, 200, 128, kS, true, false}, Fp8TcCase{7, 448, 4096, kU, false, true},
                      Fp8TcCase{8, 384, 1024, kA, true, false}, Fp8TcCase{6, 200, 4096, kS, true, true},
                      Fp8TcCase{9, 200, 128, kS, false, false}, Fp8TcCase{13, 448, 640, kU, true, true},
                      Fp8TcCase{17, 200, 4096, kA, true, false}, Fp8TcCase{33, 130, 1024, kS, true, true},
                      Fp8TcCase{33, 448, 2048, kU, false, false}, Fp8TcCase{64, 384, 512, kA, false, true},
                      Fp8TcCase{100, 200, 128, kS, true, false}, Fp8TcCase{100, 448, 4096, kU, true, true},
                      Fp8TcCase{127, 2120, 1024, kA, true, false}, Fp8TcCase{129, 448, 384, kA, true, true},
                      Fp8TcCase{257, 448, 4096, kS, false, false},
                      Fp8TcCase{257, 200, 1024, kU, true, false}, Fp8TcCase{300, 2120, 256, kA, true, false},
                      Fp8TcCase{300, 2120, 256, kU, false, true}, Fp8TcCase{520, 136, 640, kS, true, true}),
    fp8_tc_case_name);

// One row on block-scaled weights: the bulk-copy kernel on sm_90+ (kernels_gemv_bulk.cu), its
// activations in f32 (the reference's unrounded), launched directly at every width it is compiled for (7 and 8
// consumer warps, one to four words per thread, one to four columns to a stage), with both block
// footprints, and every mode. N that leave a block's last stage part-filled (131, 129, 38, 4242:
// three, one or two of a four-column stage; odd N for two-column stages), fewer columns than SMs
// (38), and more
// columns per block than it keeps sums for (kBulkMaxCols; 40000 and 36004 on a 132-SM GPU) so the
// sums are stored in chunks; N not a multiple of 128 (the last rows' scales in a part-filled
// block). Then through the backend: a product it gives the kernel (N, K >= 4096) and one it does
// not (N = 2048), a SwiGLU product of an odd number of columns (its two-column stages would
// straddle the up rows' 128-row blocks: declined), and a width the kernel lacks (K = 640).
constexpr bool kBlocks = true, kDirect = true;
INSTANTIATE_TEST_SUITE_P(
    Bulk, CudaFp8TensorCore,
    ::testing::Values(Fp8TcCase{1, 131, 4096, kS, true, true, kBlocks, kDirect},
                      Fp8TcCase{1, 129, 4096, kA, false, true, kBlocks, kDirect},
                      Fp8TcCase{1, 38, 4096, kS, false, false, kBlocks, kDirect},
                      Fp8TcCase{1, 4242, 4096, kA, true, false, kBlocks, kDirect},
                      Fp8TcCase{1, 2060, 4096, kU, false, true, kBlocks, kDirect},
                      Fp8TcCase{1, 300, 7168, kU, true, true, kBlocks, kDirect},
                      Fp8TcCase{1, 903, 7168, kS, false, false, kBlocks, kDirect},
                      Fp8TcCase{1, 1030, 8192, kA, false, true, kBlocks, kDirect},
                      Fp8TcCase{1, 2052, 8192, kU, true, true, kBlocks, kDirect},
                      Fp8TcCase{1, 770, 12288, kS, true, false, kBlocks, kDirect},
                      Fp8TcCase{1, 1100, 14336, kA, true, false, kBlocks, kDirect},
                      Fp8TcCase{1, 40000, 4096, kS, false, true, kBlocks, kDirect},
                      Fp8TcCase{1, 36004, 4096, kU, true, false, kBlocks, kDirect},
                      Fp8TcCase{1, 4096, 4096, kA, true, false, kBlocks}, Fp8TcCase{1, 2048, 8192, kS, false, true, kBlocks},
                      Fp8TcCase{1, 8196, 4096, kU, true, true, kBlocks},
                      Fp8TcCase{1, 260, 640, kS, true, true, kBlocks}),
    fp8_tc_case_name);

// Tensor-core mode, decode sizes (M <= cuda::kFp8DecodeMaxRows): the W8A16 decode kernel, same
// numerics as the tiles, so the same reference. Odd N (tiles of 16 rows, 8 gate + 8 up in SiLU
// mode, partly past the end), every mode, bias and norm, K from one block (one warp of a block
// with rounds) to the 8B down product's 14336 (warps with 3 and 4 rounds per tile), odd numbers
// of FP8 blocks (a round of one block), and N large enough that blocks take several tiles one
// after another (at K 128, 4096 and 14336 on a 132-SM GPU).
INSTANTIATE_TEST_SUITE_P(
    Decode, CudaFp8TensorCore,
    ::testing::Values(Fp8TcCase{1, 37, 128, kS, false, false}, Fp8TcCase{1, 37, 384, kS, true, true},
                      Fp8TcCase{2, 74, 384, kU, true, true}, Fp8TcCase{3, 300, 128, kA, true, false},
                      Fp8TcCase{4, 1030, 4096, kU, false, true}, Fp8TcCase{1, 2120, 4096, kS, true, true},
                      Fp8TcCase{2, 2062, 4096, kA, false, false}, Fp8TcCase{3, 4242, 4096, kU, true, true},
                      Fp8TcCase{4, 2120, 4096, kA, true, true}, Fp8TcCase{1, 1100, 14336, kA, true, false},
                      Fp8TcCase{4, 1100, 14336, kS, false, true}, Fp8TcCase{3, 2202, 14336, kU, true, false},
                      Fp8TcCase{2, 17000, 128, kS, true, false}, Fp8TcCase{4, 17002, 128, kU, false, true},
                      Fp8TcCase{1, 9, 256, kA, false, true}, Fp8TcCase{4, 8, 640, kU, true, false}),
    fp8_tc_case_name);

TEST_F(CudaFp8Linear, SwigluMlpIsBitwiseTheComposition) {
  // swiglu_mlp on FP8 weights in tensor-core mode (W8A16): from kFp8WidenRows rows both weights
  // widened to bf16 and SiLU writing the down product's bf16 input; below, the FP8 kernels
  // through the composition. Against Backend::swiglu_mlp's two fused_linear calls.
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = LowerBitFloat::kBf16;
  auto tc = make_cuda_backend(0, o);
  const int64_t H = 384, I = 256;
  const Tensor gu = tc->upload(random_fp8(2 * I, H)), down = tc->upload(random_fp8(H, I));
  const Tensor nw = tc->upload(random_tensor(DType::kF32, {H}, 0.5f));
  for (int64_t M : {int64_t{5}, kFp8WidenRows, int64_t{300}}) {
    const Tensor start = random_tensor(DType::kF32, {M, H});
    Tensor r1 = tc->upload(start), r2 = tc->upload(start);
    Tensor a1 = tc->upload(poisoned({M, I})), a2 = tc->upload(poisoned({M, I}));
    tc->swiglu_mlp(r1, nw, 1e-5f, gu, down, a1);
    tc->Backend::swiglu_mlp(r2, nw, 1e-5f, gu, down, a2);
    EXPECT_TRUE(same_bytes(tc->to_host(r1), tc->to_host(r2))) << "M=" << M;
    EXPECT_FALSE(same_bytes(tc->to_host(r1), start)) << "M=" << M << ": nothing added";
  }
}

TEST_F(CudaFp8Linear, DecodeProductHoldsRowsOfAnyMagnitude) {
  // Each activation row is staged with its own power-of-two factor: rows 2^40 apart, a row whose
  // values spread over 2^±20, and an all-zero row each match the reference row by row.
  CudaOptions o;
  o.tensor_cores = true;
  auto tc = make_cuda_backend(0, o);
  for (const auto& [N, K, mode, norm] : {std::tuple<int64_t, int64_t, LinearOut, bool>{200, 4096, kS, false},
                                         {300, 14336, kA, false}, {200, 384, kU, true}, {136, 4096, kS, true}}) {
    const int64_t M = 4, cols = mode == kU ? N / 2 : N;
    std::vector<float> xv = random_tensor(DType::kF32, {M, K}).to_f32_vector();
    std::uniform_real_distribution<float> e(-20.0f, 20.0f);
    for (int64_t k = 0; k < K; ++k) {
      xv[static_cast<size_t>(k)] *= std::exp2(20.0f);
      xv[static_cast<size_t>(K + k)] *= std::exp2(-20.0f);
      xv[static_cast<size_t>(2 * K + k)] *= std::exp2(e(rng()));
      xv[static_cast<size_t>(3 * K + k)] = 0.0f;
    }
    Tensor x = Tensor::from_f32(xv, {M, K});
    Tensor w = random_fp8(N, K);
    Tensor nw = random_tensor(DType::kF32, {K}, 0.5f);
    Tensor start = random_tensor(DType::kF32, {M, cols}, 1e-3f);
    Tensor xin = x;
    if (norm) {
      xin = Tensor::empty(DType::kF32, {M, K});
      cpu::ref::rms_norm(x, nw, 1e-5f, xin);
    }
    std::vector<float> xr = xin.to_f32_vector();
    for (float& f : xr) f = bf16_to_f32(f32_to_bf16(f));
    Tensor p = poisoned({M, N});
    cpu::ref::linear(Tensor::from_f32(xr, {M, K}), w, nullptr, p);
    Tensor ref = copy_of(start);
    if (mode == kS) ref = p;
    else if (mode == kA) cpu::ref::add(ref, p);
    else cpu::ref::silu_mul(p, ref);
    Tensor dnw = tc->upload(nw);
    Tensor out = tc->upload(mode == kA ? start : poisoned({M, cols}));
    tc->fused_linear(tc->upload(x), norm ? &dnw : nullptr, 1e-5f, tc->upload(w), nullptr, mode, out);
    const Tensor got = tc->to_host(out);
    for (int64_t m = 0; m < M; ++m) {
      std::vector<float> a(got.data_as<float>() + m * cols, got.data_as<float>() + (m + 1) * cols);
      std::vector<float> b(ref.data_as<float>() + m * cols, ref.data_as<float>() + (m + 1) * cols);
      EXPECT_LT(rel_error(Tensor::from_f32(a, {cols}), Tensor::from_f32(b, {cols})), 1e-5)
          << "row " << m << " N=" << N << " K=" << K << " mode " << static_cast<int>(mode) << " norm " << norm;
    }
  }
}

// ---- W8A8 ----

// The activations as the W8A8 kernels see them: RMS-normalized when nw is set (f32, as the
// device rounds it: inverse from a double sum of squares, then nw * (x * inv)), then per row and
// 128-value block scale = amax / 448 and e4m3(value / scale), nearest even, saturating. Packed in
// the kF8B128 layout (e4m3 bytes, f32 scale, zero padding).
std::vector<uint8_t> quantize_activations_ref(const Tensor& x, const Tensor* nw, float eps) {
  const int64_t M = x.size(0), K = x.size(1), blocks = K / 128;
  const std::vector<float> xv = x.to_f32_vector();
  const std::vector<float> wv = nw ? nw->to_f32_vector() : std::vector<float>();
  std::vector<uint8_t> out(static_cast<size_t>(M * blocks * 144), 0);
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    const float* r = xv.data() + m * K;
    float inv = 1.0f;
    if (nw) {
      double ss = 0;
      for (int64_t k = 0; k < K; ++k) ss += static_cast<double>(r[k]) * r[k];
      inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(K) + eps));
    }
    for (int64_t k = 0; k < K; ++k) row[static_cast<size_t>(k)] = nw ? wv[static_cast<size_t>(k)] * (r[k] * inv) : r[k];
    for (int64_t kb = 0; kb < blocks; ++kb) {
      uint8_t* blk = out.data() + (m * blocks + kb) * 144;
      float amax = 0.0f;
      for (int64_t k = 0; k < 128; ++k) amax = std::max(amax, std::fabs(row[static_cast<size_t>(kb * 128 + k)]));
      const float scale = amax / 448.0f;
      for (int64_t k = 0; k < 128; ++k)
        blk[k] = scale > 0.0f ? f32_to_f8e4m3(row[static_cast<size_t>(kb * 128 + k)] / scale) : 0;
      std::memcpy(blk + 128, &scale, 4);
    }
  }
  return out;
}

// cuBLASLt's block-scaled FP8 product (Hopper): where it is missing, fp8 runs W8A16 and these
// tests have nothing to check.
bool w8a8_device() { return cuda::fp8_w8a8_supported(); }

TEST_F(CudaFp8Linear, ActivationQuantizationMatchesTheHostBitForBit) {
  if (!w8a8_device()) GTEST_SKIP() << "no block-scaled FP8 product in cuBLASLt on this GPU";
  for (const auto& [M, K, norm] : {std::tuple<int64_t, int64_t, bool>{5, 128, false}, {17, 4096, true},
                                  {33, 1152, false}, {3, 640, true}}) {
    // Spread magnitudes: a few blocks all zero, some values far past 448 times the block's others.
    std::vector<float> xv = random_tensor(DType::kF32, {M, K}).to_f32_vector();
    std::uniform_real_distribution<float> e(-12.0f, 12.0f);
    for (float& v : xv) v *= std::exp2(e(rng()));
    for (int64_t k = 0; k < 128; ++k) xv[static_cast<size_t>(K + k)] = 0.0f;  // row 1, block 0
    Tensor x = Tensor::from_f32(xv, {M, K});
    Tensor nw = random_tensor(DType::kF32, {K}, 0.5f);
    const std::vector<uint8_t> ref = quantize_activations_ref(x, norm ? &nw : nullptr, 1e-5f);
    // Into rows padded to a multiple of 16, poisoned first: values [rows, K], scales [K / 128, rows],
    // the padding rows zero.
    const int64_t rows = (M + 15) / 16 * 16, KB = K / 128;
    Tensor dx = gpu->upload(x), dnw = gpu->upload(nw);
    Tensor dq = gpu->alloc(DType::kU8, {rows * K}), ds = gpu->alloc(DType::kF32, {KB * rows});
    ASSERT_EQ(cudaMemset(dq.data(), 0x5A, static_cast<size_t>(rows * K)), cudaSuccess);
    ASSERT_EQ(cudaMemset(ds.data(), 0x5A, static_cast<size_t>(KB * rows * 4)), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cuda::launch_fp8_quantize_activations(dx.data_as<float>(), norm ? dnw.data_as<float>() : nullptr, 1e-5f, M, rows,
                                          K, dq.data(), ds.data_as<float>(), nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> q(static_cast<size_t>(rows * K));
    std::vector<float> sc(static_cast<size_t>(KB * rows));
    ASSERT_EQ(cudaMemcpy(q.data(), dq.data(), q.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(sc.data(), ds.data(), sc.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    int64_t diff = 0;
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t kb = 0; kb < KB; ++kb) {
        float want_scale = 0.0f;
        const uint8_t* want = nullptr;
        if (m < M) {
          want = ref.data() + (m * KB + kb) * 144;
          std::memcpy(&want_scale, want + 128, 4);
        }
        for (int64_t k = 0; k < 128; ++k)
          diff += q[static_cast<size_t>(m * K + kb * 128 + k)] != (want ? want[k] : 0);
        const float got_scale = sc[static_cast<size_t>(kb * rows + m)];
        diff += std::memcmp(&got_scale, &want_scale, 4) != 0;
      }
    EXPECT_EQ(diff, 0) << "M=" << M << " K=" << K << " norm " << norm << ": " << diff << " values or scales differ";
  }
}

class CudaFp8W8A8 : public CudaTest, public ::testing::WithParamInterface<Fp8TcCase> {};

TEST_P(CudaFp8W8A8, MatchesQuantizedActivationsTimesExactWeights) {
  if (!w8a8_device()) GTEST_SKIP() << "no block-scaled FP8 product in cuBLASLt on this GPU";
  const Fp8TcCase c = GetParam();
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = LowerBitFloat::kFp8;
  auto tc = make_cuda_backend(0, o);
  const int64_t cols = c.mode == LinearOut::kSiluMul ? c.N / 2 : c.N, blocks = c.K / 128;
  Tensor w = c.block_scales ? random_fp8_blocks(c.N, c.K) : random_fp8(c.N, c.K);
  Tensor x = random_tensor(DType::kF32, {c.M, c.K});
  Tensor nw = random_tensor(DType::kF32, {c.K}, 0.5f);
  Tensor b = random_tensor(DType::kF32, {c.N});
  Tensor start = random_tensor(DType::kF32, {c.M, cols});
  // Reference in double: per 128-value block, the e4m3 activations times the e4m3 weights, times
  // both block scales, summed over blocks.
  const std::vector<uint8_t> qa = quantize_activations_ref(x, c.norm ? &nw : nullptr, 1e-5f);
  const auto* qw = static_cast<const uint8_t*>(w.data());
  const int64_t row_bytes = dtype_bytes(DType::kF8B128, c.K);
  ASSERT_EQ(row_bytes, blocks * 144);
  std::vector<float> p(static_cast<size_t>(c.M * c.N));
  const std::vector<float> bias = b.to_f32_vector();
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double sum = 0;
      for (int64_t kb = 0; kb < blocks; ++kb) {
        const uint8_t* ab = qa.data() + m * row_bytes + kb * 144;
        const uint8_t* wb = qw + n * row_bytes + kb * 144;
        float as = 0, ws = 0;
        std::memcpy(&as, ab + 128, 4);
        std::memcpy(&ws, wb + 128, 4);
        double d = 0;
        for (int k = 0; k < 128; ++k) d += static_cast<double>(f8e4m3_to_f32(ab[k])) * f8e4m3_to_f32(wb[k]);
        sum += d * as * ws;
      }
      if (c.bias) sum += bias[static_cast<size_t>(n)];
      p[static_cast<size_t>(m * c.N + n)] = static_cast<float>(sum);
    }
  Tensor pt = Tensor::from_f32(p, {c.M, c.N});
  Tensor ref = copy_of(start);
  if (c.mode == LinearOut::kStore) ref = pt;
  else if (c.mode == LinearOut::kAccumulate) cpu::ref::add(ref, pt);
  else cpu::ref::silu_mul(pt, ref);
  Tensor dnw = tc->upload(nw), db = tc->upload(b), dw = tc->upload(w);
  Tensor out = tc->upload(c.mode == LinearOut::kAccumulate ? start : poisoned({c.M, cols}));
  if (c.mode == LinearOut::kStore && !c.norm) tc->linear(tc->upload(x), dw, c.bias ? &db : nullptr, out);
  else tc->fused_linear(tc->upload(x), c.norm ? &dnw : nullptr, 1e-5f, dw, c.bias ? &db : nullptr, c.mode, out);
  // The e4m3 products are exact; what differs from the reference is the summation: Hopper's FP8
  // tensor cores accumulate a block's products with fewer bits than f32 (2.1e-4 relative measured
  // on random e4m3 operands, H100), then cuBLASLt applies the scales and adds the blocks in f32.
  // An activation quantized otherwise than the reference (a different scale or rounding) would
  // show as ~1e-2, a scale of the wrong row or block as ~1.
  const Tensor got = tc->to_host(out);
  EXPECT_LT(rel_error(got, ref), 1e-3) << "M=" << c.M << " N=" << c.N << " K=" << c.K << " mode "
                                       << static_cast<int>(c.mode) << " bias " << c.bias << " norm " << c.norm;
  // And W8A8 stays close to the exact product (bf16-rounded activations, exact weights): e4m3 has
  // 3 mantissa bits, so each activation is off by up to 2^-4 of itself, 3.6% RMS, and a product
  // by about as much whatever K; a SwiGLU output carries two products' errors (~5%: one random
  // draw came out 5.5%). A scale of the wrong block would be off by about 100%.
  Tensor xin = x;
  if (c.norm) {
    xin = Tensor::empty(DType::kF32, {c.M, c.K});
    cpu::ref::rms_norm(x, nw, 1e-5f, xin);
  }
  Tensor exact = poisoned({c.M, c.N});
  cpu::ref::linear(xin, w, c.bias ? &b : nullptr, exact);
  Tensor exact_out = copy_of(start);
  if (c.mode == LinearOut::kStore) exact_out = exact;
  else if (c.mode == LinearOut::kAccumulate) cpu::ref::add(exact_out, exact);
  else cpu::ref::silu_mul(exact, exact_out);
  EXPECT_LT(rel_error(got, exact_out), c.mode == LinearOut::kSiluMul ? 0.1 : 0.05);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaFp8W8A8,
    ::testing::Values(Fp8TcCase{1, 448, 1024, kU, true, true}, Fp8TcCase{3, 200, 4096, kA, false, true},
                      Fp8TcCase{5, 200, 128, kS, true, false}, Fp8TcCase{5, 448, 1024, kU, false, true},
                      Fp8TcCase{16, 136, 256, kA, true, true}, Fp8TcCase{17, 200, 4096, kA, true, false},
                      Fp8TcCase{17, 300, 640, kS, false, true}, Fp8TcCase{33, 144, 1024, kS, true, true},
                      Fp8TcCase{33, 448, 2048, kU, false, false}, Fp8TcCase{64, 520, 512, kA, false, true},
                      Fp8TcCase{100, 200, 128, kS, true, false}, Fp8TcCase{100, 448, 4096, kU, true, true},
                      Fp8TcCase{127, 2120, 1024, kA, true, false}, Fp8TcCase{257, 448, 4096, kS, false, false},
                      Fp8TcCase{257, 200, 1024, kU, true, false}, Fp8TcCase{257, 144, 384, kA, true, true},
                      Fp8TcCase{600, 2120, 256, kA, true, false}, Fp8TcCase{600, 264, 640, kU, false, true},
                      Fp8TcCase{600, 136, 2048, kS, true, true},
                      // Block-scaled weights: from cuda::kW8A8BlockRows rows cuBLASLt reads their
                      // 128 x 128 block table where K / 128 is a multiple of 4 (the last row group
                      // partial; bias, norm, every mode), else their row scales (K 640, 256).
                      Fp8TcCase{256, 332, 1024, kS, true, true, true}, Fp8TcCase{257, 448, 4096, kU, false, true, true},
                      Fp8TcCase{600, 2120, 512, kA, true, false, true}, Fp8TcCase{100, 448, 512, kS, false, false, true},
                      Fp8TcCase{257, 448, 640, kU, false, true, true}, Fp8TcCase{600, 2120, 256, kA, true, false, true}),
    fp8_tc_case_name);

TEST(CudaFp8Setting, RaiseLowerBitFloatToParses) {
  EXPECT_EQ(parse_lower_bit_float("auto"), LowerBitFloat::kAuto);
  EXPECT_EQ(parse_lower_bit_float("bf16"), LowerBitFloat::kBf16);
  EXPECT_EQ(parse_lower_bit_float("fp8"), LowerBitFloat::kFp8);
  EXPECT_EQ(CudaOptions{}.raise_lower_bit_float_to, LowerBitFloat::kAuto);
  for (const char* bad : {"", "f16", "FP8", "e4m3", "w8a8"}) {
    try {
      parse_lower_bit_float(bad);
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("infer.raise_lower_bit_float_to"), std::string::npos) << msg;
      EXPECT_NE(msg.find("auto, bf16, fp8"), std::string::npos) << msg;
    }
  }
}

// linear() of random FP8 weights [N, 512] and activations [M, 512] (drawn from `seed`) on a
// tensor-core backend under `l`.
Tensor fp8_linear_under(LowerBitFloat l, int64_t M, int64_t N, unsigned seed) {
  CudaOptions o;
  o.tensor_cores = true;
  o.raise_lower_bit_float_to = l;
  auto tc = make_cuda_backend(0, o);
  rng().seed(seed);
  Tensor w = random_fp8(N, 512);
  Tensor x = random_tensor(DType::kF32, {M, 512});
  Tensor out = tc->upload(poisoned({M, N}));
  tc->linear(tc->upload(x), tc->upload(w), nullptr, out);
  return tc->to_host(out);
}

TEST_F(CudaFp8Linear, AutoUsesW8A8FromItsRowCountAndBf16Never) {
  // The same product under auto, bf16 and fp8: below kW8A8AutoRows auto equals bf16 (W8A16) bit
  // for bit, from there fp8 (W8A8) where cuBLASLt has it; bf16 and fp8 differ (e4m3 vs bf16
  // activations).
  if (!w8a8_device()) GTEST_SKIP() << "no block-scaled FP8 product in cuBLASLt on this GPU";
  for (int64_t M : {int64_t{5}, int64_t{16}, int64_t{64}, int64_t{300}}) {
    const Tensor a = fp8_linear_under(LowerBitFloat::kAuto, M, 256, 11);
    const Tensor b = fp8_linear_under(LowerBitFloat::kBf16, M, 256, 11);
    const Tensor f = fp8_linear_under(LowerBitFloat::kFp8, M, 256, 11);
    EXPECT_FALSE(same_bytes(b, f)) << "M=" << M;
    EXPECT_TRUE(same_bytes(a, M >= cuda::kW8A8AutoRows ? f : b)) << "M=" << M;
  }
}

TEST_F(CudaFp8Linear, W8A8LeavesUnalignedOutputWidthsToW8A16) {
  // cuBLASLt's FP8 product wants 16-byte rows of output and scales: N = 130 under fp8 runs W8A16,
  // bit for bit the bf16 setting's result, while N = 132 runs W8A8.
  if (!w8a8_device()) GTEST_SKIP() << "no block-scaled FP8 product in cuBLASLt on this GPU";
  EXPECT_TRUE(same_bytes(fp8_linear_under(LowerBitFloat::kFp8, 64, 130, 7),
                         fp8_linear_under(LowerBitFloat::kBf16, 64, 130, 7)));
  EXPECT_FALSE(same_bytes(fp8_linear_under(LowerBitFloat::kFp8, 64, 132, 7),
                          fp8_linear_under(LowerBitFloat::kBf16, 64, 132, 7)));
}

// A random Llama with 128-multiple rows, converted to FP8 (written once per process); its folder.
std::string converted_fp8_model() {
  namespace fs = std::filesystem;
  const std::string src = ::testing::TempDir() + "/redhare_cuda_fp8_src", fp8 = ::testing::TempDir() + "/redhare_cuda_fp8";
  fs::remove_all(src);
  fs::remove_all(fp8);
  fs::create_directories(src);
  const int64_t H = 256, I = 512, L = 2, V = 320;
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", H}, {"intermediate_size", I},
                      {"num_hidden_layers", L}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", V}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
                      {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  std::ofstream(src + "/config.json") << c.dump();
  std::vector<std::pair<std::string, Tensor>> t;
  const float sH = 1.0f / 16;
  t.emplace_back("model.embed_tokens.weight", random_tensor(DType::kBF16, {V, H}));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.emplace_back(p + "input_layernorm.weight", Tensor::from_f32(std::vector<float>(H, 1.0f), {H}));
    t.emplace_back(p + "post_attention_layernorm.weight", Tensor::from_f32(std::vector<float>(H, 1.0f), {H}));
    t.emplace_back(p + "self_attn.q_proj.weight", random_tensor(DType::kBF16, {H, H}, sH));
    t.emplace_back(p + "self_attn.k_proj.weight", random_tensor(DType::kBF16, {H / 2, H}, sH));
    t.emplace_back(p + "self_attn.v_proj.weight", random_tensor(DType::kBF16, {H / 2, H}, sH));
    t.emplace_back(p + "self_attn.o_proj.weight", random_tensor(DType::kBF16, {H, H}, sH));
    t.emplace_back(p + "mlp.gate_proj.weight", random_tensor(DType::kBF16, {I, H}, sH));
    t.emplace_back(p + "mlp.up_proj.weight", random_tensor(DType::kBF16, {I, H}, sH));
    t.emplace_back(p + "mlp.down_proj.weight", random_tensor(DType::kBF16, {H, I}, 1.0f / 22));
  }
  t.emplace_back("model.norm.weight", Tensor::from_f32(std::vector<float>(H, 1.0f), {H}));
  save_safetensors(src + "/model.safetensors", t);
  convert_checkpoint_to_fp8(src, fp8);
  return fp8;
}

TEST_F(CudaFp8Linear, ConvertedModelMatchesTheCpuBackend) {
  // The converted model on both backends.
  static const std::string fp8 = converted_fp8_model();
  auto cpu_backend = make_cpu_backend();
  auto on_cpu = load_model(fp8, *cpu_backend);
  auto on_gpu = load_model(fp8, *gpu);
  const std::vector<int32_t> prompt = {5, 77, 301, 12, 9, 250, 31, 8, 100};
  const Tensor a = prompt_logits(*on_gpu, *gpu, prompt), b = prompt_logits(*on_cpu, *cpu_backend, prompt);
  // Relative: with tied unit-scale embeddings these logits spread over tens, and the two
  // backends differ only in summation order (~1e-6 relative per product).
  EXPECT_LT(rel_error(a, b), 1e-5);
  GreedyOptions g;
  g.max_new_tokens = 12;
  g.ignore_eos = true;
  EXPECT_EQ(greedy_generate(*on_gpu, *gpu, prompt, g), greedy_generate(*on_cpu, *cpu_backend, prompt, g));
}

TEST_F(CudaFp8Linear, TensorCoreDecodeInGraphsMatchesEagerSteps) {
  // Tensor-core mode: the decode steps' FP8 products (the W8A16 decode kernel, launched with
  // programmatic dependent launch) replayed from CUDA graphs give the eager steps' tokens and
  // logits bit for bit, and stay near the exact CPU backend.
  static const std::string fp8 = converted_fp8_model();
  const std::vector<int32_t> prompt = {5, 77, 301, 12, 9, 250, 31, 8, 100};
  GreedyOptions g;
  g.max_new_tokens = 12;
  g.ignore_eos = true;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<Tensor> logits;
  for (bool graphs : {true, false}) {
    CudaOptions o;
    o.tensor_cores = true;
    o.graphs = graphs;
    auto tc = make_cuda_backend(0, o);
    auto model = load_model(fp8, *tc);
    tokens.push_back(greedy_generate(*model, *tc, prompt, g));
    logits.push_back(prompt_logits(*model, *tc, {5, 77, 301}));  // 3 rows: the decode kernel
  }
  EXPECT_EQ(tokens[0], tokens[1]);
  EXPECT_TRUE(same_bytes(logits[0], logits[1]));
  auto cpu_backend = make_cpu_backend();
  auto on_cpu = load_model(fp8, *cpu_backend);
  EXPECT_LT(rel_error(logits[0], prompt_logits(*on_cpu, *cpu_backend, {5, 77, 301})), 2e-2);
}

}  // namespace
}  // namespace redhare::cuda_test
