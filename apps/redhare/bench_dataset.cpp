// Workloads for `redhare bench`: random prompts of exact token lengths, groups of prompts that
// share a prefix, and prompts read from a JSON-lines file.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <unordered_set>

#include "apps/redhare/bench.h"
#include "core/error.h"

namespace redhare::app::bench {
namespace {

// Pronounceable pseudo-words: tokenizers split them into a few ordinary sub-word tokens, and
// the text survives decode -> encode with (almost) the same token count, unlike random ids.
std::string random_words(std::mt19937_64& rng, int64_t words) {
  static const char* const kOnsets[] = {"b", "c", "d", "f", "g", "h",  "l",  "m", "n",
                                        "p", "r", "s", "t", "v", "st", "tr", "pl"};
  static const char* const kVowels[] = {"a", "e", "i", "o", "u", "ea", "ou"};
  std::uniform_int_distribution<size_t> onset(0, std::size(kOnsets) - 1),
      vowel(0, std::size(kVowels) - 1);
  std::uniform_int_distribution<int> syllables(1, 3);
  std::string s;
  for (int64_t w = 0; w < words; ++w) {
    if (w) s += ' ';
    for (int k = syllables(rng); k > 0; --k) {
      s += kOnsets[onset(rng)];
      s += kVowels[vowel(rng)];
    }
  }
  return s;
}

class Builder {
 public:
  Builder(const DatasetOptions& o, const TokenSource& t) : o_(o), t_(t), rng_(o.seed) {}

  // Generated prompts need a way to make tokens; a file's prompts do not.
  void require_tokens() const {
    const DatasetOptions& o = o_;
    const TokenSource& t = t_;
    if (!o.as_ids && !(t.encode && t.decode))
      fail(
          "text prompts of exact length need a tokenizer (the server's /tokenize and /detokenize, "
          "or --tokenizer)");
    if (o.as_ids && !t.encode && t.vocab_size <= 0)
      fail("token-id prompts need a tokenizer or the vocabulary size");
  }

  // Token ids drawn uniformly from the ids that real text tokenizes to (or from the whole
  // vocabulary without a tokenizer): every prompt differs from the first token on, so no
  // prefix-cache hits flatter the figures.
  std::vector<int32_t> random_ids(int64_t n) {
    if (pool_.empty()) {
      if (t_.encode) {
        std::vector<int32_t> ids = t_.encode(random_words(rng_, 2000));
        std::unordered_set<int32_t> seen(ids.begin(), ids.end());
        pool_.assign(seen.begin(), seen.end());
        std::sort(pool_.begin(), pool_.end());  // the set's order is not reproducible
        if (pool_.empty()) fail("the tokenizer returned no tokens for sample text");
      } else {
        pool_.resize(static_cast<size_t>(t_.vocab_size));
        for (size_t i = 0; i < pool_.size(); ++i) pool_[i] = static_cast<int32_t>(i);
      }
    }
    std::uniform_int_distribution<size_t> pick(0, pool_.size() - 1);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = pool_[pick(rng_)];
    return ids;
  }

  // Text that encodes to exactly n tokens where the tokenizer allows it: words are added until
  // the text is long enough, then its tokens are cut to n and decoded; a cut inside a word can
  // re-merge on encoding, so the cut is adjusted a few times. Returns the final count.
  int64_t exact_text(int64_t n, std::string* text) {
    std::string s = random_words(rng_, std::max<int64_t>(n, 1));
    std::vector<int32_t> ids = t_.encode(s);
    while (static_cast<int64_t>(ids.size()) < n) {
      s += ' ';
      s += random_words(rng_, n - static_cast<int64_t>(ids.size()) + 1);
      ids = t_.encode(s);
    }
    int64_t cut = n;
    for (int attempt = 0; attempt < 8; ++attempt) {
      std::vector<int32_t> head(
          ids.begin(), ids.begin() + std::min<int64_t>(cut, static_cast<int64_t>(ids.size())));
      *text = t_.decode(head);
      const int64_t got = static_cast<int64_t>(t_.encode(*text).size());
      if (got == n) return got;
      cut += n - got;
      if (cut < 1 || cut > static_cast<int64_t>(ids.size())) return got;
    }
    return static_cast<int64_t>(t_.encode(*text).size());
  }

  int64_t draw_len(int64_t base, int64_t min_len) {
    if (o_.range_ratio <= 0) return base;
    const auto lo = std::max<int64_t>(
        min_len,
        static_cast<int64_t>(std::floor(static_cast<double>(base) * (1 - o_.range_ratio))));
    const auto hi = std::max<int64_t>(
        lo, static_cast<int64_t>(std::ceil(static_cast<double>(base) * (1 + o_.range_ratio))));
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  std::vector<BenchPrompt> random() {
    require_tokens();
    std::vector<BenchPrompt> out;
    for (int64_t i = 0; i < o_.num_prompts; ++i) {
      BenchPrompt p;
      const int64_t in = draw_len(o_.input_len, 1);
      p.max_tokens = draw_len(o_.output_len, 1);
      if (o_.as_ids) {
        p.ids = random_ids(in);
        p.use_ids = true;
        p.prompt_len = in;
      } else {
        p.prompt_len = exact_text(in, &p.text);
      }
      out.push_back(std::move(p));
    }
    return out;
  }

  // num_groups prefixes of prefix_len tokens; prompt i is prefix (i mod num_groups) followed by
  // its own input_len-token suffix, so a prefix cache can reuse all but the first of each group.
  std::vector<BenchPrompt> shared_prefix() {
    if (o_.num_groups < 1) fail("--num-groups must be at least 1");
    if (o_.prefix_len < 1) fail("--prefix-len must be at least 1");
    require_tokens();
    std::vector<std::vector<int32_t>> id_prefixes;
    std::vector<std::string> text_prefixes;
    for (int64_t g = 0; g < o_.num_groups; ++g) {
      if (o_.as_ids) {
        id_prefixes.push_back(random_ids(o_.prefix_len));
      } else {
        text_prefixes.emplace_back();
        exact_text(o_.prefix_len, &text_prefixes.back());
      }
    }
    std::vector<BenchPrompt> out;
    for (int64_t i = 0; i < o_.num_prompts; ++i) {
      const auto g = static_cast<size_t>(i % o_.num_groups);
      BenchPrompt p;
      const int64_t in = draw_len(o_.input_len, 1);
      p.max_tokens = draw_len(o_.output_len, 1);
      if (o_.as_ids) {
        p.ids = id_prefixes[g];
        std::vector<int32_t> suffix = random_ids(in);
        p.ids.insert(p.ids.end(), suffix.begin(), suffix.end());
        p.use_ids = true;
        p.prompt_len = static_cast<int64_t>(p.ids.size());
      } else {
        std::string suffix;
        exact_text(in, &suffix);
        p.text = text_prefixes[g];
        p.text += ' ';
        p.text += suffix;
        // The join may merge or split one token; count what will actually be sent.
        p.prompt_len = static_cast<int64_t>(t_.encode(p.text).size());
      }
      out.push_back(std::move(p));
    }
    return out;
  }

  std::vector<BenchPrompt> jsonl() {
    std::ifstream in(o_.path);
    if (o_.path.empty()) fail("--dataset jsonl needs --dataset-path FILE");
    if (!in) fail(o_.path, ": cannot open");
    std::vector<BenchPrompt> all;
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) fail(o_.path, ":", n, ": not a JSON object");
      BenchPrompt p;
      p.max_tokens = o_.output_len;
      if (j.contains("max_tokens")) {
        if (!j["max_tokens"].is_number_integer() || j["max_tokens"].get<int64_t>() < 1)
          fail(o_.path, ":", n, ": max_tokens must be a positive integer");
        p.max_tokens = j["max_tokens"].get<int64_t>();
      }
      if (j.contains("prompt") && j["prompt"].is_string()) {
        p.text = j["prompt"].get<std::string>();
        if (t_.encode) p.prompt_len = static_cast<int64_t>(t_.encode(p.text).size());
      } else if (j.contains("messages") && j["messages"].is_array() && !j["messages"].empty()) {
        if (!o_.chat) fail(o_.path, ":", n, ": \"messages\" needs --endpoint /v1/chat/completions");
        p.messages = j["messages"];
      } else {
        fail(o_.path, ":", n, ": expected {\"prompt\": \"...\"} or {\"messages\": [...]}");
      }
      all.push_back(std::move(p));
    }
    if (all.empty()) fail(o_.path, ": no prompts");
    // --num-prompts 0 takes the file as it is; more prompts than lines go round the file again.
    if (o_.num_prompts <= 0) return all;
    std::vector<BenchPrompt> out;
    for (int64_t i = 0; i < o_.num_prompts; ++i)
      out.push_back(all[static_cast<size_t>(i) % all.size()]);
    return out;
  }

 private:
  const DatasetOptions& o_;
  const TokenSource& t_;
  std::mt19937_64 rng_;
  std::vector<int32_t> pool_;
};

}  // namespace

std::vector<BenchPrompt> make_dataset(const DatasetOptions& o, const TokenSource& tokens) {
  if (o.kind != "jsonl") {
    if (o.num_prompts < 1) fail("--num-prompts must be at least 1");
    if (o.input_len < 1) fail("--input-len must be at least 1");
    if (o.output_len < 1) fail("--output-len must be at least 1");
    if (!(o.range_ratio >= 0 && o.range_ratio < 1)) fail("--range-ratio must be in [0, 1)");
  }
  DatasetOptions opts = o;
  if (opts.chat) opts.as_ids = false;  // a chat message is text
  if (o.kind == "jsonl") return Builder(opts, tokens).jsonl();
  Builder b(opts, tokens);
  if (o.kind == "random") return b.random();
  if (o.kind == "shared-prefix") return b.shared_prefix();
  fail("--dataset '", o.kind, "' is not one of random, shared-prefix, jsonl");
}

}  // namespace redhare::app::bench
