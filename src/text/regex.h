// Regular expressions for pre-tokenizers, on PCRE2 in UTF + UCP mode with the JIT.
//
// tokenizer.json patterns are written for Oniguruma, the engine inside the reference library.
// Patterns are first rewritten where the two engines disagree (regex_syntax.h); the fixture tests
// check the result on real tokenizer files.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace redhare::text {

class Regex {
 public:
  // Throws redhare::Error naming the pattern when it does not compile.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Appends the [start, end) byte ranges of successive matches in `text` (valid UTF-8) to out,
  // stepping over empty matches the way Oniguruma's find iterator does.
  void find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace redhare::text
