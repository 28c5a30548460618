#include "engine/generate.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace redhare {
namespace {

int64_t blocks_for(int64_t tokens, int64_t block_size) {
  return std::max<int64_t>(1, (tokens + block_size - 1) / block_size);
}

int32_t argmax_row(const Tensor& logits, int64_t row) {
  const int64_t V = logits.size(1);
  const float* p = logits.data_as<float>() + row * V;
  return static_cast<int32_t>(std::max_element(p, p + V) - p);
}

void check_prompt(const Model& model, const std::vector<int32_t>& prompt, int64_t extra) {
  if (prompt.empty()) fail("the prompt is empty");
  const ModelConfig& c = model.config();
  for (int32_t id : prompt)
    if (id < 0 || id >= c.vocab_size)
      fail("prompt token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
  int64_t total = static_cast<int64_t>(prompt.size()) + extra;
  if (total > c.max_position_embeddings)
    fail("prompt (", prompt.size(), " tokens) plus ", extra, " new tokens exceeds the model's ",
         c.max_position_embeddings, "-token context");
}

}  // namespace

ForwardBatch single_sequence_batch(const int32_t* tokens, int64_t count, int64_t start,
                                   int64_t block_size, int64_t num_blocks, bool all_logits) {
  ForwardBatch b;
  b.token_ids.assign(tokens, tokens + count);
  for (int64_t i = 0; i < count; ++i) {
    b.positions.push_back(static_cast<int32_t>(start + i));
    b.attn.slot_mapping.push_back(static_cast<int32_t>(start + i));  // blocks are 0, 1, 2, ...
  }
  b.attn.num_seqs = 1;
  b.attn.query_start = {0, static_cast<int32_t>(count)};
  b.attn.context_lens = {static_cast<int32_t>(start + count)};
  b.attn.max_blocks = static_cast<int32_t>(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) b.attn.block_tables.push_back(static_cast<int32_t>(i));
  (void)block_size;
  if (all_logits) {
    for (int64_t i = 0; i < count; ++i) b.logit_rows.push_back(static_cast<int32_t>(i));
  } else {
    b.logit_rows.push_back(static_cast<int32_t>(count - 1));
  }
  return b;
}

Tensor prompt_logits(Model& model, Backend& backend, const std::vector<int32_t>& prompt,
                     const SequenceOptions& o) {
  check_prompt(model, prompt, 0);
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t blocks = blocks_for(n, o.block_size);
  KvCache kv = backend.alloc_kv_cache(model.kv_spec(blocks, o.block_size, o.kv_dtype));
  const int64_t V = model.config().vocab_size;
  Tensor out = Tensor::empty(DType::kF32, {n, V});
  const int64_t chunk = o.prefill_chunk > 0 ? o.prefill_chunk : n;
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t cnt = std::min(chunk, n - s);
    Tensor l = model.forward(single_sequence_batch(prompt.data() + s, cnt, s, o.block_size, blocks, true), kv);
    std::memcpy(out.data_as<float>() + s * V, l.data(), static_cast<size_t>(l.nbytes()));
  }
  return out;
}

std::vector<int32_t> greedy_generate(Model& model, Backend& backend,
                                     const std::vector<int32_t>& prompt, const GreedyOptions& o,
                                     const std::function<void(int32_t)>& on_token) {
  check_prompt(model, prompt, o.max_new_tokens);
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t blocks = blocks_for(n + o.max_new_tokens, o.block_size);
  KvCache kv = backend.alloc_kv_cache(model.kv_spec(blocks, o.block_size, o.kv_dtype));
  std::vector<int32_t> out;
  if (o.max_new_tokens <= 0) return out;
  const int64_t chunk = o.prefill_chunk > 0 ? o.prefill_chunk : n;
  Tensor logits;
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t cnt = std::min(chunk, n - s);
    logits = model.forward(single_sequence_batch(prompt.data() + s, cnt, s, o.block_size, blocks, false), kv);
  }
  for (int64_t step = 0;; ++step) {
    int32_t tok = argmax_row(logits, 0);
    out.push_back(tok);
    if (on_token) on_token(tok);
    bool eos = !o.ignore_eos && std::find(o.eos_ids.begin(), o.eos_ids.end(), tok) != o.eos_ids.end();
    if (eos || static_cast<int64_t>(out.size()) >= o.max_new_tokens) break;
    logits = model.forward(single_sequence_batch(&tok, 1, n + step, o.block_size, blocks, false), kv);
  }
  return out;
}

}  // namespace redhare
