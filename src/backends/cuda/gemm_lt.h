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

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t w = nullptr, a = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
  };
  Plan& plan(Elem type, bool bias, int64_t M, int64_t N, int64_t K);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int, bool, int64_t, int64_t, int64_t>, Plan> plans_;
};

}  // namespace redhare::cuda
