// FP8 weights between the host's 144-byte blocks and the CUDA backend's device layout
// (kernels.h, cuda/fp8_device.cuh). Rows are converted in parallel: an 8B model's projections are
// 55 million blocks.
#include <cstring>

#include "backends/cuda/kernels.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace redhare::cuda {
namespace {

// Values per block and bytes per host block, from the dtype table.
const int64_t kValues = dtype_info(DType::kF8B128).block_elems, kBlock = dtype_info(DType::kF8B128).block_bytes;

void check_row(int64_t K) {
  RH_CHECK(K % kValues == 0, "FP8 weights: a row of ", K, " values is not a whole number of 128-value blocks");
}

}  // namespace

bool fp8_blocks_to_device_layout(const void* blocks, int64_t N, int64_t K, void* out) {
  check_row(K);
  const int64_t KB = K / kValues, NB = (N + 127) / 128, bytes = dtype_bytes(DType::kF8B128, N * K);
  const auto* src = static_cast<const uint8_t*>(blocks);
  auto* q = static_cast<uint8_t*>(out);
  auto* s = reinterpret_cast<float*>(q + N * K);
  ThreadPool::global().parallel_for(N, 64, [&](int, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t kb = 0; kb < KB; ++kb) {
        const uint8_t* blk = src + (n * KB + kb) * kBlock;
        std::memcpy(q + n * K + kb * kValues, blk, kValues);
        std::memcpy(s + kb * N + n, blk + kValues, sizeof(float));
      }
  });
  // The 128 x 128 block table where every 128-row group shares its scales (compared as bits) and
  // the table fits in the layout's spare bytes.
  int64_t used = N * K + N * KB * static_cast<int64_t>(sizeof(float));
  bool uniform = used + NB * KB * static_cast<int64_t>(sizeof(float)) <= bytes;
  for (int64_t kb = 0; kb < KB && uniform; ++kb)
    for (int64_t n = 0; n < N && uniform; ++n)
      uniform = std::memcmp(s + kb * N + n, s + kb * N + n / 128 * 128, sizeof(float)) == 0;
  if (uniform) {
    float* b = s + N * KB;
    for (int64_t nb = 0; nb < NB; ++nb)
      for (int64_t kb = 0; kb < KB; ++kb) b[nb * KB + kb] = s[kb * N + nb * 128];
    used += NB * KB * static_cast<int64_t>(sizeof(float));
  }
  std::memset(q + used, 0, static_cast<size_t>(bytes - used));
  return uniform;
}

void fp8_device_layout_to_blocks(const void* device_layout, int64_t N, int64_t K, void* out) {
  check_row(K);
  const int64_t KB = K / kValues;
  const auto* q = static_cast<const uint8_t*>(device_layout);
  const auto* s = reinterpret_cast<const float*>(q + N * K);
  auto* dst = static_cast<uint8_t*>(out);
  ThreadPool::global().parallel_for(N, 64, [&](int, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t kb = 0; kb < KB; ++kb) {
        uint8_t* blk = dst + (n * KB + kb) * kBlock;
        std::memcpy(blk, q + n * K + kb * kValues, kValues);
        std::memcpy(blk + kValues, s + kb * N + n, sizeof(float));
        std::memset(blk + kValues + 4, 0, kBlock - kValues - 4);
      }
  });
}

}  // namespace redhare::cuda
