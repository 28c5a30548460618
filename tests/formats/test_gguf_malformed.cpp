// GGUF files are untrusted: every malformed one must end in a redhare::Error naming the file and
// the problem, never a crash or a huge allocation. The files here are built byte by byte.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>

#include "core/error.h"
#include "formats/gguf.h"

namespace redhare {
namespace {

constexpr uint32_t kU32 = 4, kString = 8, kArray = 9;

class Builder {
 public:
  Builder& u32(uint32_t v) { return raw(&v, 4); }
  Builder& u64(uint64_t v) { return raw(&v, 8); }
  Builder& str(std::string_view s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Builder& raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv) {
    raw("GGUF", 4);
    u32(3);
    u64(n_tensors);
    return u64(n_kv);
  }
  Builder& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(kU32).u32(v); }
  // name, dims (ne order), ggml type, offset
  Builder& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  Builder& pad(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  Builder& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

GgufFile parse(const Builder& b) {
  return GgufFile::parse(b.bytes.data(), b.bytes.size(), "bad.gguf");
}

void expect_parse_error(const Builder& b, std::string_view part) {
  try {
    parse(b);
    ADD_FAILURE() << "no error thrown, expected one mentioning: " << part;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg << "\nexpected: " << part;
  }
}

// A valid two-tensor file to start each malformation from.
Builder valid_file() {
  Builder b;
  b.header(2, 1).kv_u32("llama.block_count", 2);
  b.tensor("a", {4, 2}, 0, 0).tensor("b", {32}, 8, 32);  // F32 [2, 4]; Q8_0 one block
  b.pad(32).zeros(32 + 34);
  return b;
}

TEST(GgufMalformed, BuilderBaselineParses) {
  GgufFile f = parse(valid_file());
  EXPECT_EQ(f.get_u32("llama.block_count"), 2u);
  EXPECT_EQ(f.tensor("a").shape(), (Shape{2, 4}));
  EXPECT_EQ(f.tensor("b").dtype(), DType::kQ8_0);
}

TEST(GgufMalformed, EveryTruncationIsAnError) {
  Builder full = valid_file();
  for (size_t n = 0; n < full.bytes.size(); ++n) {
    Builder cut;
    cut.bytes.assign(full.bytes.begin(), full.bytes.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_THROW(parse(cut), Error) << "prefix of " << n << " bytes";
  }
}

TEST(GgufMalformed, EveryTruncationOfTheGgufPyFixtureIsAnError) {
  std::ifstream in(std::string(REDHARE_SOURCE_DIR) + "/fixtures/gguf/metadata.gguf",
                   std::ios::binary);
  std::vector<uint8_t> bytes(std::istreambuf_iterator<char>(in), {});
  GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "fixture");
  uint64_t end = 0;
  for (const GgufTensorInfo& t : f.tensor_infos())
    end = std::max(end, f.data_offset() + t.offset + t.nbytes);
  ASSERT_GT(end, 1000u);
  for (size_t n = 0; n < end; n += (n < 1200 ? 1 : 7))
    EXPECT_THROW(GgufFile::parse(bytes.data(), n, "fixture"), Error) << "prefix of " << n;
  // Trailing padding after the last tensor is not needed.
  EXPECT_NO_THROW(GgufFile::parse(bytes.data(), end, "fixture"));
}

TEST(GgufMalformed, HeaderProblems) {
  Builder magic;
  magic.raw("GGML", 4).u32(3).u64(0).u64(0);
  expect_parse_error(magic, "not a GGUF file");
  Builder version;
  version.raw("GGUF", 4).u32(4).u64(0).u64(0);
  expect_parse_error(version, "unsupported GGUF version 4");
  Builder kvs;
  kvs.header(0, std::numeric_limits<uint64_t>::max());
  expect_parse_error(kvs, "metadata count");
  Builder tensors;
  tensors.header(uint64_t{1} << 60, 0);
  expect_parse_error(tensors, "tensor count");
}

TEST(GgufMalformed, MetadataProblems) {
  Builder long_string;
  long_string.header(0, 1).str("k").u32(kString).u64(uint64_t{1} << 40);
  expect_parse_error(long_string, "runs past the end of the file");
  Builder long_key;
  long_key.header(0, 1).u64(std::numeric_limits<uint64_t>::max()).zeros(16);
  expect_parse_error(long_key, "runs past the end of the file");
  Builder huge_array;
  huge_array.header(0, 1).str("k").u32(kArray).u32(kU32).u64(uint64_t{1} << 62).zeros(64);
  expect_parse_error(huge_array, "array of 4611686018427387904 u32");
  Builder huge_string_array;
  huge_string_array.header(0, 1).str("k").u32(kArray).u32(kString).u64(1'000'000).zeros(64);
  expect_parse_error(huge_string_array, "runs past the end of the file");
  Builder bad_type;
  bad_type.header(0, 1).str("k").u32(13).u32(0);
  expect_parse_error(bad_type, "unknown value type 13");
  Builder bad_elem;
  bad_elem.header(0, 1).str("k").u32(kArray).u32(99).u64(0);
  expect_parse_error(bad_elem, "array of unknown value type 99");
  Builder dup;
  dup.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_parse_error(dup, "duplicate metadata key 'k'");
  Builder deep;
  deep.header(0, 1).str("k").u32(kArray);
  for (int i = 0; i < 100; ++i) deep.u32(kArray).u64(1);
  deep.u32(kU32).u64(0);
  expect_parse_error(deep, "nests arrays more than");
}

TEST(GgufMalformed, EmptyArraysAndNestedArraysParse) {
  Builder b;
  b.header(0, 2).str("empty").u32(kArray).u32(kU32).u64(0);
  b.str("nested").u32(kArray).u32(kArray).u64(2);
  b.u32(kString).u64(1).str("x");
  b.u32(kU32).u64(2).u32(5).u32(6);
  GgufFile f = parse(b);
  EXPECT_TRUE(f.get_array_of_u32("empty").empty());
  const GgufValue& n = f.at("nested");
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n.at(0).as_strings(), (std::vector<std::string_view>{"x"}));
  EXPECT_EQ(n.at(1).as_u32s(), (std::vector<uint32_t>{5, 6}));
}

TEST(GgufMalformed, AlignmentProblems) {
  for (uint32_t a : {0u, 48u, 0x80000001u}) {
    Builder b;
    b.header(0, 1).kv_u32("general.alignment", a);
    expect_parse_error(b, "general.alignment");
  }
  Builder str;
  str.header(0, 1).str("general.alignment").u32(kString).str("32");
  expect_parse_error(str, "general.alignment");
  // A tensor at offset 32 is misaligned under alignment 64.
  Builder mis;
  mis.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {8}, 0, 32).pad(64).zeros(128);
  expect_parse_error(mis, "not a multiple of the alignment 64");
  Builder ok;
  ok.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {8}, 0, 64).pad(64).zeros(128);
  GgufFile f = parse(ok);
  EXPECT_EQ(f.data_offset() % 64, 0u);
}

TEST(GgufMalformed, TensorTableProblems) {
  auto one_tensor = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data) {
    Builder b;
    b.header(1, 0).tensor("w", std::move(ne), type, offset).pad(32).zeros(data);
    return b;
  };
  expect_parse_error(one_tensor({1, 1, 1, 1, 1}, 0, 0, 4), "5 dimensions");
  expect_parse_error(one_tensor({uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0, 64),
                     "element count overflows");
  expect_parse_error(one_tensor({uint64_t{1} << 63}, 0, 0, 64), "element count overflows");
  expect_parse_error(one_tensor({uint64_t{1} << 40}, 0, 0, 64), "more bytes than the whole file");
  expect_parse_error(one_tensor({48}, 8, 0, 64), "not a whole number of 32-element blocks");
  expect_parse_error(one_tensor({16}, 0, 32, 64), "runs past the end of the file");
  expect_parse_error(one_tensor({16}, 0, 7, 64), "not a multiple of the alignment 32");
  expect_parse_error(one_tensor({16}, 0, uint64_t{1} << 63, 64), "runs past the end of the file");
  expect_parse_error(one_tensor({16}, 0, 0, 63), "runs past the end of the file");

  Builder dup;
  dup.header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).pad(32).zeros(64);
  expect_parse_error(dup, "duplicate tensor name 'w'");

  // An unknown type id parses (the metadata is still useful) but the tensor cannot be used.
  Builder unknown = one_tensor({16}, 200, 0, 64);
  GgufFile f = parse(unknown);
  EXPECT_EQ(f.find_tensor("w")->type, nullptr);
  try {
    f.tensor("w");
    ADD_FAILURE() << "unknown type accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown ggml type id 200"), std::string::npos)
        << e.what();
  }
}

TEST(GgufMalformed, RandomByteFlipsNeverCrash) {
  const Builder base = valid_file();
  std::mt19937 rng(1234);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    Builder b = base;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) b.bytes[rng() % b.bytes.size()] = static_cast<uint8_t>(rng());
    try {
      GgufFile f = parse(b);
      for (const GgufTensorInfo& t : f.tensor_infos())
        if (t.supported()) (void)f.tensor(t).nbytes();
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    }
  }
  // Both outcomes occur, so the loop really exercised the error paths and the success path.
  EXPECT_GT(parsed, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace redhare
