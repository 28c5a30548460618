// The CUDA backend: device memory and every Backend op as a CUDA kernel, on one stream.
//
// Activations are f32 on the device; weights stay in their checkpoint dtype (bf16, f16, f32,
// GGUF block types). Ops are asynchronous; to_host() waits for the stream.
//
// Two precisions (CudaOptions::tensor_cores):
// - exact (the default here, and what the op and golden tests pin down): every product in f32,
//   results match the CPU reference to ~1e-5;
// - tensor cores (what `redhare serve` uses on a GPU unless infer.matmul_precision=f32): matrix
//   products of more than kGemvMaxRows rows round the activations to the weights' 16-bit type and
//   run on cuBLASLt with f32 accumulation; prefill attention likewise rounds Q, K, P and V to
//   bf16. Decode matrix-vector products keep f32 activations in both modes (they are bound by
//   the weight reads, so exactness costs nothing there), except on FP8 weights. Products on FP8
//   weights run W8A16 (decode products too, on the tensor cores) or, on GPUs with FP8 tensor
//   cores, W8A8 (CudaOptions::raise_lower_bit_float_to).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.h"

namespace redhare {

// How products on FP8 (kF8B128) weights run in tensor-core mode (infer.raise_lower_bit_float_to):
// kBf16: W8A16, the e4m3 weights raised to f16 / bf16 inside the kernels, activations kept at
// 16 bits; kFp8: W8A8 (activations quantized to e4m3 per row and 128-value block, cuBLASLt's
// block-scaled FP8 product) for every product where cuBLASLt offers it (Hopper); kAuto: W8A8
// there from cuda::kW8A8AutoRows rows, where it measures faster, W8A16 below (the decode kernel up
// to 4 rows). Elsewhere W8A16; exact mode (tensor_cores off) ignores this.
enum class LowerBitFloat { kAuto, kBf16, kFp8 };
// "auto", "bf16" or "fp8"; anything else is an error naming the choices.
LowerBitFloat parse_lower_bit_float(const std::string& value);

struct CudaOptions {
  bool tensor_cores = false;
  LowerBitFloat raise_lower_bit_float_to = LowerBitFloat::kAuto;
  // Decode steps recorded as CUDA graphs per batch-size bucket and replayed (models use them
  // through Backend::graph_*); off runs every step eagerly.
  bool graphs = true;
};

// Number of CUDA devices usable by this process; 0 when there is no driver or no device.
int cuda_device_count();

// Rates measured on the spot (src/backends/cuda/probe.cu), the denominators of the benchmarks'
// bounds: HBM read bandwidth in bytes/s (a 2 GiB streaming read), and the FLOP/s of an M x N x K
// product in the tensor-core mode's configuration (bf16 in, f32 accumulate and out, cuBLASLt).
double cuda_read_bandwidth(int device);
double cuda_bf16_gemm_rate(int device, int64_t M, int64_t N, int64_t K);

// Throws redhare::Error when `device` does not exist.
std::unique_ptr<Backend> make_cuda_backend(int device = 0, const CudaOptions& options = {});

}  // namespace redhare
