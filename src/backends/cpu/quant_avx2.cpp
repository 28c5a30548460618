// The quant kernels for AVX2 + FMA + F16C, the x86-64 baseline redhare's fast paths assume.
#if defined(__x86_64__)

#define RH_QNS avx2
#define RH_QTARGET __attribute__((target("avx2,fma,f16c")))
#define RH_QAVX512 0
#include "backends/cpu/quant_kernels_impl.h"

namespace redhare::quant {
const KernelTable& avx2_kernels() {
  static const KernelTable table = avx2::make_table();
  return table;
}
}  // namespace redhare::quant

#endif
