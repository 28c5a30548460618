// Offline generation of one sequence at a time: prefill (optionally in chunks over the cached
// prefix) and greedy decode. The batched, scheduled engine builds on the same ForwardBatch.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/model.h"

namespace redhare {

struct SequenceOptions {
  int64_t block_size = 16;
  int64_t prefill_chunk = 0;  // tokens per prefill step; 0 = the whole prompt in one step
  DType kv_dtype = DType::kF32;
};

// A batch for `count` consecutive tokens of one sequence starting at position `start`, whose KV
// lives in blocks 0, 1, 2, ... of `kv`; `all_logits` asks for every row, else the last one only.
ForwardBatch single_sequence_batch(const int32_t* tokens, int64_t count, int64_t start,
                                   int64_t block_size, int64_t num_blocks, bool all_logits);

// Logits at every prompt position: [prompt.size(), vocab].
Tensor prompt_logits(Model& model, Backend& backend, const std::vector<int32_t>& prompt,
                     const SequenceOptions& options = {});

struct GreedyOptions : SequenceOptions {
  int64_t max_new_tokens = 16;
  std::vector<int64_t> eos_ids;
  bool ignore_eos = false;
};

// Greedy continuation of `prompt`; stops at max_new_tokens or (unless ignore_eos) an EOS id,
// which is included in the result. on_token sees each token as it is produced.
std::vector<int32_t> greedy_generate(Model& model, Backend& backend,
                                     const std::vector<int32_t>& prompt,
                                     const GreedyOptions& options,
                                     const std::function<void(int32_t)>& on_token = {});

}  // namespace redhare
