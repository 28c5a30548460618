// Patterns, splitting, and the pre-tokenizers that cut text into words for the model.
#include <algorithm>
#include <optional>
#include <utility>

#include "core/error.h"
#include "text/tokenizer_components.h"
#include "text/unicode.h"

namespace redhare::text {

// ---- Pattern ----

Pattern Pattern::literal(std::string s) {
  Pattern p;
  p.kind_ = Kind::kLiteral;
  p.literal_ = std::move(s);
  return p;
}

Pattern Pattern::regex(const std::string& re) {
  Pattern p;
  p.kind_ = Kind::kRegex;
  p.regex_ = std::make_shared<const Regex>(re);
  return p;
}

Pattern Pattern::character(bool (*predicate)(char32_t)) {
  Pattern p;
  p.kind_ = Kind::kPredicate;
  p.predicate_ = predicate;
  return p;
}

Pattern Pattern::character(char32_t c) {
  Pattern p;
  p.kind_ = Kind::kChar;
  p.char_ = c;
  return p;
}

void Pattern::find_matches(std::string_view text, std::vector<Range>& out) const {
  out.clear();
  if (text.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  if (kind_ == Kind::kPredicate || kind_ == Kind::kChar) {
    std::size_t last = 0, i = 0;
    while (i < text.size()) {
      const std::size_t at = i;
      const char32_t c = utf8_next(text, i);
      if (kind_ == Kind::kChar ? c == char_ : predicate_(c)) {
        if (last < at) out.push_back({last, at, false});
        out.push_back({at, i, true});
        last = i;
      }
    }
    if (last < text.size()) out.push_back({last, text.size(), false});
    return;
  }
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  if (kind_ == Kind::kRegex) {
    regex_->find_all(text, spans);
  } else if (!literal_.empty()) {
    for (std::size_t at = text.find(literal_); at != std::string_view::npos;
         at = text.find(literal_, at + literal_.size())) {
      spans.emplace_back(at, at + literal_.size());
    }
  }
  std::size_t prev = 0;
  for (const auto& [start, end] : spans) {
    if (prev != start) out.push_back({prev, start, false});
    out.push_back({start, end, true});
    prev = end;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
}

// ---- splitting ----

namespace {

// Turns the match/non-match cover of a piece into the ranges to keep, per behaviour.
void ranges_to_keep(std::vector<Pattern::Range>& m, SplitBehavior behavior) {
  std::vector<Pattern::Range> acc;
  acc.reserve(m.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& r : m) r.is_match = false;
      return;
    case SplitBehavior::kRemoved:
      return;  // matches are flagged, and flagged ranges are dropped
    case SplitBehavior::kContiguous:
      for (const auto& r : m) {
        if (r.is_match == previous_match && !acc.empty()) {
          acc.back().end = r.end;
        } else {
          acc.push_back({r.start, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& r : m) {
        if (r.is_match && !previous_match && !acc.empty()) {
          acc.back().end = r.end;
        } else {
          acc.push_back({r.start, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = m.rbegin(); it != m.rend(); ++it) {
        if (it->is_match && !previous_match && !acc.empty()) {
          acc.back().start = it->start;
        } else {
          acc.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(acc.begin(), acc.end());
      break;
  }
  m = std::move(acc);
}

}  // namespace

void split_pieces(std::vector<Piece>& pieces, const Pattern& pattern, SplitBehavior behavior,
                  bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  std::vector<Pattern::Range> m;
  for (Piece& piece : pieces) {
    pattern.find_matches(piece.text, m);
    if (invert) {
      for (auto& r : m) r.is_match = !r.is_match;
    }
    ranges_to_keep(m, behavior);
    for (const auto& r : m) {
      if (r.is_match || r.end == r.start) continue;
      out.push_back({piece.text.substr(r.start, r.end - r.start), piece.at_origin && r.start == 0});
    }
  }
  pieces = std::move(out);
}

// ---- pre-tokenizers ----

namespace {

// GPT-2's pattern, which ByteLevel uses when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_.emplace(Pattern::regex(kGpt2Pattern));
  }
  void apply(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, 1, ' ');
      }
    }
    if (regex_) split_pieces(pieces, *regex_, SplitBehavior::kIsolated, false);
    for (Piece& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() + p.text.size() / 2);
      for (char ch : p.text) mapped += byte_to_unicode(static_cast<unsigned char>(ch));
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::optional<Pattern> regex_;
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {
    std::size_t i = 0;
    replacement_char_ = utf8_next(replacement_, i);
  }
  void apply(std::vector<Piece>& pieces) const override {
    for (Piece& p : pieces) {
      std::string replaced;
      replaced.reserve(p.text.size() + 8);
      for (char ch : p.text) {
        if (ch == ' ') {
          replaced += replacement_;
        } else {
          replaced.push_back(ch);
        }
      }
      const bool starts = replaced.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        replaced.insert(0, replacement_);
      }
      p.text = std::move(replaced);
    }
    if (split_) {
      split_pieces(pieces, Pattern::character(replacement_char_), SplitBehavior::kMergedWithNext,
                   false);
    }
  }

 private:
  std::string replacement_;
  char32_t replacement_char_ = 0;
  PrependScheme scheme_;
  bool split_;
};

class PatternPreTokenizer final : public PreTokenizer {
 public:
  PatternPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void apply(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, pattern_, behavior_, invert_);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> s)
      : steps_(std::move(s)) {}
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_byte_level_pretokenizer(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, use_regex);
}
std::unique_ptr<PreTokenizer> make_split_pretokenizer(Pattern pattern, SplitBehavior behavior,
                                                      bool invert) {
  return std::make_unique<PatternPreTokenizer>(std::move(pattern), behavior, invert);
}
std::unique_ptr<PreTokenizer> make_metaspace_pretokenizer(std::string replacement,
                                                          PrependScheme scheme, bool split) {
  return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
}
std::unique_ptr<PreTokenizer> make_digits_pretokenizer(bool individual) {
  return std::make_unique<PatternPreTokenizer>(
      Pattern::character(&is_numeric),
      individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
}
std::unique_ptr<PreTokenizer> make_whitespace_pretokenizer() {
  // Keeps the runs of word characters and the runs of other non-space characters.
  return std::make_unique<PatternPreTokenizer>(Pattern::regex(R"(\w+|[^\w\s]+)"),
                                               SplitBehavior::kRemoved, true);
}
std::unique_ptr<PreTokenizer> make_whitespace_split_pretokenizer() {
  return std::make_unique<PatternPreTokenizer>(Pattern::character(&is_whitespace),
                                               SplitBehavior::kRemoved, false);
}
std::unique_ptr<PreTokenizer> make_punctuation_pretokenizer(SplitBehavior behavior) {
  return std::make_unique<PatternPreTokenizer>(Pattern::character(&is_punctuation), behavior,
                                               false);
}
std::unique_ptr<PreTokenizer> make_sequence_pretokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> s) {
  return std::make_unique<SequencePreTokenizer>(std::move(s));
}

}  // namespace redhare::text
