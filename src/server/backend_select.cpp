#include "server/backend_select.h"

#include "core/error.h"
#include "core/logging.h"

#if REDHARE_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace redhare {

bool built_with_cuda() {
#if REDHARE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const DeviceChoice& c) {
  if (c.precision != "bf16" && c.precision != "f32")
    fail("infer.matmul_precision '", c.precision, "' is not one of bf16, f32");
  if (c.lower_bit_float != "auto" && c.lower_bit_float != "bf16" && c.lower_bit_float != "fp8")
    fail("infer.raise_lower_bit_float_to '", c.lower_bit_float, "' is not one of auto, bf16, fp8");
  std::string dev = c.device;
  if (dev == "auto") {
#if REDHARE_HAVE_CUDA
    dev = cuda_device_count() > 0 ? "cuda:0" : "cpu";
#else
    dev = "cpu";
#endif
  }
  if (dev == "cpu") return make_cpu_backend();
  int index = -1;
  if (dev == "cuda") {
    index = 0;
  } else if (dev.rfind("cuda:", 0) == 0 && dev.size() > 5 && dev.size() < 9 &&
             dev.find_first_not_of("0123456789", 5) == std::string::npos) {
    index = std::stoi(dev.substr(5));
  } else {
    fail("infer.device '", c.device, "' is not one of auto, cpu, cuda, cuda:N");
  }
#if REDHARE_HAVE_CUDA
  CudaOptions o;
  o.tensor_cores = c.precision == "bf16";
  o.graphs = c.cuda_graphs;
  o.raise_lower_bit_float_to = parse_lower_bit_float(c.lower_bit_float);
  auto backend = make_cuda_backend(index, o);
  log_info("backend ", backend->name(), ": matrix products ", o.tensor_cores ? "bf16 on tensor cores" : "f32 (exact)",
           ", FP8 weights raised to ", c.lower_bit_float, ", CUDA graphs ", o.graphs ? "on" : "off");
  return backend;
#else
  (void)index;
  fail("infer.device '", c.device, "': this redhare was built without the CUDA backend (rebuild with nvcc available, REDHARE_CUDA=ON)");
#endif
}

}  // namespace redhare
