// Element types of tensors and their conversions.
//
// Block-quantized types (GGUF's Q8_0, Q4_K, ..., and redhare's scaled FP8 blocks) are described by
// a block: `block_elems` values stored in `block_bytes` bytes. Plain types have a block of one
// element.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

namespace redhare {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,
  kF8E5M2,
  kI8,
  kI32,
  kI64,
  kU8,
  kBool,
  // Block-quantized (GGUF layouts).
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  // FP8 weights as redhare keeps them: blocks of 128 consecutive e4m3 values of a row followed by
  // their f32 dequantization scale and 12 bytes of zeros (144 bytes: every block, and every 16
  // values in it, start 16-byte aligned, so the GPU streams them with 16-byte loads). Block-,
  // channel- and tensor-scaled FP8 checkpoints all load into it (models/fp8.cpp); a value is
  // f8e4m3_to_f32(byte) * scale, rounded once.
  kF8B128,
  kCount,
};

struct DTypeInfo {
  std::string_view name;  // redhare's name, also used in messages
  int block_elems;
  int block_bytes;
  bool is_float;
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
inline bool is_block_quantized(DType t) { return dtype_info(t).block_elems > 1; }
// Bytes taken by `n` elements; throws redhare::Error when n is not a whole number of blocks.
int64_t dtype_bytes(DType t, int64_t n);
// Maps a safetensors dtype string ("BF16", "F8_E4M3", ...); returns false when unknown.
bool dtype_from_safetensors(std::string_view s, DType* out);
// Maps a PyTorch / config.json name ("bfloat16", "float16", "float32").
bool dtype_from_torch_name(std::string_view s, DType* out);

// ---- scalar conversions (exact IEEE behaviour, round-to-nearest-even on narrowing) ----

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t bits_from_f32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = bits_from_f32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// e4m3 ("fn": no infinities; 0x7f and 0xff are NaN) to f32, exactly: a lookup in a table made at
// compile time, as this sits in the inner loops of FP8 dequantization (reference products, the
// FP8 KV cache on the CPU).
namespace detail {
constexpr float f8e4m3_value(uint32_t v) {
  const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  // Subnormal: man * 2^-9; normal: (8 + man) * 2^(exp - 10). Products of powers of two: exact.
  float r = exp == 0 ? static_cast<float>(man) : static_cast<float>(8 + man);
  for (int e = exp == 0 ? -9 : static_cast<int>(exp) - 10; e < 0; ++e) r *= 0.5f;
  for (int e = static_cast<int>(exp) - 10; exp != 0 && e > 0; --e) r *= 2.0f;
  return (v & 0x80u) ? -r : r;
}
struct F8E4M3Table {
  float v[256];
};
constexpr F8E4M3Table make_f8e4m3_table() {
  F8E4M3Table t{};
  for (uint32_t i = 0; i < 256; ++i) t.v[i] = f8e4m3_value(i);
  return t;
}
inline constexpr F8E4M3Table kF8E4M3 = make_f8e4m3_table();
}  // namespace detail
inline float f8e4m3_to_f32(uint8_t v) { return detail::kF8E4M3.v[v]; }
uint8_t f32_to_f8e4m3(float f);  // saturates to +-448 (the "fn" variant has no infinities)
float f8e5m2_to_f32(uint8_t v);
uint8_t f32_to_f8e5m2(float f);

// Converts `n` elements of a plain (non-block) float type to f32.
void convert_to_f32(DType src_type, const void* src, float* dst, int64_t n);
// Converts `n` f32 values to a plain float type.
void convert_from_f32(const float* src, DType dst_type, void* dst, int64_t n);

}  // namespace redhare
