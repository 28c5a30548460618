// Reference dequantization and matmul for ggml's block layouts, written for clarity: every fast
// kernel is tested against these.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/quant.h"
#include "backends/cpu/quant_kernels.h"
#include "core/error.h"

namespace redhare {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q4_K and Q5_K pack eight 6-bit scales and eight 6-bit mins into 12 bytes: sub-blocks 0-3 use
// the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 put their low 4 bits in
// bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-7.
void unpack_k_scales(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    mn[j] = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

void dequant_q8_0(const uint8_t* b, float* y) {
  float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<int8_t>(b[2 + j]);
}

// The 32-value blocks store value j in the low nibble of byte j and value j + 16 in its high
// nibble; Q5 types take the fifth bit of value j from bit j of a 32-bit word.
void dequant_q4_0(const uint8_t* b, float* y) {
  float d = f16_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * ((b[2 + j] & 0xF) - 8);
    y[j + 16] = d * ((b[2 + j] >> 4) - 8);
  }
}

void dequant_q4_1(const uint8_t* b, float* y) {
  float d = f16_at(b), m = f16_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * (b[4 + j] & 0xF) + m;
    y[j + 16] = d * (b[4 + j] >> 4) + m;
  }
}

uint32_t u32_at(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void dequant_q5_0(const uint8_t* b, float* y) {
  float d = f16_at(b);
  uint32_t qh = u32_at(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4);
    int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * (lo - 16);
    y[j + 16] = d * (hi - 16);
  }
}

void dequant_q5_1(const uint8_t* b, float* y) {
  float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh = u32_at(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4);
    int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * lo + m;
    y[j + 16] = d * hi + m;
  }
}

// Q4_K: d, dmin, 12 scale bytes, 128 bytes of nibbles. Each 32 bytes of nibbles hold two
// 32-value sub-blocks: the low nibbles the first, the high nibbles the second.
void dequant_q4_k(const uint8_t* b, float* y) {
  float d = f16_at(b), dmin = f16_at(b + 2);
  uint8_t sc[8], mn[8];
  unpack_k_scales(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    const uint8_t* q = qs + 32 * (s / 2);
    int shift = (s % 2) * 4;
    for (int l = 0; l < 32; ++l) y[32 * s + l] = d * sc[s] * ((q[l] >> shift) & 0xF) - dmin * mn[s];
  }
}

// Q5_K: as Q4_K plus 32 bytes whose bit s of byte l is the fifth bit of value l of sub-block s.
void dequant_q5_k(const uint8_t* b, float* y) {
  float d = f16_at(b), dmin = f16_at(b + 2);
  uint8_t sc[8], mn[8];
  unpack_k_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    const uint8_t* q = qs + 32 * (s / 2);
    int shift = (s % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      int v = ((q[l] >> shift) & 0xF) | (((qh[l] >> s) & 1) << 4);
      y[32 * s + l] = d * sc[s] * v - dmin * mn[s];
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed 8-bit scales (one per
// 16 values), d. Each half of 128 values uses 64 low-nibble bytes and 32 high-part bytes: value
// 32g + l of the half (g < 4) takes the low or high nibble of byte l + 32 (g % 2) and bits
// 2g..2g+1 of high-part byte l; stored values are offset by 32.
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  float d = f16_at(b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int g = 0; g < 4; ++g) {
      for (int l = 0; l < 32; ++l) {
        int lo = (ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0xF;
        int hi = (qh[32 * h + l] >> (2 * g)) & 3;
        int idx = 128 * h + 32 * g + l;
        y[idx] = d * sc[idx / 16] * ((lo | (hi << 4)) - 32);
      }
    }
  }
}

// 128 e4m3 values, their f32 scale, 12 bytes of padding.
void dequant_f8_b128(const uint8_t* b, float* y) {
  float scale;
  std::memcpy(&scale, b + 128, 4);
  for (int i = 0; i < 128; ++i) y[i] = f8e4m3_to_f32(b[i]) * scale;
}

using BlockDequant = void (*)(const uint8_t*, float*);

BlockDequant block_dequant(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return dequant_q8_0;
    case DType::kQ4_0:
      return dequant_q4_0;
    case DType::kQ4_1:
      return dequant_q4_1;
    case DType::kQ5_0:
      return dequant_q5_0;
    case DType::kQ5_1:
      return dequant_q5_1;
    case DType::kQ4_K:
      return dequant_q4_k;
    case DType::kQ5_K:
      return dequant_q5_k;
    case DType::kQ6_K:
      return dequant_q6_k;
    case DType::kF8B128:
      return dequant_f8_b128;
    default:
      return nullptr;
  }
}

void check_row(DType t, int64_t n) {
  if (!quant_supported(t)) fail("quantized kernels do not handle ", dtype_name(t), " weights");
  const DTypeInfo& info = dtype_info(t);
  if (n < 0 || n % info.block_elems != 0)
    fail("a row of ", n, " ", info.name, " values is not a whole number of ", info.block_elems,
         "-value blocks");
}

}  // namespace

bool quant_supported(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || block_dequant(t) != nullptr;
}

void dequantize_row_ref(DType t, const void* src, float* dst, int64_t n) {
  check_row(t, n);
  if (!is_block_quantized(t)) {
    convert_to_f32(t, src, dst, n);
    return;
  }
  const DTypeInfo& info = dtype_info(t);
  BlockDequant f = block_dequant(t);
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / info.block_elems; ++b)
    f(p + b * info.block_bytes, dst + b * info.block_elems);
}

void quant_matmul_ref(DType t, const void* w, int64_t n_rows, int64_t k, const float* x, int64_t m,
                      float* y) {
  check_row(t, k);
  RH_CHECK(n_rows >= 0 && m >= 0, "bad matmul size ", n_rows, "x", k, " m=", m);
  const int64_t row_bytes = dtype_bytes(t, k);
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < n_rows; ++r) {
    dequantize_row_ref(t, static_cast<const uint8_t*>(w) + r * row_bytes, row.data(), k);
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += static_cast<double>(x[i * k + j]) * row[j];
      y[i * n_rows + r] = static_cast<float>(acc);
    }
  }
}

namespace quant {

int act_block_elems(DType t) {
  if (!is_block_quantized(t)) return 0;
  return dtype_info(t).block_elems;
}

int64_t act_row_bytes(DType t, int64_t k) {
  switch (act_block_elems(t)) {
    case 32:
      return k + k / 32 * 40;  // values; per block a scale, a sum and 8 copies of -sum
    case 256:
      return k / 256 * static_cast<int64_t>(sizeof(ActBlock256));
    default:
      return k * 4;
  }
}

namespace {
// Rounds x / d to the nearest integer in [-127, 127]; d = max|x| / 127 so the clamp only
// guards against float rounding at the extremes.
float block_scale(const float* x, int n, float* inv) {
  float amax = 0;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  float d = amax / 127.0f;
  *inv = d > 0 ? 1.0f / d : 0.0f;
  return d;
}
int8_t round_q(float v) {
  return static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f));
}
}  // namespace

void quantize_act_row(DType t, const float* x, int64_t k, void* out) {
  int block = act_block_elems(t);
  if (block == 32) {
    ActRow32 row = act_row32(out, k);
    auto* q = const_cast<int8_t*>(row.q);
    auto* d = const_cast<float*>(row.d);
    auto* sums = const_cast<int32_t*>(row.sum);
    auto* neg_sum8 = const_cast<int32_t*>(row.neg_sum8);
    for (int64_t b = 0; b < k / 32; ++b) {
      const float* xb = x + b * 32;
      float inv;
      d[b] = block_scale(xb, 32, &inv);
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) sum += q[b * 32 + j] = round_q(xb[j] * inv);
      sums[b] = sum;
      for (int j = 0; j < 8; ++j) neg_sum8[8 * b + j] = -sum;
    }
  } else if (block == 256) {
    auto* blocks = static_cast<ActBlock256*>(out);
    for (int64_t b = 0; b < k / 256; ++b) {
      const float* xb = x + b * 256;
      float inv;
      blocks[b].d = block_scale(xb, 256, &inv);
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int j = 16 * g; j < 16 * g + 16; ++j) sum += blocks[b].q[j] = round_q(xb[j] * inv);
        blocks[b].bsums[g] = static_cast<int16_t>(sum);
      }
    }
  } else {
    std::memcpy(out, x, static_cast<size_t>(k) * 4);
  }
}

}  // namespace quant
}  // namespace redhare
