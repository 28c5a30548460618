// AVX2 build of the matrix kernel; compiled with -mavx2 -mfma -mf16c and only called when the CPU
// reports those features.
#include <immintrin.h>

#include "backends/cpu/linear_kernels.h"

namespace redhare::cpu {
namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr int kWidth = 8;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  struct BF16Load {
    using elem = uint16_t;
    static vec load(const uint16_t* p) {
      __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    static float scalar(uint16_t h) {
      uint32_t u = static_cast<uint32_t>(h) << 16;
      float f;
      __builtin_memcpy(&f, &u, 4);
      return f;
    }
    static void to_f32(const uint16_t* src, float* dst, int64_t n) {
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load(src + i));
      for (; i < n; ++i) dst[i] = scalar(src[i]);
    }
  };
  struct F16Load {
    using elem = uint16_t;
    static vec load(const uint16_t* p) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static float scalar(uint16_t h) { return _cvtsh_ss(h); }
    static void to_f32(const uint16_t* src, float* dst, int64_t n) {
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load(src + i));
      for (; i < n; ++i) dst[i] = scalar(src[i]);
    }
  };
};

#include "backends/cpu/linear_kernel.inl"

}  // namespace

void linear_range_avx2(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                       int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch) {
  linear_range_any<Avx2>(wtype, w, x, M, K, y, N, bias, n0, n1, scratch);
}

}  // namespace redhare::cpu
