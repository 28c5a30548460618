#include "text/tokenizer_bpe.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "text/unicode.h"

namespace redhare::text {

namespace {

// Largest id accepted from a file: ids index dense tables, so a huge one would be a huge table.
constexpr int32_t kMaxTokenId = 1 << 24;

}  // namespace

BpeModel::BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  for (const auto& [token, id] : vocab_) {
    if (id < 0 || id >= kMaxTokenId)
      fail("vocabulary id ", id, " of token '", token, "' is out of range");
    if (static_cast<std::size_t>(id) >= by_id_.size()) by_id_.resize(id + 1, nullptr);
    // Two tokens with one id: the reference keeps whichever its hash map yields; keep the first.
    if (!by_id_[id]) by_id_[id] = &token;
  }
  const std::size_t prefix_len = options_.continuing_subword_prefix.size();
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end() || ib == vocab_.end()) {
      fail("merge ", rank, " ('", a, "' '", b, "') names a token missing from the vocabulary");
    }
    if (b.size() < prefix_len ||
        b.compare(0, prefix_len, options_.continuing_subword_prefix) != 0) {
      if (prefix_len > 0)
        fail("merge ", rank, " ('", a, "' '", b, "'): right side lacks the subword prefix");
    }
    const std::string merged = a + b.substr(std::min(prefix_len, b.size()));
    const auto im = vocab_.find(merged);
    if (im == vocab_.end()) {
      fail("merge ", rank, " ('", a, "' '", b, "') makes '", merged,
           "', which is not in the vocabulary");
    }
    // A repeated pair takes its last rank, as the reference's map built from the list does.
    merges_[pair_key(ia->second, ib->second)] = Merge{static_cast<int32_t>(rank), im->second};
  }
  if (options_.unk_token) {
    if (auto it = vocab_.find(*options_.unk_token); it != vocab_.end()) unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= by_id_.size()) return nullptr;
  return by_id_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t mark = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) {
      cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + mark, out.end()));
    }
  }
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::priority_queue pops the largest, so "larger" here means lower rank, then leftmost.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1});
  };

  // Initial symbols: one per character, with the subword prefix/suffix rules, byte fallback and
  // unknown-token handling of the reference.
  int32_t pending_unk = -1;  // an unknown-token run not yet added
  std::string piece;
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t start = i;
    i += utf8_len(static_cast<unsigned char>(word[i]));
    i = std::min(i, word.size());
    piece.clear();
    if (start > 0) piece += options_.continuing_subword_prefix;
    piece.append(word.substr(start, i - start));
    if (i == word.size()) piece += options_.end_of_word_suffix;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char ch : piece) all = all && byte_ids_[static_cast<unsigned char>(ch)] >= 0;
      if (all) {
        for (char ch : piece) add(byte_ids_[static_cast<unsigned char>(ch)]);
        continue;
      }
    }
    if (options_.unk_token) {
      if (!unk_id_) fail("unknown token '", *options_.unk_token, "' is not in the vocabulary");
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  auto push_pair = [&](int32_t pos) {
    const Symbol& s = symbols[pos];
    if (s.next < 0) return;
    const auto it = merges_.find(pair_key(s.id, symbols[s.next].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push_pair(pos);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale candidate: one side has merged since it was queued.
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[pos].next) out.push_back(symbols[pos].id);
}

}  // namespace redhare::text
