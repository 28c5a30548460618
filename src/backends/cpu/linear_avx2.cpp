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

  static float f16(const uint8_t* p) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    return _cvtsh_ss(h);
  }
  static void dq_q8_0(const uint8_t* b, float* y) {
    const __m256 d = _mm256_set1_ps(f16(b));
    for (int h = 0; h < 4; ++h) {
      __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * h));
      _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
  }
  // Values j and j + 16 of a 4-bit block live in the low and high nibble of byte j.
  static void nibble_halves(const uint8_t* qs, int half, __m128i* lo, __m128i* hi) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * half));
    const __m128i mask = _mm_set1_epi8(0x0F);
    *lo = _mm_and_si128(bytes, mask);
    *hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  }
  static void dq_q4_0(const uint8_t* b, float* y) {
    const __m256 d = _mm256_set1_ps(f16(b));
    const __m256i eight = _mm256_set1_epi32(8);
    for (int h = 0; h < 2; ++h) {
      __m128i lo, hi;
      nibble_halves(b + 2, h, &lo, &hi);
      _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(lo), eight))));
      _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(hi), eight))));
    }
  }
  // 32 values scale * ((q >> 4 * high) & 15) - min from 32 bytes of nibbles.
  static void dq_nibbles32(const uint8_t* q, int high, float scale, float min, float* y) {
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(min);
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int h = 0; h < 4; ++h) {
      __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * h));
      if (high) bytes = _mm_srli_epi16(bytes, 4);
      __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
      _mm256_storeu_ps(y + 8 * h, _mm256_sub_ps(_mm256_mul_ps(vs, f), vm));
    }
  }
  static void dq_q4_1(const uint8_t* b, float* y) {
    const __m256 d = _mm256_set1_ps(f16(b)), m = _mm256_set1_ps(f16(b + 2));
    for (int h = 0; h < 2; ++h) {
      __m128i lo, hi;
      nibble_halves(b + 4, h, &lo, &hi);
      _mm256_storeu_ps(y + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo))), m));
      _mm256_storeu_ps(y + 16 + 8 * h, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi))), m));
    }
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

void linear_range_block_avx2(int qtype, int64_t row_bytes, DequantRowFn fallback, const void* w,
                               const float* x, int64_t M, int64_t K, float* y, int64_t N,
                               const float* bias, int64_t n0, int64_t n1, float* scratch) {
  linear_range_block_impl<Avx2>(qtype, row_bytes, fallback, w, x, M, K, y, N, bias, n0, n1, scratch);
}

}  // namespace redhare::cpu
