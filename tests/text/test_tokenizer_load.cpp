// Loading: malformed or unsupported tokenizer files are refused with an Error that names the file
// and the component; the config files are exposed as read.
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace redhare {
namespace {

using nlohmann::json;

// A small byte-level BPE: "a" + "b" -> "ab", "ab" + "c" -> "abc".
json tiny() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 5, "content": "<s>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                      "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "Ġ": 6},
              "merges": ["a b", ["ab", "c"]]}
  })");
}

std::string load_error(const json& j, std::string_view config = {}) {
  try {
    Tokenizer::from_json_strings(j.dump(), config, {}, "dir/tokenizer.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(TokenizerLoad, TinyTokenizerEncodesAndDecodes) {
  const auto tok = Tokenizer::from_json_strings(tiny().dump());
  EXPECT_EQ(tok.encode("abc ab", true), (std::vector<int32_t>{5, 4, 6, 3}));
  EXPECT_EQ(tok.encode("abc ab", false), (std::vector<int32_t>{4, 6, 3}));
  EXPECT_EQ(tok.encode("<s>abc", false), (std::vector<int32_t>{5, 4}));
  EXPECT_EQ(tok.decode({5, 4, 6, 3}, false), "<s>abc ab");
  EXPECT_EQ(tok.decode({5, 4, 6, 3}, true), "abc ab");
  EXPECT_EQ(tok.vocab_size(), 7u);
  ASSERT_EQ(tok.added_tokens().size(), 1u);
  EXPECT_TRUE(tok.added_tokens()[0].special);
  EXPECT_TRUE(tok.is_special(5));
  EXPECT_FALSE(tok.is_special(4));
}

TEST(TokenizerLoad, ConfigIsExposedAndNamesSpecialIds) {
  const auto tok = Tokenizer::from_json_strings(
      tiny().dump(),
      R"({"chat_template": "{{ messages }}", "bos_token": {"__type": "AddedToken", "content": "<s>"},
          "eos_token": "abc", "pad_token": null})");
  EXPECT_EQ(tok.config().at("chat_template").get<std::string>(), "{{ messages }}");
  EXPECT_EQ(tok.bos_id(), 5);
  EXPECT_EQ(tok.eos_id(), 4);
  EXPECT_FALSE(tok.pad_id().has_value());
  EXPECT_TRUE(tok.config().is_object());
}

TEST(TokenizerLoad, SpecialTokensMapFillsWhatTheConfigLacks) {
  const auto tok = Tokenizer::from_json_strings(tiny().dump(), R"({"bos_token": "<s>"})",
                                                R"({"bos_token": "a", "eos_token": "ab"})");
  EXPECT_EQ(tok.bos_id(), 5);
  EXPECT_EQ(tok.eos_id(), 3);
}

TEST(TokenizerLoad, MalformedFilesNameTheFileAndComponent) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"unsupported model",
       [](json& j) { j["model"]["type"] = "Unigram"; },
       {"dir/tokenizer.json", "model", "Unigram"}},
      {"merge of unknown token",
       [](json& j) { j["model"]["merges"].push_back("a zz"); },
       {"dir/tokenizer.json", "model", "merge 2"}},
      {"merge without space",
       [](json& j) { j["model"]["merges"].push_back("ab"); },
       {"model.merges[2]", "exactly one space"}},
      {"negative id", [](json& j) { j["model"]["vocab"]["x"] = -1; }, {"model.vocab.x", "range"}},
      {"huge id",
       [](json& j) { j["model"]["vocab"]["x"] = 1LL << 40; },
       {"model.vocab.x", "range"}},
      {"vocab not an object",
       [](json& j) { j["model"]["vocab"] = json::array(); },
       {"model.vocab"}},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout"}},
      {"unknown normalizer",
       [](json& j) {
         j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", ""}};
       },
       {"normalizer", "Precompiled"}},
      {"bad regex",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"},
                               {"pattern", {{"Regex", "(unclosed"}}},
                               {"behavior", "Isolated"},
                               {"invert", false}};
       },
       {"pre_tokenizer.pattern", "does not compile"}},
      {"bad behavior",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"},
                               {"pattern", {{"String", " "}}},
                               {"behavior", "Sideways"},
                               {"invert", false}};
       },
       {"pre_tokenizer.behavior", "Sideways"}},
      {"nested unknown pre-tokenizer",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "UnicodeScripts"}}}}};
       },
       {"pre_tokenizer.pretokenizers[0]", "UnicodeScripts"}},
      {"empty metaspace replacement",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", ""}, {"split", true}};
       },
       {"pre_tokenizer.replacement", "one character"}},
      {"template names undefined token",
       [](json& j) { j["post_processor"]["special_tokens"] = json::object(); },
       {"post_processor.special_tokens.<s>", "not defined"}},
      {"unknown decoder",
       [](json& j) {
         j["decoder"] = {{"type", "CTC"}};
       },
       {"decoder", "CTC"}},
      {"added token without id",
       [](json& j) { j["added_tokens"][0].erase("id"); },
       {"added_tokens[0]", "id"}},
      {"type of wrong kind",
       [](json& j) {
         j["decoder"] = {{"type", 3}};
       },
       {"decoder.type"}},
      {"model missing", [](json& j) { j.erase("model"); }, {"dir/tokenizer.json", "model"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    json j = tiny();
    c.edit(j);
    const std::string msg = load_error(j);
    for (const std::string& part : c.expect) EXPECT_NE(msg.find(part), std::string::npos) << msg;
  }
}

TEST(TokenizerLoad, NotJsonAtAll) {
  for (std::string_view text : {"", "{", "[1, 2]", "null", "\xff\xfe"}) {
    try {
      Tokenizer::from_json_strings(text, {}, {}, "x/tokenizer.json");
      ADD_FAILURE() << "loaded: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("x/tokenizer.json"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerLoad, BadConfigNamesTheConfigFile) {
  const std::string msg = load_error(tiny(), "{not json");
  EXPECT_NE(msg.find("dir/tokenizer_config.json"), std::string::npos) << msg;
}

TEST(TokenizerLoad, MissingDirectoryIsAnError) {
  EXPECT_THROW(Tokenizer::from_dir("/nonexistent/model"), Error);
}

// The reference panics on a Strip decoder whose `stop` reaches past an empty token; redhare
// returns the text instead.
TEST(TokenizerLoad, StripDecoderOnEmptyTokenDoesNotCrash) {
  json j = tiny();
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", ""}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 3}, {"stop", 3}}}}};
  const auto tok = Tokenizer::from_json_strings(j.dump());
  EXPECT_EQ(tok.decode({0, 1, 0}, false), "b");
}

TEST(TokenizerLoad, EncodeIsSafeFromManyThreads) {
  const auto* tok = test::load_fetched("synthetic-byte_level");
  ASSERT_TRUE(tok);
  const std::string text = "Concurrent encodes share the word cache. 並行 🚀 12345";
  const auto want = tok->encode(text, true);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int good = 0;
      for (int k = 0; k < 200; ++k)
        good += tok->encode(text + std::to_string(k % 7), true).size() > 0 &&
                tok->encode(text, true) == want;
      ok[t] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(ok[t], 200);
}

}  // namespace
}  // namespace redhare
