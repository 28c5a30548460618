// cuBLASLt products for the tensor-core mode (see gemm_lt.h).
#include "backends/cuda/gemm_lt.h"

#include "backends/cuda/cuda_check.h"
#include "core/error.h"

namespace redhare::cuda {
namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt: ", what, " failed with status ", static_cast<int>(s));
}
#define RH_LT(call) check_lt((call), #call)

// cuBLASLt's own guidance for Hopper: 32 MiB lets the split-K and stream-K kernels run.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

LtGemm::LtGemm() {
  RH_LT(cublasLtCreate(&handle_));
  RH_CUDA(cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_bytes_ = kWorkspaceBytes;
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    if (p.w) cublasLtMatrixLayoutDestroy(p.w);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan(Elem type, bool bias, int64_t M, int64_t N, int64_t K) {
  auto key = std::make_tuple(static_cast<int>(type), bias, M, N, K);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  const cudaDataType_t in = type == Elem::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  RH_LT(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const cudaDataType_t bias_type = CUDA_R_32F;
    RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  // Column-major views: w is K x N (ld K, transposed by the op), a is K x M (ld K), out is N x M.
  RH_LT(cublasLtMatrixLayoutCreate(&p.w, in, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K));
  RH_LT(cublasLtMatrixLayoutCreate(&p.a, in, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K));
  RH_LT(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, static_cast<uint64_t>(N), static_cast<uint64_t>(M), N));
  cublasLtMatmulPreference_t pref = nullptr;
  RH_LT(cublasLtMatmulPreferenceCreate(&pref));
  RH_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.w, p.a, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.ok = true;
  }
  return p;
}

bool LtGemm::has_plan(Elem type, bool bias, int64_t M, int64_t N, int64_t K) {
  return type != Elem::kF32 && plan(type, bias, M, N, K).ok;
}

bool LtGemm::run(const void* a, const void* w, Elem type, const float* bias, int64_t M, int64_t N,
                 int64_t K, float* out, cudaStream_t stream, bool accumulate) {
  if (type == Elem::kF32) return false;
  Plan& p = plan(type, bias != nullptr, M, N, K);
  if (!p.ok) return false;
  if (bias)
    RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  RH_LT(cublasLtMatmul(handle_, p.op, &one, w, p.w, a, p.a, &beta, out, p.c, out, p.c, &p.algo,
                       workspace_, workspace_bytes_, stream));
  return true;
}

}  // namespace redhare::cuda
