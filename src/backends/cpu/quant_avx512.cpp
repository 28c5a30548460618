// The quant kernels with AVX-512 (F, BW, VL, VNNI): the 32-value block types take two blocks per
// 512-bit register with vpdpbusd (and mask moves for the Q5 fifth bits); the K types take 64
// values per register, with vpermw to spread the sub-block scales.
#if defined(__x86_64__)

#define RH_QNS avx512
#define RH_QTARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define RH_QAVX512 1
// GCC 12's AVX-512 intrinsics build some results from _mm512_undefined_*(), which its
// -W(maybe-)uninitialized then report at every inlined use (GCC bug 105593); the values are
// fully written, so the warnings are off for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "backends/cpu/quant_kernels_impl.h"

namespace redhare::quant {
const KernelTable& avx512_kernels() {
  static const KernelTable table = avx512::make_table();
  return table;
}
}  // namespace redhare::quant

#endif
