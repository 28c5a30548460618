#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/error.h"

namespace redhare {
namespace {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway too: the even neighbour is 1 + 2^-6.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-INFINITY)), -INFINITY);
}

TEST(DType, F16MatchesIeeeHalfOnEveryValue) {
  // Every finite half converts to f32 and back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    uint16_t v = static_cast<uint16_t>(h);
    float f = f16_to_f32(v);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), v) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the max to infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to the first subnormal: even
}

TEST(DType, F8E4M3RoundTripAndSaturation) {
  for (uint32_t v = 0; v < 256; ++v) {
    float f = f8e4m3_to_f32(static_cast<uint8_t>(v));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f8e4m3(f), v) << v;
  }
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(f32_to_f8e4m3(1000.0f), 0x7e);  // saturates, no infinity in e4m3fn
  EXPECT_EQ(f32_to_f8e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
}

TEST(DType, F8E4M3DecodesEveryCodeAsTheFormatDefines) {
  // OCP FP8 e4m3fn: bias 7, subnormals man * 2^-9, S.1111.111 NaN, no infinities.
  for (uint32_t v = 0; v < 256; ++v) {
    const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
    const float got = f8e4m3_to_f32(static_cast<uint8_t>(v));
    if (exp == 0xf && man == 0x7) {
      EXPECT_TRUE(std::isnan(got)) << v;
      continue;
    }
    float want = exp == 0 ? std::ldexp(static_cast<float>(man), -9)
                          : std::ldexp(1.0f + static_cast<float>(man) / 8.0f, static_cast<int>(exp) - 7);
    if (v & 0x80u) want = -want;
    EXPECT_EQ(std::memcmp(&got, &want, 4), 0) << v << ": " << got << " against " << want;
  }
  EXPECT_EQ(f8e4m3_to_f32(0x80), -0.0f);
  EXPECT_TRUE(std::signbit(f8e4m3_to_f32(0x80)));
}

TEST(DType, F8E5M2RoundTrip) {
  for (uint32_t v = 0; v < 256; ++v) {
    float f = f8e5m2_to_f32(static_cast<uint8_t>(v));
    if (std::isnan(f) || std::isinf(f)) continue;
    ASSERT_EQ(f32_to_f8e5m2(f), v) << v;
  }
  EXPECT_EQ(f8e5m2_to_f32(0x7b), 57344.0f);
}

TEST(DType, NarrowingIsNearest) {
  // For random floats the narrowed value is the closest representable one.
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 100.0f);
  for (int i = 0; i < 20000; ++i) {
    float f = dist(rng);
    float h = f16_to_f32(f32_to_f16(f));
    uint16_t hb = f32_to_f16(f);
    float up = f16_to_f32(static_cast<uint16_t>(hb + 1)), down = f16_to_f32(static_cast<uint16_t>(hb - 1));
    ASSERT_LE(std::fabs(h - f), std::fabs(up - f));
    ASSERT_LE(std::fabs(h - f), std::fabs(down - f));
    float e = f8e4m3_to_f32(f32_to_f8e4m3(f / 10));
    uint8_t eb = f32_to_f8e4m3(f / 10);
    if ((eb & 0x7f) < 0x7e && (eb & 0x7f) > 0) {
      ASSERT_LE(std::fabs(e - f / 10), std::fabs(f8e4m3_to_f32(eb + 1) - f / 10));
      ASSERT_LE(std::fabs(e - f / 10), std::fabs(f8e4m3_to_f32(eb - 1) - f / 10));
    }
  }
}

TEST(DType, BlockSizes) {
  EXPECT_EQ(dtype_bytes(DType::kQ4_0, 64), 36);
  EXPECT_EQ(dtype_bytes(DType::kQ6_K, 512), 420);
  EXPECT_THROW(dtype_bytes(DType::kQ8_0, 33), Error);
  DType t;
  EXPECT_TRUE(dtype_from_safetensors("F8_E4M3", &t));
  EXPECT_EQ(t, DType::kF8E4M3);
  EXPECT_FALSE(dtype_from_safetensors("F4", &t));
}

}  // namespace
}  // namespace redhare
