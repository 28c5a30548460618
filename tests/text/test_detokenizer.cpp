// Incremental detokenization on streams that are hard for it: byte-fallback runs that turn out
// invalid, characters split across byte-level tokens, special tokens between the pieces.
#include <gtest/gtest.h>

#include "text/detokenizer.h"
#include "text/unicode.h"
#include "tokenizer_fixtures.h"

namespace redhare {
namespace {

// Streams ids one by one and checks the deltas against the full decode; returns the deltas.
std::vector<std::string> stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  IncrementalDetokenizer detok(tok, skip);
  std::vector<std::string> deltas;
  std::string all;
  for (int32_t id : ids) {
    deltas.push_back(detok.push(id));
    EXPECT_TRUE(text::utf8_is_valid(deltas.back()));
    all += deltas.back();
  }
  deltas.push_back(detok.finish());
  all += deltas.back();
  EXPECT_EQ(all, tok.decode(ids, skip));
  return deltas;
}

TEST(IncrementalDetokenizer, ByteRunThatBecomesInvalid) {
  const Tokenizer* tok = test::load_fetched("mistral-v1");
  ASSERT_TRUE(tok);
  const int32_t byte_a = *tok->token_to_id("<0x41>"), byte_fe = *tok->token_to_id("<0xFE>");
  const int32_t hello = *tok->token_to_id("▁Hello");
  // "A" alone is valid, but the run "A A 0xFE" is not: all three bytes decode as U+FFFD.
  const auto deltas = stream(*tok, {hello, byte_a, byte_a, byte_fe, hello}, false);
  EXPECT_EQ(tok->decode({hello, byte_a, byte_a, byte_fe, hello}, false),
            "Hello\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD Hello");
  EXPECT_EQ(deltas[0], "Hello");
  EXPECT_EQ(deltas[1], "");  // held: the run is still open
}

TEST(IncrementalDetokenizer, CharacterSplitAcrossByteTokensIsHeldBack) {
  const Tokenizer* tok = test::load_fetched("mistral-v1");
  ASSERT_TRUE(tok);
  // U+1F680 ROCKET as four byte-fallback tokens, then a word.
  std::vector<int32_t> ids;
  for (const char* b : {"<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"})
    ids.push_back(*tok->token_to_id(b));
  ids.push_back(*tok->token_to_id("▁go"));
  const auto deltas = stream(*tok, ids, false);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(deltas[k], "") << k;
  EXPECT_EQ(deltas[4], "\xF0\x9F\x9A\x80 go");
}

TEST(IncrementalDetokenizer, ByteLevelSplitCharacter) {
  const Tokenizer* tok = test::load_fetched("llama3");
  ASSERT_TRUE(tok);
  const auto ids = tok->encode("I 🦙 love 漢字 and 👨‍👩‍👧!", false);
  const auto deltas = stream(*tok, ids, false);
  // Some token carries only part of a character's bytes, so some delta must be empty.
  EXPECT_NE(std::find(deltas.begin(), deltas.end() - 1, std::string()), deltas.end() - 1);
}

TEST(IncrementalDetokenizer, SkippedSpecialTokensBetweenPieces) {
  for (const char* name : {"mistral-v1", "mistral-v3", "llama3"}) {
    SCOPED_TRACE(name);
    const Tokenizer* tok = test::load_fetched(name);
    ASSERT_TRUE(tok);
    std::vector<int32_t> ids = tok->encode("Hello there", true);
    const auto more = tok->encode(" general Kenobi", false);
    ids.push_back(*tok->eos_id());
    ids.insert(ids.end(), more.begin(), more.end());
    ids.push_back(*tok->eos_id());
    stream(*tok, ids, true);
    stream(*tok, ids, false);
  }
}

TEST(IncrementalDetokenizer, PromptContextKeepsTheLeadingSpace) {
  const Tokenizer* tok = test::load_fetched("mistral-v1");
  ASSERT_TRUE(tok);
  const std::vector<int32_t> prompt = tok->encode("The answer is", true);
  const std::vector<int32_t> generated = {*tok->token_to_id("▁forty"), *tok->token_to_id("▁two")};
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string want = tok->decode(all, true).substr(tok->decode(prompt, true).size());
  EXPECT_EQ(want, " forty two");

  IncrementalDetokenizer with_context(*tok, true, prompt);
  std::string got;
  for (int32_t id : generated) got += with_context.push(id);
  got += with_context.finish();
  EXPECT_EQ(got, want);

  IncrementalDetokenizer without(*tok, true);
  got.clear();
  for (int32_t id : generated) got += without.push(id);
  got += without.finish();
  EXPECT_EQ(got, "forty two");
}

TEST(IncrementalDetokenizer, EmptyStream) {
  const Tokenizer* tok = test::load_fetched("synthetic-byte_fallback");
  ASSERT_TRUE(tok);
  IncrementalDetokenizer detok(*tok);
  EXPECT_EQ(detok.finish(), "");
}

}  // namespace
}  // namespace redhare
