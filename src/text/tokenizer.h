// Hugging Face tokenizers: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)
// loaded and run so that token ids and decoded text equal those of the `tokenizers` library.
//
// Supported: BPE models (byte-level like GPT-2/Llama-3/Qwen/DeepSeek, and SentencePiece-style
// with byte fallback like Llama-2/Mistral); the normalizers, pre-tokenizers, post-processors and
// decoders those files use. Anything else is refused at load time with a redhare::Error naming
// the file and the component. Offsets, truncation and padding are not implemented: encode()
// returns ids only.
//
// Text is UTF-8. Ill-formed input bytes are replaced by U+FFFD before encoding, the way Python
// decodes bytes with errors="replace", so encode(bytes) equals the reference's
// encode(bytes.decode("utf-8", "replace")).
//
// Unicode tables follow the reference's: character classes as of Unicode 16.0 (Debian 12's ICU,
// which stops at 15.0, plus a generated table of what 15.1 and 16.0 added), and normalization
// that leaves alone the characters the reference's older normalization tables do not know.
//
// A Tokenizer is immutable after loading; encode and decode may be called from many threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace redhare {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class Tokenizer {
 public:
  // Reads tokenizer.json, tokenizer_config.json and special_tokens_map.json (the last two when
  // present) from a model directory.
  static Tokenizer from_dir(const std::filesystem::path& dir);
  // The same from file contents; empty strings stand for absent config files. `origin` names
  // where tokenizer_json came from, for error messages.
  static Tokenizer from_json_strings(std::string_view tokenizer_json,
                                     std::string_view tokenizer_config_json = {},
                                     std::string_view special_tokens_map_json = {},
                                     std::string_view origin = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // With add_special_tokens, the post-processor of tokenizer.json adds BOS/EOS and the like.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids without a token are dropped, as in the reference.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  std::optional<std::string> id_to_token(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Number of distinct ids, added tokens included (the reference's get_vocab_size(True)).
  std::size_t vocab_size() const;
  bool is_special(int32_t id) const;

  // Special ids named by tokenizer_config.json (or special_tokens_map.json).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> pad_id() const;
  std::optional<int32_t> unk_id() const;

  const std::vector<AddedToken>& added_tokens() const;
  // tokenizer_config.json as read (an empty object when absent): chat_template, bos_token...
  const nlohmann::json& config() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace redhare
