// The pipeline stages of a Hugging Face tokenizer, as built from tokenizer.json.
//
// Internal to the text layer. Each stage mirrors one `type` of the reference library and keeps
// its observable behaviour on token ids and decoded text (offsets are not tracked: redhare never
// needs them). The loader (tokenizer_load.cpp) builds these; tokenizer.cpp runs them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/regex.h"
#include "text/unicode.h"

namespace redhare::text {

// A piece of text on its way to the model. `at_origin` says whether it begins at the first byte
// of the user's text: Metaspace's "first" scheme prepends its marker only there.
struct Piece {
  std::string text;
  bool at_origin = false;
};

// The reference's Pattern trait: a literal string, a regex, or a single character. find_matches
// covers the whole text with ranges flagged as match or not; a character pattern flags every
// occurrence as its own match, which matters for the merge behaviours of split_pieces.
class Pattern {
 public:
  struct Range {
    std::size_t start, end;
    bool is_match;
  };
  static Pattern literal(std::string s);
  static Pattern regex(const std::string& re);
  static Pattern character(bool (*predicate)(char32_t));
  static Pattern character(char32_t c);
  void find_matches(std::string_view text, std::vector<Range>& out) const;

 private:
  enum class Kind { kLiteral, kRegex, kPredicate, kChar } kind_ = Kind::kLiteral;
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
  bool (*predicate_)(char32_t) = nullptr;
  char32_t char_ = 0;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may rewrite) every piece. Pieces come in non-empty and go out non-empty.
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence; only called when add_special_tokens is set.
  virtual std::vector<int32_t> process(std::vector<int32_t> ids) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // The reference's decode_chain: token strings in, token strings out; the caller joins them.
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits every piece at the matches of `pattern` (or its complement when inverted).
void split_pieces(std::vector<Piece>& pieces, const Pattern& pattern, SplitBehavior behavior,
                  bool invert);

// Factories used by the loader. Arguments are already validated.
std::unique_ptr<Normalizer> make_unicode_normalizer(NormalForm form);
std::unique_ptr<Normalizer> make_lowercase_normalizer();
std::unique_ptr<Normalizer> make_replace_normalizer(Pattern pattern, std::string content);
std::unique_ptr<Normalizer> make_prepend_normalizer(std::string prepend);
std::unique_ptr<Normalizer> make_strip_normalizer(bool left, bool right);
std::unique_ptr<Normalizer> make_sequence_normalizer(std::vector<std::unique_ptr<Normalizer>> s);

enum class PrependScheme { kAlways, kFirst, kNever };

std::unique_ptr<PreTokenizer> make_byte_level_pretokenizer(bool add_prefix_space, bool use_regex);
std::unique_ptr<PreTokenizer> make_split_pretokenizer(Pattern pattern, SplitBehavior behavior,
                                                      bool invert);
std::unique_ptr<PreTokenizer> make_metaspace_pretokenizer(std::string replacement,
                                                          PrependScheme scheme, bool split);
std::unique_ptr<PreTokenizer> make_digits_pretokenizer(bool individual);
std::unique_ptr<PreTokenizer> make_whitespace_pretokenizer();
std::unique_ptr<PreTokenizer> make_whitespace_split_pretokenizer();
std::unique_ptr<PreTokenizer> make_punctuation_pretokenizer(SplitBehavior behavior);
std::unique_ptr<PreTokenizer> make_sequence_pretokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> s);

// A template for one sequence: special-token id runs and the place of the sequence itself.
struct TemplatePart {
  bool is_sequence = false;
  std::vector<int32_t> ids;
};
std::unique_ptr<PostProcessor> make_template_postprocessor(std::vector<TemplatePart> single);
std::unique_ptr<PostProcessor> make_sequence_postprocessor(
    std::vector<std::unique_ptr<PostProcessor>> s);

std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_metaspace_decoder(std::string replacement, PrependScheme scheme);
std::unique_ptr<Decoder> make_byte_fallback_decoder();
std::unique_ptr<Decoder> make_fuse_decoder();
std::unique_ptr<Decoder> make_strip_decoder(char32_t content, std::size_t start, std::size_t stop);
std::unique_ptr<Decoder> make_replace_decoder(Pattern pattern, std::string content);
std::unique_ptr<Decoder> make_bpe_suffix_decoder(std::string suffix);
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> s);

}  // namespace redhare::text
