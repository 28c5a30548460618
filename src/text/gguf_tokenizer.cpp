#include "text/gguf_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace redhare {
namespace {

using json = nlohmann::ordered_json;

// The pre-tokenizers of the Hugging Face tokenizers behind llama.cpp's tokenizer.ggml.pre names.
const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split(const char* pattern) {
  return {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

json pre_tokenizer_for(const std::string& pre, const std::string& file) {
  if (pre == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}};
  if (pre == "gpt2" || pre == "default" || pre.empty()) return byte_level(true);
  if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe")
    return {{"type", "Sequence"}, {"pretokenizers", json::array({split(kLlama3Pattern), byte_level(false)})}};
  if (pre == "qwen2")
    return {{"type", "Sequence"}, {"pretokenizers", json::array({split(kQwen2Pattern), byte_level(false)})}};
  fail(file, ": GGUF pre-tokenizer '", pre, "' is not supported (supported: smollm, gpt2, default, llama-bpe, qwen2)");
}

// Splits `s` after its first `chars` UTF-8 characters (Python's s[:i] / s[i:]).
size_t utf8_prefix_bytes(std::string_view s, size_t chars) {
  size_t i = 0;
  while (chars > 0 && i < s.size()) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
    --chars;
  }
  return i;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// A SentencePiece vocabulary with scores (Llama-2, Mistral GGUFs) as the Hugging Face BPE the Hub
// ships for those models: every split of a piece into two vocabulary pieces is a merge, ranked by
// the merged piece's score (ties: piece order, then the halves' ids); Prepend + Replace("▁")
// normalizers, byte fallback, fused unknown tokens.
GgufTokenizerJson spm_tokenizer_json(const GgufFile& f, const std::vector<std::string_view>& tokens,
                                     const std::vector<int32_t>& types) {
  const std::string& file = f.name();
  std::vector<float> scores = f.get_array_of_f32("tokenizer.ggml.scores");
  if (scores.size() != tokens.size())
    fail(file, ": tokenizer.ggml.scores has ", scores.size(), " entries for ", tokens.size(), " tokens");
  std::unordered_map<std::string_view, size_t> id;
  for (size_t i = 0; i < tokens.size(); ++i) id.emplace(tokens[i], i);
  struct Merge {
    std::string_view left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (size_t p = 0; p < tokens.size(); ++p) {
    std::string_view piece = tokens[p];
    const size_t n = utf8_length(piece);
    std::vector<Merge> local;
    for (size_t c = 1; c < n; ++c) {
      size_t b = utf8_prefix_bytes(piece, c);
      std::string_view l = piece.substr(0, b), r = piece.substr(b);
      if (id.count(l) && id.count(r)) local.push_back({l, r, scores[p]});
    }
    std::sort(local.begin(), local.end(), [&](const Merge& a, const Merge& b) {
      return id[a.left] != id[b.left] ? id[a.left] < id[b.left] : id[a.right] < id[b.right];
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });

  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[std::string(tokens[i])] = i;
  json merge_list = json::array();
  for (const Merge& m : merges) merge_list.push_back(json::array({std::string(m.left), std::string(m.right)}));
  json added = json::array();
  for (size_t i = 0; i < types.size(); ++i)
    if (types[i] == 2 || types[i] == 3 || types[i] == 4)  // unknown, control, user-defined
      added.push_back({{"id", i}, {"content", std::string(tokens[i])}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", types[i] == 4}, {"special", types[i] != 4}});
  auto token_of = [&](const char* key) -> json {
    if (!f.contains(key)) return nullptr;
    uint32_t t = f.get_u32(key);
    if (t >= tokens.size()) fail(file, ": ", key, " ", t, " is outside the vocabulary");
    return std::string(tokens[t]);
  };
  const json unk = token_of("tokenizer.ggml.unknown_token_id");
  const json bos = token_of("tokenizer.ggml.bos_token_id");
  const json eos = token_of("tokenizer.ggml.eos_token_id");
  const bool add_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", true) && !bos.is_null();
  const bool add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false) && !eos.is_null();
  json normalizers = json::array();
  if (add_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}});
  json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}});
  if (add_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](const json& t, int type_id) { return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}}; };
  auto seq = [&](const char* name, int type_id) { return json{{"Sequence", {{"id", name}, {"type_id", type_id}}}}; };
  if (add_bos) {
    single.push_back(special(bos, 0));
    pair.push_back(special(bos, 0));
    specials[bos.get<std::string>()] = {{"id", bos}, {"ids", json::array({f.get_u32("tokenizer.ggml.bos_token_id")})},
                                        {"tokens", json::array({bos})}};
  }
  single.push_back(seq("A", 0));
  pair.push_back(seq("A", 0));
  if (add_eos) {
    single.push_back(special(eos, 0));
    pair.push_back(special(eos, 0));
    specials[eos.get<std::string>()] = {{"id", eos}, {"ids", json::array({f.get_u32("tokenizer.ggml.eos_token_id")})},
                                        {"tokens", json::array({eos})}};
  }
  if (add_bos) pair.push_back(special(bos, 1));
  pair.push_back(seq("B", 1));
  if (add_eos) pair.push_back(special(eos, 1));
  json tj = {{"version", "1.0"},
             {"truncation", nullptr},
             {"padding", nullptr},
             {"added_tokens", added},
             {"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
             {"pre_tokenizer", nullptr},
             {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}}},
             {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
             {"model",
              {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk}, {"continuing_subword_prefix", nullptr},
               {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"ignore_merges", false},
               {"vocab", vocab}, {"merges", merge_list}}}};
  json cfg = {{"bos_token", bos}, {"eos_token", eos}, {"unk_token", unk}, {"add_bos_token", add_bos},
              {"add_eos_token", add_eos}};
  if (f.contains("tokenizer.ggml.padding_token_id")) cfg["pad_token"] = token_of("tokenizer.ggml.padding_token_id");
  if (f.contains("tokenizer.chat_template")) cfg["chat_template"] = f.get_string("tokenizer.chat_template");
  std::string text = tj.dump();
  return {text, cfg.dump()};
}

}  // namespace

GgufTokenizerJson gguf_tokenizer_json(const GgufFile& f) {
  const std::string& file = f.name();
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  if (model == "llama") {
    std::vector<std::string_view> tokens = f.get_array_of_strings("tokenizer.ggml.tokens");
    std::vector<int32_t> types;
    if (f.contains("tokenizer.ggml.token_type")) types = f.get_array_of_i32("tokenizer.ggml.token_type");
    if (!types.empty() && types.size() != tokens.size())
      fail(file, ": tokenizer.ggml.token_type has ", types.size(), " entries for ", tokens.size(), " tokens");
    return spm_tokenizer_json(f, tokens, types);
  }
  if (model != "gpt2")
    fail(file, ": GGUF tokenizer model '", model, "' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)");
  std::vector<std::string_view> tokens = f.get_array_of_strings("tokenizer.ggml.tokens");
  std::vector<std::string_view> merges = f.get_array_of_strings("tokenizer.ggml.merges");
  std::vector<int32_t> types;
  if (f.contains("tokenizer.ggml.token_type")) types = f.get_array_of_i32("tokenizer.ggml.token_type");
  if (!types.empty() && types.size() != tokens.size())
    fail(file, ": tokenizer.ggml.token_type has ", types.size(), " entries for ", tokens.size(), " tokens");

  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[std::string(tokens[i])] = i;
  if (vocab.size() != tokens.size()) fail(file, ": tokenizer.ggml.tokens holds duplicate tokens");
  json merge_list = json::array();
  for (std::string_view m : merges) {
    size_t sp = m.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == m.size())
      fail(file, ": tokenizer.ggml.merges entry '", m, "' is not 'left right'");
    merge_list.push_back(json::array({std::string(m.substr(0, sp)), std::string(m.substr(sp + 1))}));
  }
  // Control tokens (type 3) are the special added tokens; user-defined ones (4) are added but
  // not special.
  json added = json::array();
  for (size_t i = 0; i < types.size(); ++i)
    if (types[i] == 3 || types[i] == 4)
      added.push_back({{"id", i}, {"content", std::string(tokens[i])}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", types[i] == 4}, {"special", types[i] == 3}});

  json tj = {{"version", "1.0"},
             {"truncation", nullptr},
             {"padding", nullptr},
             {"added_tokens", added},
             {"normalizer", nullptr},
             {"pre_tokenizer", pre_tokenizer_for(f.get_string("tokenizer.ggml.pre", ""), file)},
             {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
             {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
             {"model",
              {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
               {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
               {"vocab", vocab}, {"merges", merge_list}}}};
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", false);
  json cfg = json::object();
  auto token_of = [&](const char* key) -> json {
    if (!f.contains(key)) return nullptr;
    uint32_t id = f.get_u32(key);
    if (id >= tokens.size()) fail(file, ": ", key, " ", id, " is outside the vocabulary");
    return std::string(tokens[id]);
  };
  cfg["bos_token"] = token_of("tokenizer.ggml.bos_token_id");
  cfg["eos_token"] = token_of("tokenizer.ggml.eos_token_id");
  cfg["pad_token"] = token_of("tokenizer.ggml.padding_token_id");
  cfg["unk_token"] = token_of("tokenizer.ggml.unknown_token_id");
  cfg["add_bos_token"] = add_bos;
  if (add_bos && !cfg["bos_token"].is_null()) {
    // As Hugging Face writes it for BPE models that prepend BOS.
    std::string bos = cfg["bos_token"].get<std::string>();
    uint32_t id = f.get_u32("tokenizer.ggml.bos_token_id");
    tj["post_processor"] = {{"type", "TemplateProcessing"},
                            {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                            {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                                  {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                                                  {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
                            {"special_tokens", {{bos, {{"id", bos}, {"ids", json::array({id})}, {"tokens", json::array({bos})}}}}}};
  }
  if (f.contains("tokenizer.chat_template")) cfg["chat_template"] = f.get_string("tokenizer.chat_template");
  return {tj.dump(), cfg.dump()};
}

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  GgufTokenizerJson j = gguf_tokenizer_json(f);
  return Tokenizer::from_json_strings(j.tokenizer_json, j.tokenizer_config_json, {}, f.name() + " (tokenizer.ggml.*)");
}

}  // namespace redhare
