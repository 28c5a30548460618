// Building a Tokenizer from tokenizer.json and its config files. The files are untrusted: every
// field is checked before use, and every failure names the file and the component.
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"

namespace redhare {

using nlohmann::json;
namespace t = text;

namespace {

// Where in which file we are, for error messages: "tokenizer.json: pre_tokenizer.pretokenizers[1]".
struct Ctx {
  std::string file;
  std::string path;
  Ctx at(const std::string& key) const { return {file, path.empty() ? key : path + "." + key}; }
  Ctx at(std::size_t index) const { return {file, path + "[" + std::to_string(index) + "]"}; }
  template <typename... Args>
  [[noreturn]] void fail(Args&&... args) const {
    redhare::fail(file, ": ", path.empty() ? "" : path + ": ", std::forward<Args>(args)...);
  }
};

const json& need(const json& obj, const char* key, const Ctx& ctx) {
  if (!obj.is_object()) ctx.fail("expected an object");
  const auto it = obj.find(key);
  if (it == obj.end()) ctx.fail("missing field '", key, "'");
  return *it;
}

std::string get_string(const json& obj, const char* key, const Ctx& ctx) {
  const json& v = need(obj, key, ctx);
  if (!v.is_string()) ctx.at(key).fail("expected a string");
  return v.get<std::string>();
}

bool get_bool(const json& obj, const char* key, bool fallback, const Ctx& ctx) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) ctx.at(key).fail("expected true or false");
  return it->get<bool>();
}

int64_t get_int(const json& v, const Ctx& ctx, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) ctx.fail("expected an integer");
  const int64_t x =
      v.is_number_unsigned()
          ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), uint64_t{1} << 62))
          : v.get<int64_t>();
  if (x < lo || x > hi) ctx.fail("value ", x, " is out of range [", lo, ", ", hi, "]");
  return x;
}

constexpr int64_t kMaxId = (int64_t{1} << 24) - 1;

const std::string& type_of(const json& obj, const Ctx& ctx) {
  const json& v = need(obj, "type", ctx);
  if (!v.is_string()) ctx.at("type").fail("expected a string");
  return v.get_ref<const std::string&>();
}

const json& array_field(const json& obj, const char* key, const Ctx& ctx) {
  const json& v = need(obj, key, ctx);
  if (!v.is_array()) ctx.at(key).fail("expected an array");
  return v;
}

// One Unicode character given as a string (Metaspace's replacement, Strip's content).
char32_t single_char(const json& obj, const char* key, const Ctx& ctx) {
  const std::string s = get_string(obj, key, ctx);
  std::size_t i = 0;
  if (s.empty() || (i = t::utf8_len(static_cast<unsigned char>(s[0]))) != s.size()) {
    ctx.at(key).fail("expected exactly one character, got '", s, "'");
  }
  i = 0;
  return t::utf8_next(s, i);
}

t::Pattern pattern_of(const json& obj, const Ctx& ctx) {
  const json& p = need(obj, "pattern", ctx);
  const Ctx pc = ctx.at("pattern");
  if (!p.is_object() || p.size() != 1) pc.fail("expected {\"String\": ...} or {\"Regex\": ...}");
  if (p.contains("String")) return t::Pattern::literal(get_string(p, "String", pc));
  if (p.contains("Regex")) {
    try {
      return t::Pattern::regex(get_string(p, "Regex", pc));
    } catch (const Error& e) {
      pc.fail(e.what());
    }
  }
  pc.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

t::SplitBehavior behavior_of(const json& obj, const Ctx& ctx, t::SplitBehavior fallback) {
  if (!obj.contains("behavior")) return fallback;
  const std::string b = get_string(obj, "behavior", ctx);
  if (b == "Removed") return t::SplitBehavior::kRemoved;
  if (b == "Isolated") return t::SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return t::SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return t::SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return t::SplitBehavior::kContiguous;
  ctx.at("behavior").fail("unknown split behavior '", b, "'");
}

// Metaspace's scheme: newer files say prepend_scheme, older ones add_prefix_space.
t::PrependScheme scheme_of(const json& obj, const Ctx& ctx) {
  if (obj.contains("prepend_scheme") && !obj["prepend_scheme"].is_null()) {
    const std::string s = get_string(obj, "prepend_scheme", ctx);
    if (s == "always") return t::PrependScheme::kAlways;
    if (s == "first") return t::PrependScheme::kFirst;
    if (s == "never") return t::PrependScheme::kNever;
    ctx.at("prepend_scheme").fail("unknown prepend scheme '", s, "'");
  }
  return get_bool(obj, "add_prefix_space", true, ctx) ? t::PrependScheme::kAlways
                                                      : t::PrependScheme::kNever;
}

std::unique_ptr<t::Normalizer> load_normalizer(const json& j, const Ctx& ctx) {
  const std::string& type = type_of(j, ctx);
  if (type == "NFC") return t::make_unicode_normalizer(t::NormalForm::kNFC);
  if (type == "NFD") return t::make_unicode_normalizer(t::NormalForm::kNFD);
  if (type == "NFKC") return t::make_unicode_normalizer(t::NormalForm::kNFKC);
  if (type == "NFKD") return t::make_unicode_normalizer(t::NormalForm::kNFKD);
  if (type == "Lowercase") return t::make_lowercase_normalizer();
  if (type == "Replace") {
    return t::make_replace_normalizer(pattern_of(j, ctx), get_string(j, "content", ctx));
  }
  if (type == "Prepend") return t::make_prepend_normalizer(get_string(j, "prepend", ctx));
  if (type == "Strip") {
    return t::make_strip_normalizer(get_bool(j, "strip_left", true, ctx),
                                    get_bool(j, "strip_right", true, ctx));
  }
  if (type == "Sequence") {
    const json& arr = array_field(j, "normalizers", ctx);
    std::vector<std::unique_ptr<t::Normalizer>> steps;
    for (std::size_t k = 0; k < arr.size(); ++k) {
      steps.push_back(load_normalizer(arr[k], ctx.at("normalizers").at(k)));
    }
    return t::make_sequence_normalizer(std::move(steps));
  }
  ctx.fail("unsupported normalizer type '", type, "'");
}

std::unique_ptr<t::PreTokenizer> load_pre_tokenizer(const json& j, const Ctx& ctx) {
  const std::string& type = type_of(j, ctx);
  if (type == "ByteLevel") {
    return t::make_byte_level_pretokenizer(get_bool(j, "add_prefix_space", true, ctx),
                                           get_bool(j, "use_regex", true, ctx));
  }
  if (type == "Split") {
    return t::make_split_pretokenizer(pattern_of(j, ctx),
                                      behavior_of(j, ctx, t::SplitBehavior::kIsolated),
                                      get_bool(j, "invert", false, ctx));
  }
  if (type == "Metaspace") {
    const char32_t c = single_char(j, "replacement", ctx);
    std::string rep;
    t::utf8_append(rep, c);
    return t::make_metaspace_pretokenizer(rep, scheme_of(j, ctx), get_bool(j, "split", true, ctx));
  }
  if (type == "Digits") {
    return t::make_digits_pretokenizer(get_bool(j, "individual_digits", false, ctx));
  }
  if (type == "Whitespace") return t::make_whitespace_pretokenizer();
  if (type == "WhitespaceSplit") return t::make_whitespace_split_pretokenizer();
  if (type == "Punctuation") {
    return t::make_punctuation_pretokenizer(behavior_of(j, ctx, t::SplitBehavior::kIsolated));
  }
  if (type == "Sequence") {
    const json& arr = array_field(j, "pretokenizers", ctx);
    std::vector<std::unique_ptr<t::PreTokenizer>> steps;
    for (std::size_t k = 0; k < arr.size(); ++k) {
      steps.push_back(load_pre_tokenizer(arr[k], ctx.at("pretokenizers").at(k)));
    }
    return t::make_sequence_pretokenizer(std::move(steps));
  }
  ctx.fail("unsupported pre-tokenizer type '", type, "'");
}

std::optional<std::string> optional_string(const json& obj, const char* key, const Ctx& ctx) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) ctx.at(key).fail("expected a string or null");
  return it->get<std::string>();
}

std::unique_ptr<t::BpeModel> load_model(const json& j, const Ctx& ctx) {
  if (!j.is_object()) ctx.fail("expected an object");
  // Files written by old versions leave out the type of a BPE model.
  const std::string type = j.contains("type") ? type_of(j, ctx) : std::string("BPE");
  if (type != "BPE") ctx.fail("unsupported model type '", type, "' (only BPE is implemented)");
  if (j.contains("dropout") && !j["dropout"].is_null()) {
    const json& d = j["dropout"];
    if (!d.is_number() || d.get<double>() != 0.0) {
      ctx.at("dropout").fail("BPE dropout is random and unsupported for inference");
    }
  }
  const json& vocab_j = need(j, "vocab", ctx);
  if (!vocab_j.is_object()) ctx.at("vocab").fail("expected an object of token -> id");
  t::TokenMap vocab;
  vocab.reserve(vocab_j.size());
  for (auto it = vocab_j.begin(); it != vocab_j.end(); ++it) {
    const json& id = it.value();
    // The common case is checked inline: building a context string per entry costs more than
    // the rest of the load.
    if (id.is_number_unsigned() && id.get<uint64_t>() <= static_cast<uint64_t>(kMaxId)) {
      vocab.emplace(it.key(), static_cast<int32_t>(id.get<uint64_t>()));
    } else {
      vocab.emplace(it.key(),
                    static_cast<int32_t>(get_int(id, ctx.at("vocab").at(it.key()), 0, kMaxId)));
    }
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (j.contains("merges") && !j["merges"].is_null()) {
    const json& arr = array_field(j, "merges", ctx);
    merges.reserve(arr.size());
    for (std::size_t k = 0; k < arr.size(); ++k) {
      const json& m = arr[k];
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const std::size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          ctx.at("merges").at(k).fail("expected \"left right\" with exactly one space");
        }
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        ctx.at("merges").at(k).fail("expected a string or a pair of strings");
      }
    }
  }
  t::BpeOptions opt;
  opt.unk_token = optional_string(j, "unk_token", ctx);
  opt.continuing_subword_prefix = optional_string(j, "continuing_subword_prefix", ctx).value_or("");
  opt.end_of_word_suffix = optional_string(j, "end_of_word_suffix", ctx).value_or("");
  opt.fuse_unk = get_bool(j, "fuse_unk", false, ctx);
  opt.byte_fallback = get_bool(j, "byte_fallback", false, ctx);
  opt.ignore_merges = get_bool(j, "ignore_merges", false, ctx);
  try {
    return std::make_unique<t::BpeModel>(std::move(vocab), merges, std::move(opt));
  } catch (const Error& e) {
    ctx.fail(e.what());
  }
}

std::vector<int32_t> id_list(const json& arr, const Ctx& ctx) {
  if (!arr.is_array()) ctx.fail("expected an array of ids");
  std::vector<int32_t> ids;
  for (std::size_t k = 0; k < arr.size(); ++k) {
    ids.push_back(static_cast<int32_t>(get_int(arr[k], ctx.at(k), 0, kMaxId)));
  }
  return ids;
}

std::unique_ptr<t::PostProcessor> load_post_processor(const json& j, const Ctx& ctx) {
  const std::string& type = type_of(j, ctx);
  if (type == "ByteLevel") return t::make_sequence_postprocessor({});  // offsets only
  if (type == "TemplateProcessing") {
    const json& single = array_field(j, "single", ctx);
    const json& specials = need(j, "special_tokens", ctx);
    std::vector<t::TemplatePart> parts;
    for (std::size_t k = 0; k < single.size(); ++k) {
      const Ctx pc = ctx.at("single").at(k);
      const json& p = single[k];
      if (p.is_object() && p.contains("Sequence")) {
        parts.push_back({true, {}});
      } else if (p.is_object() && p.contains("SpecialToken")) {
        const std::string name = get_string(p["SpecialToken"], "id", pc.at("SpecialToken"));
        const Ctx sc = ctx.at("special_tokens").at(name);
        if (!specials.is_object() || !specials.contains(name)) sc.fail("not defined");
        parts.push_back({false, id_list(need(specials[name], "ids", sc), sc.at("ids"))});
      } else {
        pc.fail("expected a Sequence or SpecialToken entry");
      }
    }
    return t::make_template_postprocessor(std::move(parts));
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto id_of = [&](const char* key) {
      const json& v = need(j, key, ctx);
      if (!v.is_array() || v.size() != 2) ctx.at(key).fail("expected [token, id]");
      return static_cast<int32_t>(get_int(v[1], ctx.at(key).at(1), 0, kMaxId));
    };
    std::vector<t::TemplatePart> parts{
        {false, {id_of("cls")}}, {true, {}}, {false, {id_of("sep")}}};
    return t::make_template_postprocessor(std::move(parts));
  }
  if (type == "Sequence") {
    const json& arr = array_field(j, "processors", ctx);
    std::vector<std::unique_ptr<t::PostProcessor>> steps;
    for (std::size_t k = 0; k < arr.size(); ++k) {
      steps.push_back(load_post_processor(arr[k], ctx.at("processors").at(k)));
    }
    return t::make_sequence_postprocessor(std::move(steps));
  }
  ctx.fail("unsupported post-processor type '", type, "'");
}

std::unique_ptr<t::Decoder> load_decoder(const json& j, const Ctx& ctx) {
  const std::string& type = type_of(j, ctx);
  if (type == "ByteLevel") return t::make_byte_level_decoder();
  if (type == "Metaspace") {
    std::string rep;
    t::utf8_append(rep, single_char(j, "replacement", ctx));
    return t::make_metaspace_decoder(rep, scheme_of(j, ctx));
  }
  if (type == "ByteFallback") return t::make_byte_fallback_decoder();
  if (type == "Fuse") return t::make_fuse_decoder();
  if (type == "Strip") {
    return t::make_strip_decoder(
        single_char(j, "content", ctx),
        static_cast<std::size_t>(get_int(need(j, "start", ctx), ctx.at("start"), 0, 1 << 20)),
        static_cast<std::size_t>(get_int(need(j, "stop", ctx), ctx.at("stop"), 0, 1 << 20)));
  }
  if (type == "Replace") {
    return t::make_replace_decoder(pattern_of(j, ctx), get_string(j, "content", ctx));
  }
  if (type == "BPEDecoder") {
    return t::make_bpe_suffix_decoder(optional_string(j, "suffix", ctx).value_or("</w>"));
  }
  if (type == "Sequence") {
    const json& arr = array_field(j, "decoders", ctx);
    std::vector<std::unique_ptr<t::Decoder>> steps;
    for (std::size_t k = 0; k < arr.size(); ++k) {
      steps.push_back(load_decoder(arr[k], ctx.at("decoders").at(k)));
    }
    return t::make_sequence_decoder(std::move(steps));
  }
  ctx.fail("unsupported decoder type '", type, "'");
}

std::vector<AddedToken> load_added_tokens(const json& root, const Ctx& ctx) {
  std::vector<AddedToken> out;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return out;
  const json& arr = array_field(root, "added_tokens", ctx);
  for (std::size_t k = 0; k < arr.size(); ++k) {
    const Ctx tc = ctx.at("added_tokens").at(k);
    const json& a = arr[k];
    AddedToken tok;
    tok.id = static_cast<int32_t>(get_int(need(a, "id", tc), tc.at("id"), 0, kMaxId));
    tok.content = get_string(a, "content", tc);
    tok.special = get_bool(a, "special", false, tc);
    tok.single_word = get_bool(a, "single_word", false, tc);
    tok.lstrip = get_bool(a, "lstrip", false, tc);
    tok.rstrip = get_bool(a, "rstrip", false, tc);
    tok.normalized = get_bool(a, "normalized", !tok.special, tc);
    out.push_back(std::move(tok));
  }
  return out;
}

// A special token in tokenizer_config.json or special_tokens_map.json: a string, or an
// AddedToken object with "content".
std::optional<std::string> special_token_text(const json& cfg, const char* key) {
  if (!cfg.is_object()) return std::nullopt;
  const auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    const auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

json parse_json(std::string_view text, const std::string& file) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(file, ": not valid JSON");
  if (!j.is_object()) fail(file, ": expected a JSON object at the top level");
  return j;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(p.string(), ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Tokenizer Tokenizer::from_json_strings(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json,
                                       std::string_view special_tokens_map_json,
                                       std::string_view origin) {
  const std::string file(origin);
  auto impl = std::make_unique<Impl>();
  try {
    const json root = parse_json(tokenizer_json, file);
    const Ctx ctx{file, ""};
    impl->model = load_model(need(root, "model", ctx), ctx.at("model"));
    auto optional_part = [&](const char* key) -> const json* {
      const auto it = root.find(key);
      return it == root.end() || it->is_null() ? nullptr : &*it;
    };
    if (const json* n = optional_part("normalizer"))
      impl->normalizer = load_normalizer(*n, ctx.at("normalizer"));
    if (const json* p = optional_part("pre_tokenizer"))
      impl->pre_tokenizer = load_pre_tokenizer(*p, ctx.at("pre_tokenizer"));
    if (const json* p = optional_part("post_processor"))
      impl->post_processor = load_post_processor(*p, ctx.at("post_processor"));
    if (const json* d = optional_part("decoder"))
      impl->decoder = load_decoder(*d, ctx.at("decoder"));
    impl->added = load_added_tokens(root, ctx);
  } catch (const json::exception& e) {
    fail(file, ": ", e.what());
  }

  for (std::size_t k = 0; k < impl->added.size(); ++k) {
    const AddedToken& a = impl->added[k];
    impl->added_by_id.emplace(a.id, k);
    impl->added_by_content.emplace(a.content, a.id);
    if (a.special) impl->special_contents.insert(a.content);
    impl->added_shown.push_back(
        a.normalized && impl->normalizer ? impl->normalizer->apply(a.content) : a.content);
  }
  impl->raw_matcher = t::AddedTokenMatcher(impl->added, false, nullptr);
  impl->normalized_matcher = t::AddedTokenMatcher(impl->added, true, impl->normalizer.get());
  impl->vocab_size = impl->model->vocab().size();
  for (const auto& [content, id] : impl->added_by_content) {
    if (!impl->model->vocab().count(content)) ++impl->vocab_size;
  }

  const std::string config_file = file.substr(0, file.rfind('/') + 1);
  if (!tokenizer_config_json.empty()) {
    impl->config = parse_json(tokenizer_config_json, config_file + "tokenizer_config.json");
  }
  json special_map = json::object();
  if (!special_tokens_map_json.empty()) {
    special_map = parse_json(special_tokens_map_json, config_file + "special_tokens_map.json");
  }
  Tokenizer tok(std::move(impl));
  auto special_id = [&](const char* key) -> std::optional<int32_t> {
    auto text = special_token_text(tok.impl_->config, key);
    if (!text) text = special_token_text(special_map, key);
    if (!text) return std::nullopt;
    return tok.token_to_id(*text);
  };
  tok.impl_->bos = special_id("bos_token");
  tok.impl_->eos = special_id("eos_token");
  tok.impl_->pad = special_id("pad_token");
  tok.impl_->unk = special_id("unk_token");
  return tok;
}

Tokenizer Tokenizer::from_dir(const std::filesystem::path& dir) {
  const auto tj = dir / "tokenizer.json";
  if (!std::filesystem::exists(tj))
    fail(tj.string(), ": not found (redhare reads Hugging Face tokenizer.json)");
  const auto cfg = dir / "tokenizer_config.json";
  const auto stm = dir / "special_tokens_map.json";
  const std::string cfg_text = std::filesystem::exists(cfg) ? read_file(cfg) : std::string();
  const std::string stm_text = std::filesystem::exists(stm) ? read_file(stm) : std::string();
  return from_json_strings(read_file(tj), cfg_text, stm_text, tj.string());
}

}  // namespace redhare
