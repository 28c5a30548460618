// The parts of a loaded Tokenizer, shared by the loader and the pipeline. Internal.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"
#include "text/tokenizer_bpe.h"
#include "text/tokenizer_components.h"

namespace redhare::text {

// A range of text that is either an added token (id >= 0) or plain text (id < 0).
struct Segment {
  std::size_t start, end;
  int32_t id;
};

// Finds added tokens in text the way the reference does: leftmost-longest, non-overlapping, with
// the single_word / lstrip / rstrip rules applied to each match.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // With normalized = true the matcher holds the tokens that match normalized text, and it
  // matches their contents as the normalizer rewrites them (as the reference does).
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized,
                    const Normalizer* normalizer);
  bool empty() const { return candidates_.empty(); }
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  // The longest token starting at text[at], or nullptr.
  const AddedToken* longest_at(std::string_view text, std::size_t at) const;

  std::vector<AddedToken> candidates_;
  // A byte trie over the token texts: edge (node << 8 | byte) -> child node; node 0 is the root.
  // A walk costs at most the longest token's length, however many tokens there are.
  std::unordered_map<uint64_t, uint32_t> edges_;
  std::vector<int32_t> token_at_node_;  // index into candidates_ of the token ending there, or -1
  std::array<bool, 256> starts_{};      // bytes that begin some token: the common fast "no"
};

}  // namespace redhare::text

namespace redhare {

struct Tokenizer::Impl {
  std::unique_ptr<text::Normalizer> normalizer;
  std::unique_ptr<text::PreTokenizer> pre_tokenizer;
  std::unique_ptr<text::BpeModel> model;
  std::unique_ptr<text::PostProcessor> post_processor;
  std::unique_ptr<text::Decoder> decoder;

  std::vector<AddedToken> added;  // in file order
  // What decode() and id_to_token() show for each added token: the reference shows a token with
  // normalized = true as the normalizer rewrites it.
  std::vector<std::string> added_shown;
  std::unordered_map<int32_t, std::size_t> added_by_id;
  text::TokenMap added_by_content;
  std::unordered_set<std::string> special_contents;
  text::AddedTokenMatcher raw_matcher;         // tokens with normalized = false
  text::AddedTokenMatcher normalized_matcher;  // tokens with normalized = true
  std::size_t vocab_size = 0;

  std::optional<int32_t> bos, eos, pad, unk;
  nlohmann::json config = nlohmann::json::object();

  // Appends the ids of text, before post-processing.
  void encode_text(std::string_view text, std::vector<int32_t>& ids) const;
};

}  // namespace redhare
