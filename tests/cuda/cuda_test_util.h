// Shared by the CUDA tests: the skip-without-GPU fixture and host/device tensor helpers.
#pragma once

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "backends/cuda/cuda_backend.h"

namespace redhare::cuda_test {

// The checkout holding fixtures/: the environment wins, so a build copied to another machine
// still finds them.
inline std::string source_dir() {
  const char* env = std::getenv("REDHARE_SOURCE_DIR");
  return env && *env ? env : REDHARE_SOURCE_DIR;
}

// Every CUDA test derives from this: without a device it skips with a visible reason.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu = make_cuda_backend(0);
  }
  std::unique_ptr<Backend> gpu;
};

inline std::mt19937& rng() {
  static std::mt19937 r(20261121);
  return r;
}

// Fresh normal random values, stored in `dt` (the CPU reference and the GPU see the same bits).
inline Tensor random_tensor(DType dt, Shape shape, float scale = 1.0f) {
  Tensor f = Tensor::empty(DType::kF32, shape);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < f.numel(); ++i) f.data_as<float>()[i] = d(rng());
  if (dt == DType::kF32) return f;
  Tensor t = Tensor::empty(dt, shape);
  convert_from_f32(f.data_as<float>(), dt, t.data(), f.numel());
  return t;
}

// NaN everywhere: an output element the op forgot to write cannot pass a comparison.
inline Tensor poisoned(Shape shape) {
  Tensor t = Tensor::empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = NAN;
  return t;
}

inline Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.dtype(), t.shape());
  std::memcpy(c.data(), t.data(), static_cast<size_t>(t.nbytes()));
  return c;
}

// ‖a − b‖ / ‖mag‖ over f32 host tensors of equal size; NaN never passes. `mag` is, per output,
// the sum of its terms' magnitudes for products whose sums may cancel, or b itself (rel_error:
// ‖a − b‖ / ‖b‖).
inline double error_to_magnitude(const Tensor& a, const Tensor& b, const Tensor& mag) {
  if (a.numel() != b.numel() || mag.numel() != b.numel()) return INFINITY;
  double num = 0, den = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.data_as<float>()[i], y = b.data_as<float>()[i], m = mag.data_as<float>()[i];
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    num += (x - y) * (x - y);
    den += m * m;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline double rel_error(const Tensor& a, const Tensor& b) { return error_to_magnitude(a, b, b); }

inline bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.nbytes())) == 0;
}

}  // namespace redhare::cuda_test
