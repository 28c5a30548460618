// Dispatch of the quant kernels: picks the instruction set once, prepares the activations and
// splits the weight rows over the thread pool.
#include <vector>

#include "backends/cpu/quant.h"
#include "backends/cpu/quant_kernels.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace redhare {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__)
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

const quant::KernelTable* kernel_table(QuantIsa isa) {
#if defined(__x86_64__)
  if (isa == QuantIsa::kAvx2) return &quant::avx2_kernels();
  if (isa == QuantIsa::kAvx512) return &quant::avx512_kernels();
#endif
  return nullptr;
}

// Rows per work unit: small enough to balance two to a few dozen threads on one matrix, large
// enough that the split costs nothing next to a row's dot products.
constexpr int64_t kRowGrain = 8;

// Without SIMD, one row at a time is expanded to floats in a per-thread buffer.
void matmul_scalar(DType t, const uint8_t* w, int64_t n_rows, int64_t k, const float* x, int64_t m,
                   float* y) {
  const int64_t row_bytes = dtype_bytes(t, k);
  ThreadPool::global().parallel_for(n_rows, kRowGrain, [&](int, int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = begin; r < end; ++r) {
      dequantize_row_ref(t, w + r * row_bytes, row.data(), k);
      for (int64_t i = 0; i < m; ++i) {
        float s = 0;
        for (int64_t j = 0; j < k; ++j) s += row[j] * x[i * k + j];
        y[i * n_rows + r] = s;
      }
    }
  });
}

}  // namespace

std::string_view quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kScalar:
      return "scalar";
    case QuantIsa::kAvx2:
      return "avx2";
    case QuantIsa::kAvx512:
      return "avx512-vnni";
  }
  return "?";
}

bool quant_isa_available(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kScalar:
      return true;
    case QuantIsa::kAvx2:
      return cpu_has_avx2();
    case QuantIsa::kAvx512:
      return cpu_has_avx512();
  }
  return false;
}

QuantIsa quant_best_isa() {
  static const QuantIsa best = cpu_has_avx512() ? QuantIsa::kAvx512
                               : cpu_has_avx2() ? QuantIsa::kAvx2
                                                : QuantIsa::kScalar;
  return best;
}

void quant_matmul(DType t, const void* w, int64_t n_rows, int64_t k, const float* x, int64_t m,
                  float* y) {
  quant_matmul_isa(quant_best_isa(), t, w, n_rows, k, x, m, y);
}

void quant_matmul_isa(QuantIsa isa, DType t, const void* w, int64_t n_rows, int64_t k,
                      const float* x, int64_t m, float* y) {
  if (!quant_supported(t)) fail("quantized matmul does not handle ", dtype_name(t), " weights");
  const DTypeInfo& info = dtype_info(t);
  if (k < 0 || k % info.block_elems != 0)
    fail("quantized matmul: rows of ", k, " ", info.name, " values are not a whole number of ",
         info.block_elems, "-value blocks");
  RH_CHECK(n_rows >= 0 && m >= 0, "bad matmul size ", n_rows, "x", k, " m=", m);
  RH_CHECK(quant_isa_available(isa), "instruction set ", quant_isa_name(isa), " not available");
  if (n_rows == 0 || m == 0) return;
  const auto* wb = static_cast<const uint8_t*>(w);
  const quant::KernelTable* table = kernel_table(isa);
  if (!table) {
    matmul_scalar(t, wb, n_rows, k, x, m, y);
    return;
  }
  const quant::RowDot dot = table->dot[static_cast<int>(t)];
  RH_CHECK(dot != nullptr, "no ", quant_isa_name(isa), " kernel for ", dtype_name(t));

  ThreadPool& pool = ThreadPool::global();
  // Activations are quantized once per call and then read by every row; float weights use them
  // as they are.
  const void* act = x;
  int64_t act_row = k * 4;
  thread_local std::vector<uint8_t> act_buffer;
  if (const int block = quant::act_block_elems(t); block != 0) {
    const quant::QuantizeRow quantize = block == 32 ? table->quantize32 : table->quantize256;
    act_row = quant::act_row_bytes(t, k);
    act_buffer.resize(static_cast<size_t>(act_row * m));
    uint8_t* out = act_buffer.data();
    pool.parallel_for(m, 1, [&](int, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) quantize(x + i * k, k, out + i * act_row);
    });
    act = out;
  }
  const int64_t row_bytes = dtype_bytes(t, k);
  const auto* act_bytes = static_cast<const uint8_t*>(act);
  // Each weight row is read from memory once and reused from L1 for all m activation rows.
  pool.parallel_for(n_rows, kRowGrain, [&](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < m; ++i)
        y[i * n_rows + r] = dot(wb + r * row_bytes, act_bytes + i * act_row, k);
  });
}

}  // namespace redhare
