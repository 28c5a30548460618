#include "backends/backend.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace redhare {

KvCache Backend::alloc_kv_cache(const KvCacheSpec& spec) {
  KvCache kv;
  kv.spec = spec;
  RH_CHECK(spec.dtype == DType::kF32 || spec.dtype == DType::kBF16 || spec.dtype == DType::kF16 ||
               spec.dtype == DType::kF8E4M3,
           "KV cache dtype ", dtype_name(spec.dtype), " is not one of f32, bf16, f16, f8_e4m3");
  Shape shape{spec.num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim};
  Shape scales{spec.num_blocks, spec.block_size, spec.num_kv_heads};
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    KvCacheLayer layer{alloc(spec.dtype, shape), alloc(spec.dtype, shape), {}, {}};
    if (spec.dtype == DType::kF8E4M3) {
      layer.k_scale = alloc(DType::kF32, scales);
      layer.v_scale = alloc(DType::kF32, scales);
    }
    kv.layers.push_back(std::move(layer));
  }
  return kv;
}

DType parse_kv_cache_dtype(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  if (name == "fp8" || name == "f8_e4m3") return DType::kF8E4M3;
  fail("KV cache type '", name, "' is not one of f32, bf16, f16, fp8");
}

void store_kv_fp8(const float* x, int64_t D, uint8_t* dst, float* scale) {
  float amax = 0.0f;
  for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[d]));
  const float s = amax > 0.0f ? amax / kKvFp8Max : 1.0f;
  *scale = s;
  for (int64_t d = 0; d < D; ++d) dst[d] = f32_to_f8e4m3(x[d] / s);
}

void load_kv_fp8(const uint8_t* src, float scale, int64_t D, float* out) {
  for (int64_t d = 0; d < D; ++d) out[d] = f8e4m3_to_f32(src[d]) * scale;
}

void Backend::rope_attention(Tensor& qkv, const std::vector<int32_t>& positions, const Tensor& inv_freq,
                             KvCacheLayer& cache, const AttentionBatch& batch, const AttentionParams& params,
                             Tensor& out) {
  rope(qkv, params.num_heads + params.num_kv_heads, params.head_dim, positions, inv_freq);
  attention(qkv, cache, batch, params, out);
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

void Backend::swiglu_mlp(Tensor& residual, const Tensor& norm_weight, float eps, const Tensor& gate_up,
                         const Tensor& down, Tensor& act) {
  fused_linear(residual, &norm_weight, eps, gate_up, nullptr, LinearOut::kSiluMul, act);
  fused_linear(act, nullptr, 0, down, nullptr, LinearOut::kAccumulate, residual);
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

void Backend::draw_rows_async(const Tensor& logits, const std::vector<RowSampling>& rows) {
  RH_CHECK(drawn_.size() < kMaxDrawsInFlight, "draw_rows_async: ", drawn_.size(), " draws not yet collected");
  std::vector<SampledToken> t = sample_rows(logits, rows);
  latest_draw_.clear();
  for (const SampledToken& s : t) latest_draw_.push_back(s.token);
  drawn_.push_back(std::move(t));
}

std::vector<SampledToken> Backend::collect_draw() {
  RH_CHECK(!drawn_.empty(), "collect_draw: no draw to collect");
  std::vector<SampledToken> t = std::move(drawn_.front());
  drawn_.pop_front();
  return t;
}

void Backend::embedding_drawn(const Tensor& table, const std::vector<int32_t>& ids,
                              const std::vector<int32_t>& from_draw, Tensor& out) {
  RH_CHECK(from_draw.size() == ids.size(), "embedding_drawn: ", from_draw.size(), " draw rows for ", ids.size(), " ids");
  std::vector<int32_t> resolved = ids;
  for (size_t t = 0; t < ids.size(); ++t) {
    const int32_t r = from_draw[t];
    if (r < 0) continue;
    RH_CHECK(static_cast<size_t>(r) < latest_draw_.size(), "embedding_drawn: row ", r, " of a draw of ",
             latest_draw_.size());
    resolved[t] = latest_draw_[static_cast<size_t>(r)];
  }
  embedding(table, resolved, out);
}

void Backend::graph_stage(const std::vector<int32_t>&, const std::vector<int32_t>&, const std::vector<int32_t>&,
                          const AttentionBatch&, const std::vector<int32_t>&, const KvCache&, const GraphDraw&) {
  fail(name(), " backend does not support graphs");
}
void Backend::graph_capture_begin() { fail(name(), " backend does not support graphs"); }
void Backend::graph_capture_end(int64_t) { fail(name(), " backend does not support graphs"); }

}  // namespace redhare
