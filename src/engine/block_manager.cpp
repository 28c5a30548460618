#include "engine/block_manager.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace redhare {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size, bool enable_prefix_cache)
    : block_size_(block_size), prefix_cache_(enable_prefix_cache) {
  RH_CHECK(num_blocks > 0 && block_size > 0, "block manager needs blocks");
  blocks_.resize(static_cast<size_t>(num_blocks));
  // Hand out low block ids first: allocate() pops from the back.
  for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

uint64_t BlockManager::chain_hash(uint64_t parent, const int32_t* tokens, int64_t n) {
  // 64-bit mix of the parent hash and each token (splitmix-style finalizer per step).
  uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n; ++i) {
    h ^= static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
  }
  return h;
}

void BlockManager::acquire(int32_t b) {
  Block& blk = blocks_[static_cast<size_t>(b)];
  if (blk.refs == 0 && blk.hashed) evictable_.erase(blk.lru);
  ++blk.refs;
}

std::optional<int32_t> BlockManager::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    b = evictable_.front();
    evictable_.pop_front();
    Block& blk = blocks_[static_cast<size_t>(b)];
    by_hash_.erase(blk.hash);
    blk.hashed = false;
    blk.tokens.clear();
  } else {
    return std::nullopt;
  }
  blocks_[static_cast<size_t>(b)].refs = 1;
  return b;
}

void BlockManager::release(int32_t b) {
  RH_CHECK(b >= 0 && b < num_blocks(), "release of block ", b);
  Block& blk = blocks_[static_cast<size_t>(b)];
  RH_CHECK(blk.refs > 0, "double release of block ", b);
  if (--blk.refs > 0) return;
  if (blk.hashed) {
    evictable_.push_back(b);
    blk.lru = std::prev(evictable_.end());
  } else {
    free_.push_back(b);
  }
}

std::vector<int32_t> BlockManager::match_prefix(const std::vector<int32_t>& tokens) {
  std::vector<int32_t> out;
  stats_.lookups_tokens += static_cast<int64_t>(tokens.size());
  if (!prefix_cache_) return out;
  uint64_t h = kRootHash;
  const int64_t full = static_cast<int64_t>(tokens.size()) / block_size_;
  for (int64_t i = 0; i < full; ++i) {
    const int32_t* t = tokens.data() + i * block_size_;
    h = chain_hash(h, t, block_size_);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const Block& blk = blocks_[static_cast<size_t>(it->second)];
    if (std::memcmp(blk.tokens.data(), t, static_cast<size_t>(block_size_) * 4) != 0) break;
    acquire(it->second);
    out.push_back(it->second);
  }
  stats_.hit_tokens += static_cast<int64_t>(out.size()) * block_size_;
  return out;
}

uint64_t BlockManager::commit(int32_t b, uint64_t parent_hash, const int32_t* block_tokens) {
  uint64_t h = chain_hash(parent_hash, block_tokens, block_size_);
  if (!prefix_cache_) return h;
  Block& blk = blocks_[static_cast<size_t>(b)];
  RH_CHECK(blk.refs > 0, "commit of an unreferenced block");
  if (blk.hashed || by_hash_.count(h)) return h;  // already cached (here or in a twin block)
  blk.hashed = true;
  blk.hash = h;
  blk.tokens.assign(block_tokens, block_tokens + block_size_);
  by_hash_[h] = b;
  return h;
}

}  // namespace redhare
