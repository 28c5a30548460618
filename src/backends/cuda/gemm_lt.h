// Matrix products on the tensor cores through cuBLASLt, for the CUDA backend's tensor-core mode.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "backends/cuda/kernels.h"

namespace redhare::cuda {

// out[M, N] (f32) = a[M, K] @ w[N, K]^T (+ bias[N], f32), with a and w both bf16 or both f16 and
// f32 accumulation. Row-major in redhare's terms is column-major out^T = w^T' a^T' in cuBLAS's:
// the "TN" product, the layout cuBLASLt has the most kernels for.
//
// One handle and one workspace per backend, made at construction: both calls are illegal while a
// stream is being captured into a CUDA graph, and matmul launches themselves are capturable.
// The algorithm for each shape is asked of cuBLASLt's heuristic once and kept.
class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // False when cuBLASLt offers no algorithm for this shape; nothing was launched then. With
  // `accumulate`, out += product (beta = 1: the residual add rides on the matrix product).
  bool run(const void* a, const void* w, Elem type, const float* bias, int64_t M, int64_t N,
           int64_t K, float* out, cudaStream_t stream, bool accumulate = false);
  // Whether run() has an algorithm for this product (asked of the heuristic once, as run asks).
  bool has_plan(Elem type, bool bias, int64_t M, int64_t N, int64_t K);

  // W8A8, cuBLASLt's block-scaled FP8 product (Hopper): out[M, N] (f32) = the sum over 128-value
  // blocks kb of (a_q[m, kb] . w[n, kb]) * a_s[kb, m] * w's scale of (n, kb), with a_q [M, K] e4m3
  // and a_s [K / 128, M] as launch_fp8_quantize_activations writes them and w [N, K] FP8 in its
  // device layout (fp8_device.cuh: its scale table is the VEC128_32F one cuBLASLt takes). f32
  // accumulation; `accumulate`: out += product. No bias: cuBLASLt's bias epilogue (f32 bias) with
  // these scale modes gave outputs 2-4% off on an H100 (cuBLAS 13.1), so callers add it after.
  // False, nothing launched, when cuBLASLt has no algorithm (it refuses some row counts: 1 and 5
  // on an H100; 8 and 64 it takes). block_scales: the weights' 128 x 128 block table
  // (fp8_device.cuh) in place of their per-row scales (BLK128x128_32F; only for weights that have it).
  bool run_fp8(const void* a_q, const float* a_s, const void* w, int64_t M, int64_t N, int64_t K, float* out,
               cudaStream_t stream, bool accumulate = false, bool block_scales = false);
  bool has_fp8_plan(int64_t M, int64_t N, int64_t K, bool block_scales = false);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t w = nullptr, a = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
  };
  // kind: an Elem (bf16 / f16 operands), kFp8Kind (e4m3 operands with VEC128 scales) or
  // kFp8BlockKind (the weights' scales BLK128x128).
  static constexpr int kFp8Kind = -1, kFp8BlockKind = -2;
  Plan& plan(int kind, bool bias, int64_t M, int64_t N, int64_t K);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int, bool, int64_t, int64_t, int64_t>, Plan> plans_;
};

// Whether cuBLASLt offers the block-scaled FP8 product (LtGemm::run_fp8) on the current device
// (asked of its heuristic once per process: Hopper has it; Ada and Blackwell have other FP8 modes).
bool fp8_w8a8_supported();

}  // namespace redhare::cuda
