#include "text/detokenizer.h"

#include <algorithm>

namespace redhare {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                               const std::vector<int32_t>& context)
    : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {
  // A few tokens are enough to give the first new token its place in the text; more would only
  // make every decode longer.
  constexpr std::size_t kContextTokens = 6;
  const std::size_t keep = std::min(context.size(), kContextTokens);
  ids_.assign(context.end() - static_cast<std::ptrdiff_t>(keep), context.end());
  read_offset_ = ids_.size();
  context_bytes_ = decode_range(0, ids_.size()).size();
}

std::string IncrementalDetokenizer::decode_range(std::size_t begin, std::size_t end) const {
  return tokenizer_->decode(std::vector<int32_t>(ids_.begin() + begin, ids_.begin() + end),
                            skip_special_);
}

namespace {

// "<0xAB>": a byte-fallback token.
bool is_byte_token(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>';
}

}  // namespace

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  const auto token = tokenizer_->id_to_token(id);
  // Tokens that decode() drops add no text; emitting now would change nothing.
  if (!token || (skip_special_ && tokenizer_->is_special(id))) return {};
  // A run of byte tokens decodes as a whole: if any byte in it is not valid UTF-8, every byte of
  // the run becomes U+FFFD, even those that looked valid so far. Wait for the run to end.
  if (is_byte_token(*token)) return {};
  const std::string prefix = decode_range(prefix_offset_, read_offset_);
  const std::string full = decode_range(prefix_offset_, ids_.size());
  // Hold back while the newest text ends in a replacement character: the next token may complete
  // the character. A stream that really contains U+FFFD is released by finish().
  if (full.size() <= prefix.size() || full.compare(0, prefix.size(), prefix) != 0 ||
      (full.size() >= 3 && full.compare(full.size() - 3, 3, "\xEF\xBF\xBD") == 0)) {
    return {};
  }
  std::string delta = full.substr(prefix.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  emitted_bytes_ += delta.size();
  return delta;
}

std::string IncrementalDetokenizer::finish() {
  // The held-back tail, taken from the decode of the whole stream so the total is exact.
  const std::string all = tokenizer_->decode(ids_, skip_special_);
  const std::size_t done = context_bytes_ + emitted_bytes_;
  std::string rest = done < all.size() ? all.substr(done) : std::string();
  emitted_bytes_ += rest.size();
  prefix_offset_ = read_offset_ = ids_.size();
  return rest;
}

}  // namespace redhare
