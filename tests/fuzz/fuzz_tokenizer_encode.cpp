// libFuzzer target: encoding arbitrary bytes with the committed synthetic tokenizers (one per
// pipeline shape), decoding the result, and streaming it through the incremental detokenizer,
// whose output must add up to the full decode.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace {

const std::vector<std::unique_ptr<redhare::Tokenizer>>& tokenizers() {
  static const auto all = [] {
    // This file lives in tests/fuzz/ of the repository; the fixtures are beside it.
    const auto root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
    std::vector<std::unique_ptr<redhare::Tokenizer>> v;
    for (const char* name : {"byte_level", "split_behaviors", "subword_affixes", "metaspace_split",
                             "byte_fallback", "no_decoder"}) {
      v.push_back(std::make_unique<redhare::Tokenizer>(
          redhare::Tokenizer::from_dir(root / "fixtures" / "tokenizer" / "synthetic" / name)));
    }
    return v;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& all = tokenizers();
  const redhare::Tokenizer& tok = *all[data[0] % all.size()];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tok.encode(text, special);
    const std::string full = tok.decode(ids, special);
    if (!redhare::text::utf8_is_valid(full)) std::abort();
    redhare::IncrementalDetokenizer detok(tok, special);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string delta = detok.push(id);
      if (!redhare::text::utf8_is_valid(delta)) std::abort();
      streamed += delta;
    }
    streamed += detok.finish();
    if (streamed != full) std::abort();
  }
  return 0;
}
