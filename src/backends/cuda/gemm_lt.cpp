// cuBLASLt products for the tensor-core mode (see gemm_lt.h).
#include "backends/cuda/gemm_lt.h"

#include <exception>

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

// Sets the operation's scale modes for the FP8 product (both operands' scales per 128-value
// block) and placeholder scale pointers for the heuristic (`scales`: device memory; each call sets
// its own).
static void set_fp8_scale_modes(cublasLtMatmulDesc_t op, const void* scales, bool weight_blocks = false) {
  const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, block = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  RH_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, weight_blocks ? &block : &mode,
                                       sizeof(mode)));
  RH_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
  RH_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scales, sizeof(scales)));
  RH_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scales, sizeof(scales)));
}

LtGemm::Plan& LtGemm::plan(int kind, bool bias, int64_t M, int64_t N, int64_t K) {
  auto key = std::make_tuple(kind, bias, M, N, K);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  const bool fp8 = kind == kFp8Kind || kind == kFp8BlockKind;
  const cudaDataType_t in = fp8                                      ? CUDA_R_8F_E4M3
                            : kind == static_cast<int>(Elem::kBF16) ? CUDA_R_16BF
                                                                    : CUDA_R_16F;
  RH_LT(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  if (fp8) set_fp8_scale_modes(p.op, workspace_, kind == kFp8BlockKind);
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
  return type != Elem::kF32 && plan(static_cast<int>(type), bias, M, N, K).ok;
}

bool LtGemm::has_fp8_plan(int64_t M, int64_t N, int64_t K, bool block_scales) {
  return K % 128 == 0 && plan(block_scales ? kFp8BlockKind : kFp8Kind, false, M, N, K).ok;
}

bool LtGemm::run_fp8(const void* a_q, const float* a_s, const void* w, int64_t M, int64_t N, int64_t K, float* out,
                     cudaStream_t stream, bool accumulate, bool block_scales) {
  if (K % 128 != 0) return false;
  Plan& p = plan(block_scales ? kFp8BlockKind : kFp8Kind, false, M, N, K);
  if (!p.ok) return false;
  // cuBLAS's A is the weights (transposed), B the activations; the scale pointers are per call.
  const int64_t row_scales = N * (K / 128) * static_cast<int64_t>(sizeof(float));
  const void* w_s = static_cast<const uint8_t*>(w) + N * K + (block_scales ? row_scales : 0);
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_s, sizeof(w_s)));
  RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_s, sizeof(a_s)));
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  RH_LT(cublasLtMatmul(handle_, p.op, &one, w, p.w, a_q, p.a, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                       workspace_bytes_, stream));
  return true;
}

bool fp8_w8a8_supported() {
  // Asked as a backend's LtGemm asks (its workspace, the scale modes set); a device whose cuBLASLt
  // rejects the scale modes, or any other failure here, means no.
  static const bool ok = [] {
    try {
      LtGemm probe;
      return probe.has_fp8_plan(64, 256, 256);
    } catch (const std::exception&) {
      cudaGetLastError();
      return false;
    }
  }();
  return ok;
}

bool LtGemm::run(const void* a, const void* w, Elem type, const float* bias, int64_t M, int64_t N,
                 int64_t K, float* out, cudaStream_t stream, bool accumulate) {
  if (type == Elem::kF32) return false;
  Plan& p = plan(static_cast<int>(type), bias != nullptr, M, N, K);
  if (!p.ok) return false;
  if (bias)
    RH_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  RH_LT(cublasLtMatmul(handle_, p.op, &one, w, p.w, a, p.a, &beta, out, p.c, out, p.c, &p.algo,
                       workspace_, workspace_bytes_, stream));
  return true;
}

}  // namespace redhare::cuda
