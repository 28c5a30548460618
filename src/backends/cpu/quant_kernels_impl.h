// Row dot products on packed quantized blocks, written once and compiled per instruction set.
//
// Deliberately without an include guard: quant_avx2.cpp and quant_avx512.cpp each include it
// once after defining RH_QNS (the namespace), RH_QTARGET (the target attribute every function
// here carries, so the rest of the build needs no special flags) and RH_QAVX512 (1 for the
// 512-bit versions of the block loops and AVX-512 VNNI / BW instructions).
//
// The weights stay packed: each block is unpacked to unsigned 8-bit integers in registers and
// multiplied with the 8-bit activations (vpmaddubsw, or vpdpbusd with VNNI), the per-block
// offsets are folded in through the activation sums, and one float multiply-add per block applies
// the two scales. At m = 1 the weights stream from DRAM once, so the loops also prefetch ahead.

#include <immintrin.h>

#include <cstring>

#include "backends/cpu/quant_kernels.h"

namespace redhare::quant::RH_QNS {
namespace {

#define RH_QFN RH_QTARGET static inline

RH_QFN float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Sum of products of unsigned bytes `a` and signed bytes `b`, four per 32-bit lane. The AVX2 form
// goes through saturating 16-bit pair sums; every caller keeps |a| * |b| * 2 below 2^15.
RH_QFN __m256i dot_u8s8(__m256i a, __m256i b) {
#if RH_QAVX512
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
#endif
}

RH_QFN float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles to 32 bytes: values 0-15 from the low nibbles, 16-31 from the high ones.
// The bytes are loaded into both lanes and only the high lane shifted, which avoids a lane
// insert (a shuffle-port operation) per block.
RH_QFN __m256i unpack_nibbles(const uint8_t* qs) {
  __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j where bit j of the little-endian 32-bit word at p is set: the Q5 fifth bits.
RH_QFN __m256i fifth_bits(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
#if RH_QAVX512
  return _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10));
#else
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i select = _mm256_set1_epi64x(0x8040201008040201);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), spread);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, select), select);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
#endif
}

RH_QFN __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Weights stream from memory once; a software prefetch this far ahead keeps more cache misses
// in flight than the hardware prefetcher alone (which stops at page boundaries).
constexpr int kPrefetchBytes = 2048;

RH_QFN void prefetch_block(const uint8_t* w, int bytes) {
  for (int off = 0; off < bytes; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchBytes + off, _MM_HINT_T0);
}

// ---- 32-value blocks ----

enum class B32 { kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1 };

// Byte layout of each 32-value block: f16 scale first; then an f16 min (Q4_1, Q5_1); then the
// 32 fifth bits (Q5 types); then the values (16 bytes of nibbles, or 32 signed bytes for Q8_0).
// kOffset is what the stored values are offset by.
template <B32 T>
struct B32Layout {
  static constexpr bool kMin = T == B32::kQ4_1 || T == B32::kQ5_1;
  static constexpr bool kFifth = T == B32::kQ5_0 || T == B32::kQ5_1;
  static constexpr int kBits = kMin ? 4 : 2;
  static constexpr int kValues = kBits + (kFifth ? 4 : 0);
  static constexpr int kBytes = T == B32::kQ8_0 ? 34 : kValues + 16;
  static constexpr int kOffset = T == B32::kQ4_0 ? 8 : T == B32::kQ5_0 ? 16 : 0;
};

// Integer products of one weight block with its 32 activation values, offset already taken
// off: the eight 32-bit lanes sum to the block's dot product. offset * sum(x) is spread over the
// lanes, so it comes off exactly before the conversion to float.
template <B32 T>
RH_QTARGET inline __m256i block32(const uint8_t* w, const int8_t* x, int32_t sum) {
  using L = B32Layout<T>;
  if constexpr (T == B32::kQ8_0) {
    __m256i q = load256(w + 2);
    // The unsigned operand must be |w|: w's sign moves onto x.
    return dot_u8s8(_mm256_abs_epi8(q), _mm256_sign_epi8(load256(x), q));
  } else {
    __m256i q = unpack_nibbles(w + L::kValues);
    if constexpr (L::kFifth) q = _mm256_or_si256(q, fifth_bits(w + L::kBits));
    __m256i p = dot_u8s8(q, load256(x));
    if constexpr (L::kOffset != 0) p = _mm256_sub_epi32(p, _mm256_set1_epi32(L::kOffset / 8 * sum));
    return p;
  }
}

#if RH_QAVX512
// Two blocks per 512-bit register: lanes 0-7 block b, lanes 8-15 block b + 1.
alignas(64) constexpr int32_t kPairIndex[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};

RH_QFN __m512i join256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

RH_QFN __m512i unpack_nibbles2(const uint8_t* a, const uint8_t* b) {
  __m512i v =
      join256(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
              _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b))));
  v = _mm512_srlv_epi32(v, _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4));
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

RH_QFN uint32_t u16_pair(const uint8_t* a, const uint8_t* b) {
  uint16_t x, y;
  std::memcpy(&x, a, 2);
  std::memcpy(&y, b, 2);
  return x | static_cast<uint32_t>(y) << 16;
}

// The two f16 values at a and b times the two floats at f, broadcast to each block's lanes.
RH_QFN __m512 scale_pair(const uint8_t* a, const uint8_t* b, const float* f) {
  __m128 h = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(u16_pair(a, b))));
  __m128 s = _mm_mul_ps(h, _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(f))));
  return _mm512_permutexvar_ps(_mm512_load_si512(kPairIndex), _mm512_castps128_ps512(s));
}

template <B32 T>
RH_QTARGET inline __m512i block32_pair(const uint8_t* w, const int8_t* x, const int32_t* neg_sum8) {
  using L = B32Layout<T>;
  const uint8_t* w1 = w + L::kBytes;
  const __m512i xv = _mm512_loadu_si512(x);
  if constexpr (T == B32::kQ8_0) {
    __m512i q = join256(load256(w + 2), load256(w1 + 2));
    __m512i xs = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(q), _mm512_setzero_si512(), xv);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(q), xs);
  } else {
    __m512i q = unpack_nibbles2(w + L::kValues, w1 + L::kValues);
    if constexpr (L::kFifth) {
      uint32_t h0, h1;
      std::memcpy(&h0, w + L::kBits, 4);
      std::memcpy(&h1, w1 + L::kBits, 4);
      q = _mm512_or_si512(
          q, _mm512_maskz_mov_epi8(h0 | static_cast<uint64_t>(h1) << 32, _mm512_set1_epi8(0x10)));
    }
    if constexpr (L::kOffset == 0) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xv);
    // Lanes start at -sum: 8 lanes take off 8 * sum, the Q4_0 offset; Q5_0 takes it twice.
    const __m512i neg_sums = _mm512_loadu_si512(neg_sum8);
    __m512i p = _mm512_dpbusd_epi32(neg_sums, q, xv);
    if constexpr (L::kOffset == 16) p = _mm512_add_epi32(p, neg_sums);
    return p;
  }
}
#endif

// One f16 scale (and min) per block, applied with one multiply-add per block after the integer
// products. Several accumulators, so consecutive multiply-adds do not wait on each other.
template <B32 T>
RH_QTARGET float dot_blocks32(const uint8_t* w, const void* act, int64_t k) {
  using L = B32Layout<T>;
  const ActRow32 x = act_row32(act, k);
  const int64_t nb = k / 32;
  int64_t b = 0;
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
#if RH_QAVX512
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m128 min_acc = _mm_setzero_ps();
  for (; b + 2 <= nb; b += 2) {
    const uint8_t* wb = w + b * L::kBytes;
    _mm_prefetch(reinterpret_cast<const char*>(wb) + kPrefetchBytes, _MM_HINT_T0);
    __m512i p = block32_pair<T>(wb, x.q + 32 * b, x.neg_sum8 + 8 * b);
    __m512 scale = scale_pair(wb, wb + L::kBytes, x.d + b);
    // Alternate accumulators on block pairs.
    if ((b & 2) == 0)
      acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc0);
    else
      acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc1);
    if constexpr (L::kMin) {
      __m128 m =
          _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(u16_pair(wb + 2, wb + L::kBytes + 2))));
      __m128 dx = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x.d + b)));
      __m128 sx = _mm_cvtepi32_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x.sum + b)));
      min_acc = _mm_fmadd_ps(_mm_mul_ps(m, dx), sx, min_acc);
    }
  }
  float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  if constexpr (L::kMin) {
    min_acc = _mm_add_ps(min_acc, _mm_movehdup_ps(min_acc));
    mins += _mm_cvtss_f32(min_acc);
  }
#else
  __m256 acc1 = _mm256_setzero_ps();
  float mins1 = 0;
  for (; b + 2 <= nb; b += 2) {
    const uint8_t* w0 = w + b * L::kBytes;
    const uint8_t* w1 = w0 + L::kBytes;
    _mm_prefetch(reinterpret_cast<const char*>(w0) + kPrefetchBytes, _MM_HINT_T0);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block32<T>(w0, x.q + 32 * b, x.sum[b])),
                          _mm256_set1_ps(f16_at(w0) * x.d[b]), acc);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block32<T>(w1, x.q + 32 * b + 32, x.sum[b + 1])),
                           _mm256_set1_ps(f16_at(w1) * x.d[b + 1]), acc1);
    if constexpr (L::kMin) {
      mins += f16_at(w0 + 2) * x.d[b] * static_cast<float>(x.sum[b]);
      mins1 += f16_at(w1 + 2) * x.d[b + 1] * static_cast<float>(x.sum[b + 1]);
    }
  }
  acc = _mm256_add_ps(acc, acc1);
  mins += mins1;
  float total = 0;
#endif
  if (b < nb) {
    const uint8_t* w0 = w + b * L::kBytes;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block32<T>(w0, x.q + 32 * b, x.sum[b])),
                          _mm256_set1_ps(f16_at(w0) * x.d[b]), acc);
    if constexpr (L::kMin) mins += f16_at(w0 + 2) * x.d[b] * static_cast<float>(x.sum[b]);
  }
  return total + hsum_ps(acc) + mins;
}

// ---- 256-value K blocks ----

// The 6-bit scales and mins of Q4_K / Q5_K (layout in quant_ref.cpp), unpacked four at a time as
// 32-bit words: returns the eight scales in bytes 0-7 and the eight mins in bytes 8-15.
RH_QFN __m128i unpack_k_scales(const uint8_t* s) {
  uint32_t a, b, c;
  std::memcpy(&a, s, 4);
  std::memcpy(&b, s + 4, 4);
  std::memcpy(&c, s + 8, 4);
  const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
  uint32_t sc_lo = a & low6;
  uint32_t sc_hi = (c & low4) | (((a >> 6) & low2) << 4);
  uint32_t mn_lo = b & low6;
  uint32_t mn_hi = ((c >> 4) & low4) | (((b >> 6) & low2) << 4);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(mn_lo),
                        static_cast<int>(mn_hi));
}

// Byte shuffles for vpshufb over 16-bit words (the same eight words in both 128-bit lanes):
// broadcast(j) puts word j everywhere; pair(j) puts word 2j in the low lane and word 2j + 1 in
// the high lane.
struct WordShuffles {
  alignas(32) int8_t broadcast[8][32];
  alignas(32) int8_t pair[4][32];
};
constexpr WordShuffles make_word_shuffles() {
  WordShuffles t{};
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 32; ++i) t.broadcast[j][i] = static_cast<int8_t>(2 * j + (i & 1));
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 32; ++i)
      t.pair[j][i] = static_cast<int8_t>(2 * (2 * j + (i >= 16)) + (i & 1));
  return t;
}
constexpr WordShuffles kWordShuffles = make_word_shuffles();

RH_QFN __m256i word_broadcast(__m256i words, int j) {
  return _mm256_shuffle_epi8(words, load256(kWordShuffles.broadcast[j]));
}
RH_QFN __m256i word_pair(__m256i words, int j) {
  return _mm256_shuffle_epi8(words, load256(kWordShuffles.pair[j]));
}

// Products of 32 weights (unsigned, < 64) and 32 activations, as 16-bit pair sums scaled by the
// 16-bit scales in `scale16` into eight 32-bit lanes. |q| * 127 * 2 < 2^15 keeps the pair sums
// exact.
RH_QFN __m256i scaled_dot(__m256i q, __m256i x, __m256i scale16) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scale16);
}

// Q4_K and Q5_K differ only in where a sub-block's values come from; kFifth selects Q5_K's extra
// bit plane. Sub-blocks 2j and 2j + 1 share 32 bytes of nibbles (low, high).
template <bool kFifth>
RH_QTARGET float dot_q45_k(const uint8_t* w, const void* act, int64_t k) {
  constexpr int kBytes = kFifth ? 176 : 144;
  const auto* x = static_cast<const ActBlock256*>(act);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / 256; ++b, w += kBytes) {
    prefetch_block(w, kBytes);
    const __m128i sm = unpack_k_scales(w + 4);
    // Scales as 16-bit words, the same eight in both lanes, for the per-sub-block broadcasts.
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    // Mins: sum_s min[s] * sum(q_x in s), from the 16-value sums added in pairs.
    __m256i pair_sums = _mm256_madd_epi16(load256(x[b].bsums), _mm256_set1_epi16(1));
    __m256i mins = _mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8));
    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(pair_sums, mins)),
                              _mm256_set1_ps(f16_at(w + 2) * x[b].d), acc_min);

    const uint8_t* qs = w + (kFifth ? 48 : 16);
    __m256i qh = kFifth ? load256(w + 16) : _mm256_setzero_si256();
    __m256i sum = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      __m256i q = load256(qs + 32 * j);
      __m256i lo = _mm256_and_si256(q, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      if (kFifth) {
        // Bit s of each qh byte is the fifth bit of sub-block s: moved to bit 4 of the byte.
        const __m256i one = _mm256_set1_epi8(1);
        __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j)), one);
        __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j + 1)), one);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
      }
      sum = _mm256_add_epi32(
          sum, scaled_dot(lo, load256(x[b].q + 64 * j), word_broadcast(scales, 2 * j)));
      sum = _mm256_add_epi32(
          sum, scaled_dot(hi, load256(x[b].q + 64 * j + 32), word_broadcast(scales, 2 * j + 1)));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(f16_at(w) * x[b].d), acc);
  }
  return hsum_ps(_mm256_sub_ps(acc, acc_min));
}

RH_QFN float dot_q6_k(const uint8_t* w, const void* act, int64_t k) {
  const auto* x = static_cast<const ActBlock256*>(act);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i low2 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / 256; ++b, w += 210) {
    prefetch_block(w, 210);
    const uint8_t* ql = w;
    const uint8_t* qh = w + 128;
    const uint8_t* sc = w + 192;
    // The stored values are offset by 32: minus 32 * scale_g * sum(q_x in g) for the 16 groups,
    // two groups per lane.
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    __m256i sum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(x[b].bsums)), 5);
    sum = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
    for (int h = 0; h < 2; ++h) {
      __m256i l0 = load256(ql + 64 * h);
      __m256i l1 = load256(ql + 64 * h + 32);
      __m256i hb = load256(qh + 32 * h);
      // Scales 8h .. 8h + 7 as 16-bit words in both lanes; group g of 32 values uses 8h + 2g for
      // its first 16 values (low lane) and 8h + 2g + 1 for the rest (high lane).
      __m256i scales = _mm256_broadcastsi128_si256(
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8 * h))));
      __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, low4),
                          _mm256_slli_epi16(_mm256_and_si256(hb, low2), 4)),
          _mm256_or_si256(_mm256_and_si256(l1, low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), low2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), low2), 4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), low2), 4)),
      };
      for (int g = 0; g < 4; ++g)
        sum = _mm256_add_epi32(
            sum, scaled_dot(q[g], load256(x[b].q + 128 * h + 32 * g), word_pair(scales, g)));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(f16_at(w + 208) * x[b].d), acc);
  }
  return hsum_ps(acc);
}

#if RH_QAVX512
// The K types on 512-bit registers: one register holds 64 consecutive activation values, which
// for Q4_K / Q5_K are the low and the high nibbles of the same 32 bytes (sub-blocks 2j, 2j + 1)
// and for Q6_K two of its 32-value groups. The weight bytes are loaded into both 256-bit halves
// and shifted per half, so no lane shuffles are needed.

// vpermw selections of the 16-bit sub-block scales for each 128-bit lane (16 values).
struct KScaleIndex {
  alignas(64) int16_t q45[4][32];    // j: scale 2j for the low half, 2j + 1 for the high half
  alignas(64) int16_t q6[4][32];     // 2h + part: scale 8h + 4 part + lane
  alignas(64) uint8_t fifth[4][64];  // Q5_K bit of sub-block 2j (low half) and 2j + 1 (high)
};
constexpr KScaleIndex make_k_scale_index() {
  KScaleIndex t{};
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 32; ++i) {
      t.q45[j][i] = static_cast<int16_t>(2 * j + (i >= 16));
      t.q6[j][i] = static_cast<int16_t>(8 * (j / 2) + 4 * (j % 2) + i / 8);
    }
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 64; ++i) t.fifth[j][i] = static_cast<uint8_t>(1u << (2 * j + (i >= 32)));
  return t;
}
constexpr KScaleIndex kKScaleIndex = make_k_scale_index();

RH_QFN __m512i load512(const void* p) {
  return _mm512_loadu_si512(p);
}
RH_QFN __m512i both_halves(const uint8_t* p) {
  return _mm512_broadcast_i64x4(load256(p));
}

template <bool kFifth>
RH_QTARGET float dot_q45_k_512(const uint8_t* w, const void* act, int64_t k) {
  constexpr int kBytes = kFifth ? 176 : 144;
  const auto* x = static_cast<const ActBlock256*>(act);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / 256; ++b, w += kBytes) {
    prefetch_block(w, kBytes);
    const __m128i sm = unpack_k_scales(w + 4);
    const __m512i scales = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(sm));
    __m256i pair_sums = _mm256_madd_epi16(load256(x[b].bsums), _mm256_set1_epi16(1));
    __m256i mins = _mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8));
    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(pair_sums, mins)),
                              _mm256_set1_ps(f16_at(w + 2) * x[b].d), acc_min);
    const uint8_t* qs = w + (kFifth ? 48 : 16);
    const __m512i qh = kFifth ? both_halves(w + 16) : _mm512_setzero_si512();
    __m512i sum = _mm512_setzero_si512();
    for (int j = 0; j < 4; ++j) {
      __m512i q = _mm512_and_si512(_mm512_srlv_epi64(both_halves(qs + 32 * j), nibble_shift), low4);
      if (kFifth) {
        __mmask64 bit5 = _mm512_test_epi8_mask(qh, load512(kKScaleIndex.fifth[j]));
        q = _mm512_mask_add_epi8(q, bit5, q, _mm512_set1_epi8(16));
      }
      __m512i sc = _mm512_permutexvar_epi16(load512(kKScaleIndex.q45[j]), scales);
      sum = _mm512_add_epi32(
          sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q, load512(x[b].q + 64 * j)), sc));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(f16_at(w) * x[b].d), acc);
  }
  return _mm512_reduce_add_ps(acc) - hsum_ps(acc_min);
}

RH_QFN float dot_q6_k_512(const uint8_t* w, const void* act, int64_t k) {
  const auto* x = static_cast<const ActBlock256*>(act);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i low2 = _mm512_set1_epi8(3);
  const __m512i shift_lo = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i shift_hi = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < k / 256; ++b, w += 210) {
    prefetch_block(w, 210);
    const uint8_t* ql = w;
    const uint8_t* qh = w + 128;
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));
    const __m512i scales = _mm512_zextsi256_si512(sc16);
    // The stored values are offset by 32 (see dot_q6_k).
    __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(x[b].bsums)), 5);
    __m512i sum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offset));
    for (int h = 0; h < 2; ++h) {
      __m512i l = load512(ql + 64 * h);
      __m512i hb = both_halves(qh + 32 * h);
      __m512i lo = _mm512_or_si512(
          _mm512_and_si512(l, low4),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, shift_lo), low2), 4));
      __m512i hi = _mm512_or_si512(
          _mm512_and_si512(_mm512_srli_epi16(l, 4), low4),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, shift_hi), low2), 4));
      __m512i sc_lo = _mm512_permutexvar_epi16(load512(kKScaleIndex.q6[2 * h]), scales);
      __m512i sc_hi = _mm512_permutexvar_epi16(load512(kKScaleIndex.q6[2 * h + 1]), scales);
      sum = _mm512_add_epi32(
          sum, _mm512_madd_epi16(_mm512_maddubs_epi16(lo, load512(x[b].q + 128 * h)), sc_lo));
      sum = _mm512_add_epi32(
          sum, _mm512_madd_epi16(_mm512_maddubs_epi16(hi, load512(x[b].q + 128 * h + 64)), sc_hi));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(f16_at(w + 208) * x[b].d), acc);
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

// ---- plain float weights ----

RH_QFN __m256 load_f32x8(const uint8_t* p) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
}
RH_QFN __m256 load_f16x8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
RH_QFN __m256 load_bf16x8(const uint8_t* p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

RH_QFN float scalar_weight(DType t, const uint8_t* p) {
  uint16_t h;
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kF16:
      std::memcpy(&h, p, 2);
      return _cvtsh_ss(h);
    default:
      std::memcpy(&h, p, 2);
      return bf16_to_f32(h);
  }
}

// Two accumulators hide the FMA latency; the tail of fewer than 16 values goes one at a time.
#define RH_FLOAT_DOT(NAME, TYPE, LOAD, ELEM_BYTES)                                          \
  RH_QFN float NAME(const uint8_t* w, const void* act, int64_t k) {                         \
    const float* x = static_cast<const float*>(act);                                        \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                              \
    int64_t j = 0;                                                                          \
    for (; j + 16 <= k; j += 16) {                                                          \
      _mm_prefetch(reinterpret_cast<const char*>(w + j * ELEM_BYTES) + kPrefetchBytes,      \
                   _MM_HINT_T0);                                                            \
      a0 = _mm256_fmadd_ps(LOAD(w + j * ELEM_BYTES), _mm256_loadu_ps(x + j), a0);           \
      a1 = _mm256_fmadd_ps(LOAD(w + (j + 8) * ELEM_BYTES), _mm256_loadu_ps(x + j + 8), a1); \
    }                                                                                       \
    float s = hsum_ps(_mm256_add_ps(a0, a1));                                               \
    for (; j < k; ++j) s += scalar_weight(TYPE, w + j * ELEM_BYTES) * x[j];                 \
    return s;                                                                               \
  }

RH_FLOAT_DOT(dot_f32, DType::kF32, load_f32x8, 4)
RH_FLOAT_DOT(dot_f16, DType::kF16, load_f16x8, 2)
RH_FLOAT_DOT(dot_bf16, DType::kBF16, load_bf16x8, 2)

#undef RH_FLOAT_DOT

// ---- activation quantization ----
//
// Same rule as quantize_act_row in quant_ref.cpp (scale max|x| / 127, round to nearest even), so
// both produce the same bytes.

RH_QFN float abs_max(const float* x, int n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

RH_QFN int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// 32 values times `inv`, rounded, to 32 signed bytes at q; returns the sums of the first and the
// second 16.
RH_QFN void quantize32(const float* x, __m256 inv, int8_t* q, int32_t* sum_lo, int32_t* sum_hi) {
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  __m256i i[4];
  for (int j = 0; j < 4; ++j) {
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), inv));
    i[j] = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
  }
  *sum_lo = hsum_epi32(_mm256_add_epi32(i[0], i[1]));
  *sum_hi = hsum_epi32(_mm256_add_epi32(i[2], i[3]));
  // The packs work within 128-bit lanes; the permute restores the element order.
  __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), b);
}

RH_QFN float scale_and_inverse(float amax, __m256* inv) {
  float d = amax / 127.0f;
  *inv = _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f);
  return d;
}

RH_QTARGET void quantize_act32(const float* x, int64_t k, void* out) {
  ActRow32 row = act_row32(out, k);
  auto* q = const_cast<int8_t*>(row.q);
  auto* d = const_cast<float*>(row.d);
  auto* sums = const_cast<int32_t*>(row.sum);
  auto* neg_sum8 = const_cast<int32_t*>(row.neg_sum8);
  for (int64_t b = 0; b < k / 32; ++b) {
    __m256 inv;
    d[b] = scale_and_inverse(abs_max(x + 32 * b, 32), &inv);
    int32_t s0, s1;
    quantize32(x + 32 * b, inv, q + 32 * b, &s0, &s1);
    sums[b] = s0 + s1;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(neg_sum8 + 8 * b), _mm256_set1_epi32(-sums[b]));
  }
}

RH_QTARGET void quantize_act256(const float* x, int64_t k, void* out) {
  auto* blocks = static_cast<ActBlock256*>(out);
  for (int64_t b = 0; b < k / 256; ++b) {
    const float* xb = x + 256 * b;
    __m256 inv;
    blocks[b].d = scale_and_inverse(abs_max(xb, 256), &inv);
    for (int j = 0; j < 8; ++j) {
      int32_t s0, s1;
      quantize32(xb + 32 * j, inv, blocks[b].q + 32 * j, &s0, &s1);
      blocks[b].bsums[2 * j] = static_cast<int16_t>(s0);
      blocks[b].bsums[2 * j + 1] = static_cast<int16_t>(s1);
    }
  }
}

#undef RH_QFN

KernelTable make_table() {
  KernelTable t;
  auto set = [&t](DType d, RowDot f) { t.dot[static_cast<int>(d)] = f; };
  set(DType::kF32, dot_f32);
  set(DType::kF16, dot_f16);
  set(DType::kBF16, dot_bf16);
  set(DType::kQ8_0, dot_blocks32<B32::kQ8_0>);
  set(DType::kQ4_0, dot_blocks32<B32::kQ4_0>);
  set(DType::kQ4_1, dot_blocks32<B32::kQ4_1>);
  set(DType::kQ5_0, dot_blocks32<B32::kQ5_0>);
  set(DType::kQ5_1, dot_blocks32<B32::kQ5_1>);
#if RH_QAVX512
  set(DType::kQ4_K, dot_q45_k_512<false>);
  set(DType::kQ5_K, dot_q45_k_512<true>);
  set(DType::kQ6_K, dot_q6_k_512);
#else
  set(DType::kQ4_K, dot_q45_k<false>);
  set(DType::kQ5_K, dot_q45_k<true>);
  set(DType::kQ6_K, dot_q6_k);
#endif
  t.quantize32 = quantize_act32;
  t.quantize256 = quantize_act256;
  return t;
}

}  // namespace
}  // namespace redhare::quant::RH_QNS
