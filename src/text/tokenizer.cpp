// The encode/decode pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor on
// the way in; id lookup and the decoder chain on the way out.
#include "text/tokenizer.h"

#include <algorithm>
#include <unordered_set>

#include "core/error.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"

namespace redhare::text {

namespace {

// What the reference's single_word check calls a word character (\w of Rust's regex crate).
bool is_word_char(char32_t c) {
  return is_regex_word(c);
}

char32_t last_char(std::string_view s) {
  std::size_t at = s.size() - 1;
  while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
  return utf8_next(s, at);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized,
                                     const Normalizer* normalizer) {
  std::unordered_set<std::string> seen;
  for (AddedToken t : tokens) {
    if (t.normalized != normalized || t.content.empty()) continue;
    if (normalized && normalizer) t.content = normalizer->apply(t.content);
    if (t.content.empty()) continue;
    // Of two tokens with one text, the first wins, as in the reference's matcher.
    if (seen.insert(t.content).second) candidates_.push_back(std::move(t));
  }
  token_at_node_.push_back(-1);
  for (std::size_t k = 0; k < candidates_.size(); ++k) {
    const std::string& c = candidates_[k].content;
    starts_[static_cast<unsigned char>(c[0])] = true;
    uint32_t node = 0;
    for (char ch : c) {
      const uint64_t key = (uint64_t{node} << 8) | static_cast<unsigned char>(ch);
      auto [it, inserted] = edges_.emplace(key, static_cast<uint32_t>(token_at_node_.size()));
      if (inserted) token_at_node_.push_back(-1);
      node = it->second;
    }
    token_at_node_[node] = static_cast<int32_t>(k);
  }
}

const AddedToken* AddedTokenMatcher::longest_at(std::string_view text, std::size_t at) const {
  if (!starts_[static_cast<unsigned char>(text[at])]) return nullptr;
  const AddedToken* best = nullptr;
  uint32_t node = 0;
  for (std::size_t i = at; i < text.size(); ++i) {
    const auto it = edges_.find((uint64_t{node} << 8) | static_cast<unsigned char>(text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (token_at_node_[node] >= 0) best = &candidates_[token_at_node_[node]];
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  out.clear();
  std::size_t emitted = 0;  // end of the last segment pushed
  std::size_t i = 0;
  while (i < text.size()) {
    const AddedToken* hit = longest_at(text, i);
    if (!hit) {
      ++i;
      continue;
    }
    std::size_t start = i, stop = i + hit->content.size();
    // The reference's matcher has moved past this match whether or not it is kept.
    i = stop;
    if (hit->single_word) {
      const bool space_before = start == 0 || !is_word_char(last_char(text.substr(0, start)));
      std::size_t at = stop;
      const bool space_after = stop == text.size() || !is_word_char(utf8_next(text, at));
      if (!space_before || !space_after) continue;
    }
    if (start < emitted) continue;  // swallowed by the previous token's rstrip
    if (hit->lstrip) {
      while (start > emitted) {
        std::size_t at = start - 1;
        while (at > emitted && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
        std::size_t next = at;
        if (!is_whitespace(utf8_next(text, next))) break;
        start = at;
      }
    }
    if (hit->rstrip) {
      while (stop < text.size()) {
        std::size_t next = stop;
        if (!is_whitespace(utf8_next(text, next))) break;
        stop = next;
      }
    }
    if (start > emitted) out.push_back({emitted, start, -1});
    out.push_back({start, stop, hit->id});
    emitted = stop;
    i = std::max(i, stop);
  }
  if (emitted < text.size()) out.push_back({emitted, text.size(), -1});
}

}  // namespace redhare::text

namespace redhare {

using text::Piece;
using text::Segment;

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<Segment> raw, normed;
  std::vector<Piece> pieces;
  raw_matcher.split(text, raw);
  for (const Segment& seg : raw) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string norm(text.substr(seg.start, seg.end - seg.start));
    if (normalizer) norm = normalizer->apply(std::move(norm));
    normalized_matcher.split(norm, normed);
    for (const Segment& part : normed) {
      if (part.id >= 0) {
        ids.push_back(part.id);
        continue;
      }
      pieces.clear();
      pieces.push_back(
          {norm.substr(part.start, part.end - part.start), seg.start == 0 && part.start == 0});
      if (pre_tokenizer) pre_tokenizer->apply(pieces);
      for (const Piece& p : pieces) model->tokenize(p.text, ids);
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!text::utf8_is_valid(text)) {
    repaired = text::utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->encode_text(text, ids);
  if (add_special_tokens && impl_->post_processor) {
    ids = impl_->post_processor->process(std::move(ids));
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* tok = nullptr;
    if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
      tok = &impl_->added_shown[it->second];
    } else {
      tok = impl_->model->id_to_token(id);
    }
    if (!tok) continue;
    if (skip_special_tokens && impl_->special_contents.count(*tok)) continue;
    tokens.push_back(*tok);
  }
  std::string out;
  if (!impl_->decoder) {
    // Without a decoder the reference joins the tokens with spaces.
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      if (k) out.push_back(' ');
      out += tokens[k];
    }
    return out;
  }
  for (const std::string& t : impl_->decoder->decode_chain(std::move(tokens))) out += t;
  return out;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
    return impl_->added_shown[it->second];
  }
  if (const std::string* tok = impl_->model->id_to_token(id)) return *tok;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) {
    return it->second;
  }
  return impl_->model->token_to_id(token);
}

std::size_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}

bool Tokenizer::is_special(int32_t id) const {
  const auto tok = id_to_token(id);
  return tok && impl_->special_contents.count(*tok) > 0;
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}
std::optional<int32_t> Tokenizer::pad_id() const {
  return impl_->pad;
}
std::optional<int32_t> Tokenizer::unk_id() const {
  return impl_->unk;
}
const std::vector<AddedToken>& Tokenizer::added_tokens() const {
  return impl_->added;
}
const nlohmann::json& Tokenizer::config() const {
  return impl_->config;
}

}  // namespace redhare
