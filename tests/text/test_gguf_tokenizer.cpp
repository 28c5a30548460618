// Tokenizers rebuilt from GGUF metadata must tokenize exactly like the Hugging Face tokenizer of
// the same vocabulary: SentencePiece-style (scores -> merges) against the tokenizer.json made from
// the same Mistral tokenizer.model, and byte-level BPE against SmolLM2's.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"

namespace redhare {
namespace {

std::string src(const std::string& rel) { return std::string(REDHARE_SOURCE_DIR) + "/" + rel; }

void expect_same_on_corpus(const Tokenizer& from_gguf, const Tokenizer& reference) {
  auto corpus = nlohmann::json::parse(read_text_file(src("fixtures/tokenizer/corpus.json")));
  int checked = 0;
  for (const auto& c : corpus) {
    if (!c["text"].is_string()) continue;  // raw-byte cases (invalid UTF-8) are covered elsewhere
    const std::string text = c["text"].get<std::string>();
    for (bool special : {true, false}) {
      std::vector<int32_t> a = from_gguf.encode(text, special), b = reference.encode(text, special);
      ASSERT_EQ(a, b) << c["name"] << " add_special_tokens=" << special;
      EXPECT_EQ(from_gguf.decode(a, true), reference.decode(b, true)) << c["name"];
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(GgufTokenizer, SentencePieceScoresMatchTheHubLayout) {
  const std::string ref_dir = src(".cache/tokenizers/mistral-v1");
  ASSERT_TRUE(std::filesystem::exists(ref_dir + "/tokenizer.json"))
      << ref_dir << " is missing: run tools/tokenizer/fetch_tokenizers.sh";
  GgufFile f = GgufFile::open(src("fixtures/gguf/spm_tokenizer.gguf"));
  Tokenizer gguf_tok = tokenizer_from_gguf(f);
  Tokenizer ref = Tokenizer::from_dir(ref_dir);
  EXPECT_EQ(gguf_tok.vocab_size(), ref.vocab_size());
  EXPECT_EQ(gguf_tok.bos_id(), ref.bos_id());
  expect_same_on_corpus(gguf_tok, ref);
}

TEST(GgufTokenizer, ByteLevelBpeMatchesSmolLM2) {
  const std::string ref_dir = src(".cache/tokenizers/smollm2");
  ASSERT_TRUE(std::filesystem::exists(ref_dir + "/tokenizer.json"))
      << ref_dir << " is missing: run tools/tokenizer/fetch_tokenizers.sh";
  const char* home = std::getenv("HOME");
  std::string model = std::getenv("REDHARE_HOME") ? std::string(std::getenv("REDHARE_HOME")) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
                      : std::getenv("XDG_CACHE_HOME") ? std::string(std::getenv("XDG_CACHE_HOME")) + "/redhare/models/SmolLM2-135M-Instruct.Q4_1.gguf"
                                                      : std::string(home ? home : ".") + "/.cache/redhare/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  ASSERT_TRUE(std::filesystem::exists(model)) << model << " is missing: run scripts/fetch_default_model.sh";
  Tokenizer gguf_tok = tokenizer_from_gguf(GgufFile::open(model));
  Tokenizer ref = Tokenizer::from_dir(ref_dir);
  expect_same_on_corpus(gguf_tok, ref);
}

}  // namespace
}  // namespace redhare
