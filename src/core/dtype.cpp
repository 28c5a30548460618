#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace redhare {
namespace {

constexpr DTypeInfo kInfo[] = {
    {"f32", 1, 4, true},       {"f16", 1, 2, true},     {"bf16", 1, 2, true},
    {"f8_e4m3", 1, 1, true},   {"f8_e5m2", 1, 1, true}, {"i8", 1, 1, false},
    {"i32", 1, 4, false},      {"i64", 1, 8, false},    {"u8", 1, 1, false},
    {"bool", 1, 1, false},     {"q8_0", 32, 34, true},  {"q4_0", 32, 18, true},
    {"q4_1", 32, 20, true},    {"q5_0", 32, 22, true},  {"q5_1", 32, 24, true},
    {"q4_k", 256, 144, true},  {"q5_k", 256, 176, true}, {"q6_k", 256, 210, true},
    {"f8_e4m3_b128", 128, 144, true},
};
static_assert(sizeof(kInfo) / sizeof(kInfo[0]) == static_cast<size_t>(DType::kCount));

}  // namespace

const DTypeInfo& dtype_info(DType t) {
  RH_CHECK(t < DType::kCount, "bad dtype ", static_cast<int>(t));
  return kInfo[static_cast<int>(t)];
}

int64_t dtype_bytes(DType t, int64_t n) {
  const DTypeInfo& info = dtype_info(t);
  if (n < 0 || n % info.block_elems != 0)
    fail(n, " elements of ", info.name, " are not a whole number of ", info.block_elems,
         "-element blocks");
  return n / info.block_elems * info.block_bytes;
}

bool dtype_from_safetensors(std::string_view s, DType* out) {
  struct Pair {
    std::string_view name;
    DType t;
  };
  static constexpr Pair kNames[] = {
      {"F32", DType::kF32},         {"F16", DType::kF16},         {"BF16", DType::kBF16},
      {"F8_E4M3", DType::kF8E4M3},  {"F8_E5M2", DType::kF8E5M2},  {"I8", DType::kI8},
      {"I32", DType::kI32},         {"I64", DType::kI64},         {"U8", DType::kU8},
      {"BOOL", DType::kBool},
  };
  for (const Pair& p : kNames)
    if (p.name == s) {
      *out = p.t;
      return true;
    }
  return false;
}

bool dtype_from_torch_name(std::string_view s, DType* out) {
  if (s == "bfloat16") *out = DType::kBF16;
  else if (s == "float16" || s == "half") *out = DType::kF16;
  else if (s == "float32" || s == "float") *out = DType::kF32;
  else return false;
  return true;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return f32_from_bits(sign);
    // Subnormal: value = man * 2^-24.
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (man << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t u = bits_from_f32(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: round abs / 2^-24 to nearest even.
    float a = f32_from_bits(abs);
    float scaled = a * 16777216.0f;  // exact: power of two
    uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

namespace {
// Rounds |f| to the nearest value of a small float format with `man_bits` mantissa bits, exponent
// bias `bias`, saturating at `max_val`; returns the encoded magnitude.
uint8_t encode_small_float(float a, int man_bits, int bias, float max_val, uint8_t max_code) {
  if (!(a < max_val)) return max_code;  // also maps +inf to the max
  const float min_normal = std::ldexp(1.0f, 1 - bias);
  if (a < min_normal) {
    float q = std::nearbyint(std::ldexp(a, bias - 1 + man_bits));
    return static_cast<uint8_t>(q);  // q == 2^man_bits rolls into the first normal code
  }
  int e;
  float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  float q = std::nearbyint(std::ldexp(m, man_bits + 1));  // in [2^man, 2^(man+1)]
  int exp_field = e - 1 + bias;
  uint32_t code = (static_cast<uint32_t>(exp_field) << man_bits) +
                  (static_cast<uint32_t>(q) - (1u << man_bits));
  if (code > max_code) code = max_code;
  return static_cast<uint8_t>(code);
}
}  // namespace

uint8_t f32_to_f8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  return sign | encode_small_float(std::fabs(f), 3, 7, 464.0f, 0x7e);
}

float f8e5m2_to_f32(uint8_t v) { return f16_to_f32(static_cast<uint16_t>(v) << 8); }

uint8_t f32_to_f8e5m2(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (std::isinf(a)) return sign | 0x7c;
  // Values at or past the rounding midpoint above the max finite (57344) saturate.
  return sign | encode_small_float(a, 2, 15, 61440.0f, 0x7b);
}

void convert_to_f32(DType src_type, const void* src, float* dst, int64_t n) {
  switch (src_type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_f32(s[i]);
      return;
    }
    case DType::kF8E5M2: {
      auto* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f8e5m2_to_f32(s[i]);
      return;
    }
    default:
      fail("cannot convert ", dtype_name(src_type), " to f32 element-wise");
  }
}

void convert_from_f32(const float* src, DType dst_type, void* dst, int64_t n) {
  switch (dst_type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* d = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f8e4m3(src[i]);
      return;
    }
    case DType::kF8E5M2: {
      auto* d = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f8e5m2(src[i]);
      return;
    }
    default:
      fail("cannot convert f32 to ", dtype_name(dst_type), " element-wise");
  }
}

}  // namespace redhare
