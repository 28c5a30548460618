// Paged KV block manager with reference counts and a prefix cache.
//
// Blocks hold block_size tokens of KV for every layer. A block that is full and whose KV is
// computed can be registered in the prefix cache under a hash chain (the parent block's hash and
// this block's token ids), so a later sequence with the same prefix reuses it instead of
// recomputing. Cached blocks nobody references stay cached until space is needed, then go
// least-recently-used first.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace redhare {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size, bool enable_prefix_cache);

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t block_size() const { return block_size_; }
  // Blocks that allocate() can hand out now: never-used ones plus cached ones nobody references.
  int64_t num_free() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  int64_t num_cached() const { return static_cast<int64_t>(by_hash_.size()); }

  // A fresh block with one reference, or nullopt when none is free.
  std::optional<int32_t> allocate();
  void release(int32_t block);
  int32_t ref_count(int32_t block) const { return blocks_[static_cast<size_t>(block)].refs; }

  // The longest run of cached full blocks that starts `tokens`; each returned block gains a
  // reference. Compares token ids, not just hashes, so a hash collision can never share KV.
  std::vector<int32_t> match_prefix(const std::vector<int32_t>& tokens);
  // Registers `block` (full, KV computed) as holding tokens[index * bs, (index + 1) * bs) of a
  // sequence whose earlier blocks are registered the same way. Returns the block's chain hash.
  uint64_t commit(int32_t block, uint64_t parent_hash, const int32_t* block_tokens);

  static constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;
  static uint64_t chain_hash(uint64_t parent, const int32_t* tokens, int64_t n);

  struct Stats {
    int64_t lookups_tokens = 0;  // tokens asked about in match_prefix
    int64_t hit_tokens = 0;      // tokens found cached
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Block {
    int32_t refs = 0;
    bool hashed = false;
    uint64_t hash = 0;
    std::vector<int32_t> tokens;  // of a hashed block, for collision checks
    std::list<int32_t>::iterator lru;  // position in evictable_ while refs == 0 and hashed
  };
  void acquire(int32_t block);

  int64_t block_size_;
  bool prefix_cache_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;       // refs == 0, not hashed
  std::list<int32_t> evictable_;    // refs == 0, hashed; front = least recently used
  std::unordered_map<uint64_t, int32_t> by_hash_;
  Stats stats_;
};

}  // namespace redhare
