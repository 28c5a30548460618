// Every CUDA runtime call and kernel launch goes through these checks: a failure becomes a
// redhare::Error naming the call, so a bad launch never passes silently into later results.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

namespace redhare::cuda {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

}  // namespace redhare::cuda

#define RH_CUDA(call) ::redhare::cuda::check_cuda((call), #call)
// After a <<<...>>> launch: configuration errors show up here, asynchronous faults at the next sync.
#define RH_CUDA_LAUNCHED(kernel_name) ::redhare::cuda::check_cuda(cudaGetLastError(), kernel_name)
