// AVX-512 build of the matrix kernel; compiled with -mavx512f -mavx512bw -mfma -mf16c and only
// called when the CPU reports those features.
#include <immintrin.h>

#include "backends/cpu/linear_kernels.h"

namespace redhare::cpu {
namespace {

struct Avx512 {
  using vec = __m512;
  static constexpr int kWidth = 16;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(vec v) { return _mm512_reduce_add_ps(v); }

  static float f16(const uint8_t* p) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    return _cvtsh_ss(h);
  }
  static void dq_q8_0(const uint8_t* b, float* y) {
    const __m512 d = _mm512_set1_ps(f16(b));
    for (int h = 0; h < 2; ++h) {
      __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 + 16 * h));
      _mm512_storeu_ps(y + 16 * h, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))));
    }
  }
  static void nibbles(const uint8_t* qs, __m512i* lo, __m512i* hi) {
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(0x0F);
    *lo = _mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask));
    *hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask));
  }
  static void dq_q4_0(const uint8_t* b, float* y) {
    const __m512 d = _mm512_set1_ps(f16(b));
    const __m512i eight = _mm512_set1_epi32(8);
    __m512i lo, hi;
    nibbles(b + 2, &lo, &hi);
    _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight))));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight))));
  }
  // 32 values scale * ((q >> 4 * high) & 15) - min from 32 bytes of nibbles.
  static void dq_nibbles32(const uint8_t* q, int high, float scale, float min, float* y) {
    const __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(min);
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
      __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h));
      if (high) bytes = _mm_srli_epi16(bytes, 4);
      __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
      _mm512_storeu_ps(y + 16 * h, _mm512_sub_ps(_mm512_mul_ps(vs, f), vm));
    }
  }
  static void dq_q4_1(const uint8_t* b, float* y) {
    const __m512 d = _mm512_set1_ps(f16(b)), m = _mm512_set1_ps(f16(b + 2));
    __m512i lo, hi;
    nibbles(b + 4, &lo, &hi);
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), m));
    _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)), m));
  }
  struct BF16Load {
    using elem = uint16_t;
    static vec load(const uint16_t* p) {
      __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    static float scalar(uint16_t h) {
      uint32_t u = static_cast<uint32_t>(h) << 16;
      float f;
      __builtin_memcpy(&f, &u, 4);
      return f;
    }
    static void to_f32(const uint16_t* src, float* dst, int64_t n) {
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load(src + i));
      for (; i < n; ++i) dst[i] = scalar(src[i]);
    }
  };
  struct F16Load {
    using elem = uint16_t;
    static vec load(const uint16_t* p) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static float scalar(uint16_t h) { return _cvtsh_ss(h); }
    static void to_f32(const uint16_t* src, float* dst, int64_t n) {
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load(src + i));
      for (; i < n; ++i) dst[i] = scalar(src[i]);
    }
  };
};

#include "backends/cpu/linear_kernel.inl"

}  // namespace

void linear_range_avx512(int wtype, const void* w, const float* x, int64_t M, int64_t K, float* y,
                         int64_t N, const float* bias, int64_t n0, int64_t n1, float* scratch) {
  linear_range_any<Avx512>(wtype, w, x, M, K, y, N, bias, n0, n1, scratch);
}

void linear_range_block_avx512(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                               const float* x, int64_t M, int64_t K, float* y, int64_t N,
                               const float* bias, int64_t n0, int64_t n1, float* scratch) {
  linear_range_block_impl<Avx512>(qtype, row_bytes, fallback, w, x, M, K, y, N, bias, n0, n1, scratch);
}

}  // namespace redhare::cpu
