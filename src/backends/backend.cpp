#include "backends/backend.h"

#include <algorithm>

#include "core/error.h"

namespace redhare {

KvCache Backend::alloc_kv_cache(const KvCacheSpec& spec) {
  KvCache kv;
  kv.spec = spec;
  Shape shape{spec.num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim};
  for (int64_t l = 0; l < spec.num_layers; ++l)
    kv.layers.push_back({alloc(spec.dtype, shape), alloc(spec.dtype, shape)});
  return kv;
}

void Backend::fused_linear(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& w,
                           const Tensor* bias, LinearOut mode, Tensor& out) {
  RH_CHECK(x.dim() == 2 && w.dim() == 2, "fused_linear: ", x.str(), " x ", w.str());
  const int64_t T = x.size(0), N = w.size(0);
  Tensor normed;
  if (norm_weight) {
    normed = alloc(DType::kF32, x.shape());
    rms_norm(x, *norm_weight, eps, normed);
  }
  const Tensor& in = norm_weight ? normed : x;
  if (mode == LinearOut::kStore) {
    linear(in, w, bias, out);
    return;
  }
  Tensor p = alloc(DType::kF32, {T, N});
  linear(in, w, bias, p);
  if (mode == LinearOut::kAccumulate) add(out, p);
  else silu_mul(p, out);
}

Tensor Backend::argmax_rows(const Tensor& logits) {
  Tensor h = to_host(logits);
  RH_CHECK(h.dtype() == DType::kF32 && h.dim() == 2, "argmax_rows: ", h.str());
  const int64_t R = h.size(0), V = h.size(1);
  Tensor ids = Tensor::empty(DType::kI32, {R});
  for (int64_t r = 0; r < R; ++r) {
    const float* row = h.data_as<float>() + r * V;
    ids.data_as<int32_t>()[r] = static_cast<int32_t>(std::max_element(row, row + V) - row);
  }
  return ids;
}

std::vector<SampledToken> Backend::sample_rows(const Tensor& logits, const std::vector<RowSampling>& rows) {
  RH_CHECK(logits.dtype() == DType::kF32 && logits.dim() == 2 && logits.size(0) >= static_cast<int64_t>(rows.size()),
           "sample_rows: ", rows.size(), " rows of ", logits.str());
  const Tensor h = to_host(logits.slice_rows(0, static_cast<int64_t>(rows.size())));
  const int64_t V = h.size(1);
  std::vector<SampledToken> out;
  out.reserve(rows.size());
  for (size_t r = 0; r < rows.size(); ++r)
    out.push_back(sample_row_reference(h.data_as<float>() + static_cast<int64_t>(r) * V, V, rows[r]));
  return out;
}

void Backend::graph_stage(const std::vector<int32_t>&, const std::vector<int32_t>&,
                          const AttentionBatch&, const std::vector<int32_t>&, const KvCache&) {
  fail(name(), " backend does not support graphs");
}
void Backend::graph_capture_begin() { fail(name(), " backend does not support graphs"); }
void Backend::graph_capture_end(int64_t) { fail(name(), " backend does not support graphs"); }

}  // namespace redhare
