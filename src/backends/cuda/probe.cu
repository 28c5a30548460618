// Device rates measured on the spot, the denominators of redhare's performance bounds: the HBM
// read bandwidth a streaming kernel reaches, and the matrix rate of the product the tensor-core
// mode runs (bf16 inputs, f32 accumulation and output, through the same cuBLASLt path).

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/event_timer.h"
#include "backends/cuda/gemm_lt.h"
#include "backends/cuda/kernels.h"

namespace redhare {
namespace {

// Every 16-byte word once, several loads in flight per thread; one word per block is written so
// the loads cannot be dropped.
__global__ void read_kernel(const uint4* __restrict__ p, int64_t n, uint4* __restrict__ sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
                d = __ldcs(p + i + 3 * stride);
    acc.x ^= a.x ^ b.x ^ c.x ^ d.x;
    acc.y ^= a.y ^ b.y ^ c.y ^ d.y;
    acc.z ^= a.z ^ b.z ^ c.z ^ d.z;
    acc.w ^= a.w ^ b.w ^ c.w ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(p + i);
    acc.x ^= a.x;
    acc.y ^= a.y;
    acc.z ^= a.z;
    acc.w ^= a.w;
  }
  if ((acc.x | acc.y | acc.z | acc.w) == 0x12345678u) sink[blockIdx.x] = acc;
}


}  // namespace

double cuda_read_bandwidth(int device) {
  RH_CUDA(cudaSetDevice(device));
  const int64_t bytes = int64_t{2} << 30;
  void* buf = nullptr;
  void* sink = nullptr;
  RH_CUDA(cudaMalloc(&buf, static_cast<size_t>(bytes)));
  RH_CUDA(cudaMalloc(&sink, 1 << 20));
  RH_CUDA(cudaMemset(buf, 1, static_cast<size_t>(bytes)));
  cudaDeviceProp prop;
  RH_CUDA(cudaGetDeviceProperties(&prop, device));
  const unsigned blocks = static_cast<unsigned>(prop.multiProcessorCount * 4);
  const double s = cuda::best_event_seconds(nullptr, 5, [&] {
    read_kernel<<<blocks, 512>>>(static_cast<const uint4*>(buf), bytes / 16, static_cast<uint4*>(sink));
    RH_CUDA_LAUNCHED("read_kernel");
  });
  cudaFree(buf);
  cudaFree(sink);
  return static_cast<double>(bytes) / s;
}

double cuda_bf16_gemm_rate(int device, int64_t M, int64_t N, int64_t K) {
  RH_CUDA(cudaSetDevice(device));
  void *a = nullptr, *w = nullptr, *out = nullptr;
  RH_CUDA(cudaMalloc(&a, static_cast<size_t>(M * K * 2)));
  RH_CUDA(cudaMalloc(&w, static_cast<size_t>(N * K * 2)));
  RH_CUDA(cudaMalloc(&out, static_cast<size_t>(M * N * 4)));
  RH_CUDA(cudaMemset(a, 0, static_cast<size_t>(M * K * 2)));
  RH_CUDA(cudaMemset(w, 0, static_cast<size_t>(N * K * 2)));
  double s = 0;
  {
    cuda::LtGemm lt;
    s = cuda::best_event_seconds(nullptr, 10, [&] {
      RH_CHECK(lt.run(a, w, cuda::Elem::kBF16, nullptr, M, N, K, static_cast<float*>(out), nullptr),
               "cuBLASLt has no algorithm for ", M, "x", N, "x", K);
    });
  }
  cudaFree(a);
  cudaFree(w);
  cudaFree(out);
  return 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) / s;
}

}  // namespace redhare
