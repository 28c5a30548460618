// Picking the backend a model runs on, from the settings every entry point shares
// (infer.device, infer.matmul_precision, infer.raise_lower_bit_float_to, infer.use_cuda_graph).
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace redhare {

struct DeviceChoice {
  std::string device = "auto";    // auto | cpu | cuda | cuda:N
  std::string precision = "bf16";  // CUDA matrix products: bf16 (tensor cores) or f32 (exact)
  // Products on FP8 weights: auto | bf16 (W8A16) | fp8 (W8A8 where cuBLASLt has the block-scaled FP8 product).
  std::string lower_bit_float = "auto";
  bool cuda_graphs = true;
};

// auto = the first CUDA device when this build has the CUDA backend and the machine a GPU,
// else the CPU. Errors name the setting: an unknown device or value, CUDA asked of a CPU-only build.
std::unique_ptr<Backend> make_backend(const DeviceChoice& choice);

// Whether this build includes the CUDA backend.
bool built_with_cuda();

}  // namespace redhare
