// The engine's TextStream over a tokenizer's IncrementalDetokenizer (special tokens skipped, as
// OpenAI-style outputs expect), for every front end that runs the engine with text.
#pragma once

#include <memory>

#include "engine/engine.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

namespace redhare {

class DetokenizerStream final : public TextStream {
 public:
  explicit DetokenizerStream(const Tokenizer& t) : d_(t, /*skip_special_tokens=*/true) {}
  std::string push(int32_t token) override { return d_.push(token); }
  std::string finish() override { return d_.finish(); }

 private:
  IncrementalDetokenizer d_;
};

// A factory for Engine's constructor; the tokenizer must outlive the engine.
inline TextStreamFactory detokenizer_streams(const Tokenizer& t) {
  const Tokenizer* tok = &t;
  return [tok](const std::vector<int32_t>&) { return std::make_unique<DetokenizerStream>(*tok); };
}

}  // namespace redhare
