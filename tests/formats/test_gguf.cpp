// GGUF reader against files written by gguf-py (tools/gguf/make_fixtures.py).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "formats/gguf.h"

namespace redhare {
namespace {

std::string fixture(const char* name) {
  return std::string(REDHARE_SOURCE_DIR) + "/fixtures/gguf/" + name;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Runs `fn`, expecting a redhare::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string_view> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (std::string_view p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  }
}

TEST(Gguf, MetadataOfEveryValueType) {
  GgufFile f = GgufFile::open(fixture("metadata.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_u32("test.u8"), 200u);
  EXPECT_EQ(f.get_i32("test.i8"), -100);
  EXPECT_EQ(f.get_u32("test.u16"), 60000u);
  EXPECT_EQ(f.get_i32("test.i16"), -30000);
  EXPECT_EQ(f.get_u32("test.u32"), 4000000000u);
  EXPECT_EQ(f.get_i32("test.i32"), -2000000000);
  EXPECT_EQ(f.get_u64("test.u64"), 18000000000000000000ull);
  EXPECT_EQ(f.get_i64("test.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get_f32("test.f32"), 0.15625f);
  EXPECT_EQ(f.get_f64("test.f64"), 2.718281828459045);
  EXPECT_TRUE(f.get_bool("test.bool_true"));
  EXPECT_FALSE(f.get_bool("test.bool_false"));
  EXPECT_EQ(f.get_string("test.string"), "redhare \u00e9\u00e8 \U0001f407");
  EXPECT_EQ(f.get_string("general.architecture"), "redhare-test");
  EXPECT_EQ(f.at("test.u8").type(), GgufValueType::kU8);
  EXPECT_EQ(f.at("test.i64").type(), GgufValueType::kI64);
  EXPECT_EQ(f.at("test.f64").type(), GgufValueType::kF64);

  EXPECT_EQ(f.get_array_of_i32("test.arr_u8"), (std::vector<int32_t>{1, 2, 255}));
  EXPECT_EQ(f.get_array_of_i32("test.arr_i16"), (std::vector<int32_t>{-1, 2, -3}));
  EXPECT_EQ(f.get_array_of_i32("test.arr_i32"), (std::vector<int32_t>{-1, 0, 7, 2147483647}));
  EXPECT_EQ(f.get_array_of_u32("test.arr_u32"), (std::vector<uint32_t>{0, 1, 4294967295u}));
  EXPECT_EQ(f.get_array_of_i64("test.arr_i64"), (std::vector<int64_t>{-5, 5, 1ll << 40}));
  EXPECT_EQ(f.get_array_of_f32("test.arr_f32"), (std::vector<float>{0.5f, -1.25f, 3.0f}));
  EXPECT_EQ(f.get_array_of_f32("test.arr_f64"), (std::vector<float>{0.1f, 0.2f}));
  const GgufValue& bools = f.at("test.arr_bool");
  ASSERT_EQ(bools.size(), 3u);
  EXPECT_EQ(bools.element_type(), GgufValueType::kBool);
  EXPECT_TRUE(bools.at(0).as_bool());
  EXPECT_FALSE(bools.at(1).as_bool());

  const GgufValue& nested = f.at("test.nested");
  ASSERT_EQ(nested.element_type(), GgufValueType::kArray);
  ASSERT_EQ(nested.size(), 3u);
  EXPECT_EQ(nested.at(0).as_i32s(), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(nested.at(1).as_i32s(), (std::vector<int32_t>{3}));
  EXPECT_EQ(nested.at(2).as_i32s(), (std::vector<int32_t>{4, 5, 6}));

  std::vector<std::string_view> tokens = f.get_array_of_strings("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 1003u);
  EXPECT_EQ(tokens[0], "tok0");
  EXPECT_EQ(tokens[999], "tok999");
  EXPECT_EQ(tokens[1000], "");
  EXPECT_EQ(tokens[1001], "\u2581hello");
  EXPECT_EQ(tokens[1002], "<|end|>");

  // Keys come back in file order.
  ASSERT_FALSE(f.metadata().empty());
  EXPECT_EQ(f.metadata().front().first, "general.architecture");
}

TEST(Gguf, GettersNameMissingKeysAndWrongTypes) {
  GgufFile f = GgufFile::open(fixture("metadata.gguf"));
  EXPECT_EQ(f.find("no.such.key"), nullptr);
  EXPECT_FALSE(f.contains("no.such.key"));
  EXPECT_TRUE(f.contains("llama.block_count"));
  EXPECT_EQ(f.get_u32("no.such.key", 7u), 7u);
  EXPECT_EQ(f.get_u32("llama.block_count", 7u), 16u);
  EXPECT_EQ(f.get_f32("no.such.key", 1.5f), 1.5f);
  EXPECT_EQ(f.get_f32("llama.rope.freq_base", 1.5f), 500000.0f);
  EXPECT_EQ(f.get_string("no.such.key", "dflt"), "dflt");
  EXPECT_EQ(f.get_i64("no.such.key", -3), -3);
  EXPECT_TRUE(f.get_bool("no.such.key", true));

  expect_error([&] { f.get_u32("no.such.key"); }, {"metadata.gguf", "'no.such.key'", "missing"});
  expect_error([&] { f.get_string("llama.block_count"); },
               {"metadata.gguf", "'llama.block_count'", "u32 16", "expected a string"});
  expect_error([&] { f.get_u32("general.name"); }, {"'general.name'", "expected an integer"});
  expect_error([&] { f.get_f32("llama.block_count"); }, {"expected a float"});
  expect_error([&] { f.get_bool("test.u8"); }, {"expected a bool"});
  expect_error([&] { f.get_u32("test.i8"); }, {"'test.i8'", "-100", "negative"});
  expect_error([&] { f.get_i32("test.u32"); }, {"'test.u32'", "does not fit in i32"});
  expect_error([&] { f.get_u32("test.u64"); }, {"does not fit in u32"});
  expect_error([&] { f.get_i64("test.u64"); }, {"does not fit in i64"});
}

TEST(Gguf, ArrayGettersRejectWrongElementTypes) {
  GgufFile f = GgufFile::open(fixture("metadata.gguf"));
  expect_error([&] { f.get_array_of_strings("test.arr_i32"); },
               {"'test.arr_i32'", "array<i32>[4]", "array<string>"});
  expect_error([&] { f.get_array_of_f32("test.arr_i32"); }, {"an array of floats"});
  expect_error([&] { f.get_array_of_i32("tokenizer.ggml.tokens"); }, {"an array of integers"});
  expect_error([&] { f.get_array_of_i32("test.arr_u32"); }, {"does not fit in i32"});
  expect_error([&] { f.get_array_of_u32("test.arr_i16"); }, {"negative"});
  expect_error([&] { f.get_array_of_i32("llama.block_count"); }, {"an array of integers"});
}

TEST(Gguf, TensorsHonourAlignmentAndReverseShapes) {
  GgufFile f = GgufFile::open(fixture("metadata.gguf"));
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.tensor_infos().size(), 3u);
  const GgufTensorInfo* info = f.find_tensor("token_embd.weight");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->ne, (std::vector<uint64_t>{8, 4}));
  EXPECT_EQ(info->shape, (Shape{4, 8}));
  EXPECT_EQ(info->nbytes, 4u * 8 * 4);
  EXPECT_EQ(f.find_tensor("missing"), nullptr);

  Tensor t = f.tensor("token_embd.weight");
  EXPECT_EQ(t.dtype(), DType::kF32);
  EXPECT_EQ(t.shape(), (Shape{4, 8}));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(t.data_as<float>()[i], static_cast<float>(i));

  Tensor norm = f.tensor("output_norm.weight");
  EXPECT_EQ(norm.dtype(), DType::kF16);
  EXPECT_EQ(norm.shape(), (Shape{5}));
  EXPECT_EQ(norm.to_f32_vector(), std::vector<float>(5, 1.0f));

  Tensor q = f.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.shape(), (Shape{2, 3}));
  EXPECT_EQ(q.to_f32_vector(), std::vector<float>(6, 7.0f));
  for (const GgufTensorInfo& ti : f.tensor_infos()) {
    EXPECT_EQ(ti.offset % 64, 0u) << ti.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensor(ti).data()) % 64, 0u) << ti.name;
  }
  expect_error([&] { f.tensor("missing.weight"); }, {"metadata.gguf", "'missing.weight'"});
}

TEST(Gguf, TensorViewOutlivesTheFileObject) {
  Tensor t;
  {
    GgufFile f = GgufFile::open(fixture("metadata.gguf"));
    t = f.tensor("token_embd.weight");
  }
  EXPECT_EQ(t.data_as<float>()[31], 31.0f);  // the mapping is kept alive by the tensor
}

TEST(Gguf, BlockTypesAndUnsupportedTypes) {
  GgufFile f = GgufFile::open(fixture("quant_blocks.gguf"));
  struct Case {
    const char* name;
    DType dtype;
    Shape shape;
  };
  for (const Case& c :
       {Case{"Q8_0.raw", DType::kQ8_0, {3, 96}}, Case{"Q4_0.raw", DType::kQ4_0, {3, 96}},
        Case{"Q4_1.raw", DType::kQ4_1, {3, 96}}, Case{"Q5_0.raw", DType::kQ5_0, {3, 96}},
        Case{"Q5_1.raw", DType::kQ5_1, {3, 96}}, Case{"Q4_K.raw", DType::kQ4_K, {2, 512}},
        Case{"Q5_K.raw", DType::kQ5_K, {2, 512}}, Case{"Q6_K.raw", DType::kQ6_K, {2, 512}},
        Case{"BF16.raw", DType::kBF16, {3, 40}}, Case{"F16.raw", DType::kF16, {3, 40}}}) {
    Tensor t = f.tensor(c.name);
    EXPECT_EQ(t.dtype(), c.dtype) << c.name;
    EXPECT_EQ(t.shape(), c.shape) << c.name;
    EXPECT_EQ(static_cast<uint64_t>(t.nbytes()), f.find_tensor(c.name)->nbytes) << c.name;
  }
  Tensor s = f.tensor("shape3d");
  EXPECT_EQ(s.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(s.data_as<float>()[1 * 12 + 2 * 4 + 3], 23.0f);

  const GgufTensorInfo* q2 = f.find_tensor("unsupported.q2_k");
  ASSERT_NE(q2, nullptr);
  EXPECT_FALSE(q2->supported());
  EXPECT_EQ(q2->type->name, "Q2_K");
  EXPECT_EQ(q2->nbytes, 84u);
  expect_error([&] { f.tensor("unsupported.q2_k"); },
               {"quant_blocks.gguf", "'unsupported.q2_k'", "Q2_K", "does not support"});
  expect_error([&] { f.tensors(); }, {"'unsupported.q2_k'", "Q2_K"});
}

TEST(Gguf, VersionTwoReadsLikeVersionThree) {
  std::vector<uint8_t> bytes = read_bytes(fixture("metadata.gguf"));
  ASSERT_GT(bytes.size(), 8u);
  bytes[4] = 2;
  GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "v2.gguf");
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get_u32("llama.block_count"), 16u);
  EXPECT_EQ(f.tensor("token_embd.weight").data_as<float>()[5], 5.0f);

  bytes[4] = 1;
  expect_error([&] { GgufFile::parse(bytes.data(), bytes.size(), "v1.gguf"); },
               {"v1.gguf", "version 1"});
  bytes[4] = 0;
  bytes[7] = 3;  // what a big-endian version 3 file looks like when read little-endian
  expect_error([&] { GgufFile::parse(bytes.data(), bytes.size(), "be.gguf"); },
               {"be.gguf", "big-endian"});
}

TEST(Gguf, OpenNamesAMissingFile) {
  expect_error([] { GgufFile::open("/nonexistent/model.gguf"); }, {"/nonexistent/model.gguf"});
}

}  // namespace
}  // namespace redhare
