// Incremental detokenization for streaming: turns a growing stream of token ids into text deltas.
//
// Every delta is whole UTF-8 characters, and the deltas (those of push() and then finish())
// concatenate to exactly Tokenizer::decode of the whole stream. A token that completes only part
// of a character (byte-level and byte-fallback vocabularies split characters across tokens) is
// held back until the character is complete, and a run of byte-fallback tokens is held back until
// a token of another kind ends it (the decoder judges a run as a whole).
//
// Each step decodes a short window of recent tokens rather than the whole stream, so its cost
// stays constant as the stream grows. The window starts one step back so that decoders which
// treat the first token specially (SentencePiece's leading-space strip) see the same first token
// in both decodes they compare.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace redhare {

class IncrementalDetokenizer {
 public:
  // The tokenizer must outlive this object. `context` is what precedes the stream (the end of
  // the prompt): SentencePiece-style decoders drop the leading space of the first token, so
  // without context a stream that starts with "▁Hello" yields "Hello"; with context it yields
  // " Hello", the text the tokens add after the prompt. Only the last few context tokens are
  // kept.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false,
                                  const std::vector<int32_t>& context = {});

  // Adds one token; returns the text it makes final (possibly empty).
  std::string push(int32_t id);
  // Ends the stream; returns whatever text was held back. All deltas together equal
  // decode(context + stream) minus decode(context), which without context is decode(stream).
  std::string finish();

 private:
  std::string decode_range(std::size_t begin, std::size_t end) const;

  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;       // the kept context, then the stream
  std::size_t context_bytes_ = 0;  // length of the decoded context
  std::size_t prefix_offset_ = 0;  // first token of the window
  std::size_t read_offset_ = 0;    // tokens before this are fully emitted
  std::size_t emitted_bytes_ = 0;
};

}  // namespace redhare
