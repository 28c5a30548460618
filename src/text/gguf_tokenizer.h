// The tokenizer and chat template a GGUF file carries in its tokenizer.ggml.* metadata, turned
// into the same Tokenizer that tokenizer.json gives, so GGUF models tokenize exactly as their
// Hugging Face originals.
#pragma once

#include <string>

#include "formats/gguf.h"
#include "text/tokenizer.h"

namespace redhare {

// The tokenizer.json (and tokenizer_config.json) equivalent of a GGUF file's tokenizer; throws
// redhare::Error naming the file for a tokenizer model or pre-tokenizer redhare cannot rebuild.
struct GgufTokenizerJson {
  std::string tokenizer_json;
  std::string tokenizer_config_json;  // bos/eos/pad/unk tokens, chat_template
};
GgufTokenizerJson gguf_tokenizer_json(const GgufFile& file);
Tokenizer tokenizer_from_gguf(const GgufFile& file);

}  // namespace redhare
