// Timing on the device by CUDA events, for the rate probes and the CUDA benchmarks.
#pragma once

#include <algorithm>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_check.h"

namespace redhare::cuda {

// The shortest of `reps` runs of launch() on `stream`, in seconds, each between two events; one
// untimed run first warms up.
template <typename F>
double best_event_seconds(cudaStream_t stream, int reps, F&& launch) {
  cudaEvent_t e0, e1;
  RH_CUDA(cudaEventCreate(&e0));
  RH_CUDA(cudaEventCreate(&e1));
  double best = 1e30;
  for (int i = 0; i <= reps; ++i) {
    RH_CUDA(cudaEventRecord(e0, stream));
    launch();
    RH_CUDA(cudaEventRecord(e1, stream));
    RH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    RH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best = std::min(best, static_cast<double>(ms) * 1e-3);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

}  // namespace redhare::cuda
