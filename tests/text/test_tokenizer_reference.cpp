// Replays encodes and decodes recorded from the Hugging Face `tokenizers` library on real
// tokenizer files (tools/tokenizer/record_fixtures.py) and requires identical results.
#include <gtest/gtest.h>

#include "text/detokenizer.h"
#include "text/unicode.h"
#include "tokenizer_fixtures.h"

namespace redhare {
namespace {

using nlohmann::json;
using test::case_text;

class ReferenceTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = test::load_fetched(GetParam());
    ASSERT_TRUE(tok_);
    expected_ = test::read_json(test::source_dir() / "fixtures" / "tokenizer" / "expected" /
                                (GetParam() + ".json"));
    corpus_ = test::read_json(test::source_dir() / "fixtures" / "tokenizer" / "corpus.json");
    ASSERT_TRUE(expected_.is_object());
    ASSERT_TRUE(corpus_.is_array());
    ASSERT_EQ(expected_["cases"].size(), corpus_.size()) << "fixtures out of date: re-record";
  }
  const Tokenizer* tok_ = nullptr;
  json expected_, corpus_;
};

TEST_P(ReferenceTokenizer, EncodeMatchesReference) {
  for (std::size_t k = 0; k < corpus_.size(); ++k) {
    const json& want = expected_["cases"][k];
    SCOPED_TRACE("case " + want["name"].get<std::string>());
    const std::string text = case_text(corpus_[k]);
    EXPECT_EQ(tok_->encode(text, true), want["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok_->encode(text, false), want["ids_no_special"].get<std::vector<int32_t>>());
  }
}

TEST_P(ReferenceTokenizer, DecodeMatchesReference) {
  for (const json& want : expected_["cases"]) {
    SCOPED_TRACE("case " + want["name"].get<std::string>());
    const auto ids = want["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok_->decode(ids, false), want["decode"].get<std::string>());
    EXPECT_EQ(tok_->decode(ids, true), want["decode_skip_special"].get<std::string>());
  }
}

TEST_P(ReferenceTokenizer, DecodeOfArbitraryIdsMatchesReference) {
  ASSERT_FALSE(expected_["decode_cases"].empty());
  for (const json& want : expected_["decode_cases"]) {
    const auto ids = want["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("ids " + json(ids).dump());
    EXPECT_EQ(tok_->decode(ids, false), want["decode"].get<std::string>());
    EXPECT_EQ(tok_->decode(ids, true), want["decode_skip_special"].get<std::string>());
  }
}

TEST_P(ReferenceTokenizer, VocabularyAndSpecialIds) {
  EXPECT_EQ(tok_->vocab_size(), expected_["vocab_size"].get<std::size_t>());
  const json& ids = expected_["special_ids"];
  auto check = [&](const char* key, std::optional<int32_t> got) {
    SCOPED_TRACE(key);
    if (ids[key].is_null()) {
      EXPECT_FALSE(got.has_value());
    } else {
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(*got, ids[key].get<int32_t>());
    }
  };
  check("bos_token", tok_->bos_id());
  check("eos_token", tok_->eos_id());
  check("pad_token", tok_->pad_id());
  check("unk_token", tok_->unk_id());
}

TEST_P(ReferenceTokenizer, TokenIdLookupsMatchReference) {
  ASSERT_FALSE(expected_["id_to_token"].empty());
  for (const json& pair : expected_["id_to_token"]) {
    const auto id = pair[0].get<int32_t>();
    SCOPED_TRACE("id " + std::to_string(id));
    const auto got = tok_->id_to_token(id);
    if (pair[1].is_null()) {
      EXPECT_FALSE(got.has_value());
    } else {
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(*got, pair[1].get<std::string>());
    }
  }
  for (const json& pair : expected_["token_to_id"]) {
    const auto token = pair[0].get<std::string>();
    SCOPED_TRACE("token " + token);
    const auto got = tok_->token_to_id(token);
    if (pair[1].is_null()) {
      EXPECT_FALSE(got.has_value());
    } else {
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(*got, pair[1].get<int32_t>());
    }
  }
}

// Streaming: token by token, the deltas are whole characters and add up to the full decode.
TEST_P(ReferenceTokenizer, IncrementalDetokenizerMatchesFullDecode) {
  for (const json& want : expected_["cases"]) {
    SCOPED_TRACE("case " + want["name"].get<std::string>());
    for (bool skip : {false, true}) {
      IncrementalDetokenizer detok(*tok_, skip);
      std::string streamed;
      for (int32_t id : want["ids"].get<std::vector<int32_t>>()) {
        const std::string delta = detok.push(id);
        EXPECT_TRUE(text::utf8_is_valid(delta)) << "delta splits a character";
        streamed += delta;
      }
      streamed += detok.finish();
      EXPECT_EQ(streamed, want[skip ? "decode_skip_special" : "decode"].get<std::string>());
    }
  }
}

std::string test_name(const ::testing::TestParamInfo<std::string>& param) {
  std::string n = param.param;
  for (char& ch : n) ch = ch == '-' ? '_' : ch;
  return n;
}

INSTANTIATE_TEST_SUITE_P(RealFiles, ReferenceTokenizer,
                         ::testing::Values("llama3", "qwen2", "deepseek-v3", "gpt2", "smollm2",
                                           "mistral-v1", "mistral-v3", "synthetic-byte_level",
                                           "synthetic-split_behaviors", "synthetic-subword_affixes",
                                           "synthetic-metaspace_split", "synthetic-byte_fallback",
                                           "synthetic-no_decoder"),
                         test_name);

}  // namespace
}  // namespace redhare
