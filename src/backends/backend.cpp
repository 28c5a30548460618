#include "backends/backend.h"

namespace redhare {

KvCache Backend::alloc_kv_cache(const KvCacheSpec& spec) {
  KvCache kv;
  kv.spec = spec;
  Shape shape{spec.num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim};
  for (int64_t l = 0; l < spec.num_layers; ++l)
    kv.layers.push_back({alloc(spec.dtype, shape), alloc(spec.dtype, shape)});
  return kv;
}

}  // namespace redhare
