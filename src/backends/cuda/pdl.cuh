// Programmatic dependent launch (PDL, sm_90+): a kernel launched with launch_pdl may be scheduled
// while the kernel before it in the stream is still running, so its blocks are resident by the
// time the previous kernel's last blocks finish, and only the dependency itself (pdl_wait) is
// left between them. A decode step is a chain of ~165 short kernels (5 per layer at batch 1).
// Measured on an H200 (8B shape, whole graph-replayed steps, PDL on against off in one run):
// batch 1 5.084 against 5.093 ms, batch 8 6.111 against 6.188 ms, a 512-token prefill 16.08
// against 16.53 ms: launches inside a graph are already cheap, so the gain is small.
//
// The contract every kernel launched by launch_pdl keeps (else it would race its predecessor):
// - before pdl_wait() it reads nothing a kernel earlier in the stream writes and writes nothing
//   one reads: only constant data (weights, norm weights, a bias) may be touched;
// - every block calls pdl_wait() before its first such access (a block that returns early
//   without touching anything need not). pdl_wait() returns once every kernel before it in the
//   stream has completed and its writes are visible, as for an ordinary launch.
// Kernels call pdl_trigger() to let the next kernel be scheduled early; without it the next one
// is scheduled as this one's blocks exit. Not every kernel should: the tensor-core decode
// attention kernel does only before a bulk-copy product (AttentionShape::let_in_successor; other
// successors' blocks waiting beside it cost ~10 us per layer, see tc_decode_kernel). bench_cuda --pdl 0 and --leave-out measure such effects on whole steps.
// Neither instruction does anything for a kernel launched the ordinary way, and both compile to
// nothing before sm_90, where launch_pdl does not ask for the attribute. Stream capture keeps the
// programmatic edges, so CUDA graphs replay them.
#pragma once

#include <utility>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace redhare::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// The start of a kernel that reads nothing before waiting: lets the next kernel be scheduled,
// then waits for the previous one.
__device__ __forceinline__ void pdl_begin() {
  pdl_trigger();
  pdl_wait();
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization where
// pdl_enabled() (kernels.h). The kernel must keep the contract above. Checks the launch.
template <typename... Params, typename... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(std::forward<Args>(args))...), name);
}

}  // namespace redhare::cuda
