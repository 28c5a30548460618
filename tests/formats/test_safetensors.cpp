// Malformed checkpoints must fail with one clear message naming the file and the problem.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace redhare {
namespace {

std::string bytes_with_header(const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s + header + std::string(data_bytes, '\x01');
}

std::string parse_error(const std::string& file_bytes) {
  try {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(file_bytes.data()), file_bytes.size(),
                             "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::string& bytes, const std::string& fragment) {
  std::string msg = parse_error(bytes);
  ASSERT_FALSE(msg.empty()) << "accepted a malformed header; expected: " << fragment;
  EXPECT_EQ(msg.rfind("x.safetensors: ", 0), 0u) << msg;
  EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
}

TEST(Safetensors, ParsesAValidHeader) {
  std::string b = bytes_with_header(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[8,20]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 20);
  auto h = parse_safetensors_header(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[1].shape, (Shape{2, 3}));
  EXPECT_EQ(h.metadata.at("format"), "pt");
}

TEST(Safetensors, RejectsMalformedHeaders) {
  expect_error("abc", "only 3 bytes");
  expect_error(bytes_with_header("{}", 0).substr(0, 9), "past the end of the file");
  expect_error(bytes_with_header("{not json", 0), "not valid JSON");
  expect_error(bytes_with_header("[1,2]", 0), "not a JSON object");
  expect_error(bytes_with_header(R"({"t":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1),
               "unsupported dtype 'Q9'");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})", 8),
               "past the data section");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
               "needs 12 bytes but data_offsets span 8");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8),
               "non-negative integer");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
               "begin is after end");
  expect_error(bytes_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               "overlap");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
               "impossibly large");
  expect_error(bytes_with_header(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
  std::string huge(8, '\xff');
  expect_error(huge, "implausibly large");
}

class CheckpointDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/redhare_ckpt_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << bytes;
  }
  std::string error_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::string dir_;
};

TEST_F(CheckpointDir, RoundTripsAndMapsWithoutCopying) {
  Tensor a = Tensor::from_f32({1, 2, 3, 4, 5, 6}, {2, 3});
  save_safetensors(dir_ + "/model.safetensors", {{"w", a}}, {{"format", "pt"}});
  Checkpoint c = Checkpoint::open(dir_);
  Tensor w = c.get("w");
  EXPECT_EQ(w.shape(), (Shape{2, 3}));
  EXPECT_EQ(w.to_f32_vector(), a.to_f32_vector());
  EXPECT_NE(w.data(), a.data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data()) % 8, 0u);  // data section stays aligned
  std::string msg = error_of([&] { c.get("missing"); });
  EXPECT_NE(msg.find("no tensor 'missing'"), std::string::npos) << msg;
}

TEST_F(CheckpointDir, ShardedIndexMustMatchShards) {
  save_safetensors(dir_ + "/s1.safetensors", {{"a", Tensor::from_f32({1}, {1})}});
  save_safetensors(dir_ + "/s2.safetensors", {{"b", Tensor::from_f32({2}, {1})}});
  write("model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  Checkpoint c = Checkpoint::open(dir_);
  EXPECT_EQ(c.num_files(), 2);
  EXPECT_EQ(c.get("b").to_f32_vector()[0], 2.0f);

  write("model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","c":"s1.safetensors"}})");
  std::string msg = error_of([&] { Checkpoint::open(dir_); });
  EXPECT_NE(msg.find("'c' is listed in shard 's1.safetensors' but not found"), std::string::npos) << msg;

  write("model.safetensors.index.json", R"({"weight_map":{"a":"../etc/passwd"}})");
  msg = error_of([&] { Checkpoint::open(dir_); });
  EXPECT_NE(msg.find("must be a plain file name"), std::string::npos) << msg;

  write("model.safetensors.index.json", R"({"weight_map":{"a":"gone.safetensors"}})");
  msg = error_of([&] { Checkpoint::open(dir_); });
  EXPECT_NE(msg.find("gone.safetensors: cannot open"), std::string::npos) << msg;
}

TEST_F(CheckpointDir, TruncatedFileNamesTheFile) {
  save_safetensors(dir_ + "/model.safetensors", {{"w", Tensor::from_f32(std::vector<float>(64, 1.0f), {64})}});
  std::string bytes;
  {
    std::ifstream f(dir_ + "/model.safetensors", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  write("model.safetensors", bytes.substr(0, bytes.size() - 10));
  std::string msg = error_of([&] { Checkpoint::open(dir_); });
  EXPECT_NE(msg.find("model.safetensors: tensor 'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  std::filesystem::remove(dir_ + "/model.safetensors");
  msg = error_of([&] { Checkpoint::open(dir_); });
  EXPECT_NE(msg.find("no model.safetensors"), std::string::npos) << msg;
}

std::string config_error(const std::string& json) {
  try {
    ModelConfig::parse(json, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kGoodConfig = R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,
  "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
  "vocab_size":100,"rope_theta":500000.0,"eos_token_id":[1,2],
  "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
  "original_max_position_embeddings":8192},"torch_dtype":"bfloat16"})";

TEST(HfConfig, ParsesLlama3) {
  ModelConfig c = ModelConfig::parse(kGoodConfig, "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.dtype, DType::kBF16);
}

TEST(HfConfig, ReadsTransformers5RopeParameters) {
  ModelConfig c = ModelConfig::parse(
      R"({"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":1,"num_attention_heads":4,"head_dim":32,"vocab_size":10,
      "rope_parameters":{"rope_type":"default","rope_theta":1000000.0},"dtype":"float16"})",
      "config.json");
  EXPECT_EQ(c.rope_theta, 1000000.0);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.dtype, DType::kF16);
}

TEST(HfConfig, RejectsBadValuesWithTheirNames) {
  EXPECT_NE(config_error("{").find("config.json: not valid JSON"), std::string::npos);
  EXPECT_NE(config_error(R"({"hidden_size":1})").find("'architectures'"), std::string::npos);
  std::string s = kGoodConfig;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = s;
    t.replace(t.find(from), from.size(), to);
    return config_error(t);
  };
  EXPECT_NE(with("\"hidden_size\":64", "\"hidden_size\":-64").find("'hidden_size' must be a positive integer"), std::string::npos);
  EXPECT_NE(with("\"hidden_size\":64", "\"hidden_size\":\"64\"").find("'hidden_size' must be an integer"), std::string::npos);
  EXPECT_NE(with("\"num_key_value_heads\":2", "\"num_key_value_heads\":3").find("not a multiple of num_key_value_heads"), std::string::npos);
  EXPECT_NE(with("\"rope_type\":\"llama3\"", "\"rope_type\":\"yarn\"").find("rope scaling type 'yarn' is not supported"), std::string::npos);
  EXPECT_NE(with("\"torch_dtype\":\"bfloat16\"", "\"torch_dtype\":\"int4\"").find("'int4' is not supported"), std::string::npos);
  EXPECT_NE(with("\"num_hidden_layers\":2", "\"num_hidden_layers\":2,\"hidden_act\":\"gelu\"").find("only 'silu'"), std::string::npos);
}

}  // namespace
}  // namespace redhare
