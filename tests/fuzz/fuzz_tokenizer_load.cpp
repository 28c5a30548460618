// libFuzzer target: tokenizer.json loading. Any input must either load or throw redhare::Error;
// what loads must encode and decode without crashing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // An optional second document after a NUL byte is the tokenizer_config.json.
  const std::size_t split = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, split);
  const std::string_view config =
      split == std::string_view::npos ? std::string_view() : input.substr(split + 1);
  try {
    const auto tok = redhare::Tokenizer::from_json_strings(tokenizer_json, config);
    for (std::string_view text : {"Hello world! 123 <s>", " \xe4\xbd\xa0\xe5\xa5\xbd \xff", ""}) {
      const auto ids = tok.encode(text, true);
      (void)tok.decode(ids, false);
      redhare::IncrementalDetokenizer detok(tok, true);
      for (int32_t id : ids) (void)detok.push(id);
      (void)detok.finish();
    }
    (void)tok.decode({0, 1, 2, -1, 1 << 30}, true);
  } catch (const redhare::Error&) {
  }
  return 0;
}
