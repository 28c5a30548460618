// What serving a model needs besides its weights: the tokenizer, the chat template, the
// special-token texts the template uses, and the ids that end generation. Read from a Hugging
// Face directory (tokenizer.json, tokenizer_config.json, generation_config.json) or from a GGUF
// file's metadata.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "text/tokenizer.h"

namespace redhare {

struct TextAssets {
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model has none
  std::string chat_template;             // empty when the model has none
  std::string bos_token, eos_token;
  std::vector<int32_t> eos_token_ids;    // config, generation_config and tokenizer EOS, merged
};

// `tokenizer_dir` overrides where the tokenizer comes from (empty: the model itself). A missing
// tokenizer is not an error (token-id use still works); a broken one is.
TextAssets load_text_assets(const std::string& model_path, const ModelConfig& config,
                            const std::string& tokenizer_dir = "");

}  // namespace redhare
