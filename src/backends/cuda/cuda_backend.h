// The CUDA backend: device memory and every Backend op as a CUDA kernel, on one stream.
//
// Activations are f32 on the device so that results match the CPU reference and the golden
// fixtures; weights stay in their checkpoint dtype (bf16, f16, f32). Ops are asynchronous;
// to_host() waits for the stream.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace redhare {

// Number of CUDA devices usable by this process; 0 when there is no driver or no device.
int cuda_device_count();

// Throws redhare::Error when `device` does not exist.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace redhare
