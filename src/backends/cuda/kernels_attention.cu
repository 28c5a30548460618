// Attention over the paged KV cache.
//
// Two launches: the new tokens' K and V go into their slots first (one block per token), then
// one block per (query token, head) walks its sequence's keys in chunks of kChunk with an online
// softmax. Per chunk: each thread scores one key (a private dot product with independent loads,
// so a whole chunk's K rows are in flight at once instead of one key per warp at a time), the
// block rescales its running sum and accumulator by exp(old max - new max), then threads own
// output dimensions and sum the chunk's V rows; when the head is narrower than the block, groups
// of threads take alternate keys and their partial sums are added in a fixed order. Memory per
// block is fixed, so any context length works. All arithmetic is f32 (the reference sums in
// double; the test bounds the difference).
#include <algorithm>
#include <cfloat>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"

namespace redhare::cuda {
namespace {

constexpr int kThreads = 256, kChunk = kThreads;  // one key per thread in the scoring pass
constexpr int kMaxHeadDim = 512;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;

template <typename KV>
__global__ void store_kv_kernel(const float* __restrict__ qkv, int64_t cols, int64_t q_cols,
                                int64_t kv_cols, const int32_t* __restrict__ slot_mapping,
                                KV* __restrict__ k_cache, KV* __restrict__ v_cache) {
  const int64_t t = blockIdx.x, slot = slot_mapping[t];
  const float* k = qkv + t * cols + q_cols;
  const float* v = k + kv_cols;
  for (int64_t i = threadIdx.x; i < kv_cols; i += blockDim.x) {
    k_cache[slot * kv_cols + i] = from_f32<KV>(k[i]);
    v_cache[slot * kv_cols + i] = from_f32<KV>(v[i]);
  }
}

// Four consecutive cache elements as f32 (the caller guarantees 4-element alignment).
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
template <typename T16>
__device__ __forceinline__ float4 load4(const T16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const T16* e = reinterpret_cast<const T16*>(&raw);
  return make_float4(to_f32(e[0]), to_f32(e[1]), to_f32(e[2]), to_f32(e[3]));
}

template <typename KV>
__device__ __forceinline__ float dot_with_query(const float* q, const KV* k, int D) {
  float dot = 0.0f;
  if (D % 4 == 0) {
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      const float4 kv = load4(k + d);
      dot += q[d] * kv.x + q[d + 1] * kv.y + q[d + 2] * kv.z + q[d + 3] * kv.w;
    }
  } else {
#pragma unroll 4
    for (int d = 0; d < D; ++d) dot += q[d] * to_f32(k[d]);
  }
  return dot;
}

template <typename KV>
__global__ void __launch_bounds__(kThreads)
attention_kernel(const float* __restrict__ qkv, const KV* __restrict__ k_cache,
                 const KV* __restrict__ v_cache, AttentionMeta meta, AttentionShape shape,
                 float* __restrict__ out) {
  __shared__ float q[kMaxHeadDim];
  __shared__ float score[kChunk];
  __shared__ int64_t slot_of[kChunk];
  __shared__ float partial[kThreads];
  const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size;
  const int s = meta.token_seq[t];
  const int q0 = meta.query_start[s], nq = meta.query_start[s + 1] - q0;
  const int pos = meta.context_lens[s] - nq + (t - q0);  // the query sees keys 0..pos
  const int first = shape.sliding_window > 0 ? max(0, pos - shape.sliding_window + 1) : 0;
  const int kvh = h / (H / Hkv);
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  const int32_t* table = meta.block_tables + static_cast<int64_t>(s) * meta.max_blocks;

  for (int d = tid; d < D; d += kThreads) q[d] = qkv[t * cols + static_cast<int64_t>(h) * D + d];
  float acc[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) acc[i] = 0.0f;
  float running_max = -FLT_MAX, running_sum = 0.0f;
  __syncthreads();

  // Heads up to kThreads wide: `groups` sets of D threads each take every groups-th key.
  const int groups = D <= kThreads ? kThreads / D : 1;
  const int group = D <= kThreads ? tid / D : 0;
  for (int j0 = first; j0 <= pos; j0 += kChunk) {
    const int n = min(kChunk, pos + 1 - j0);
    if (tid < n) {
      const int j = j0 + tid;
      const int64_t slot = static_cast<int64_t>(table[j / bs]) * bs + j % bs;
      score[tid] = dot_with_query(q, k_cache + slot * kv_cols + static_cast<int64_t>(kvh) * D, D) * shape.scale;
      slot_of[tid] = slot;
    }
    __syncthreads();
    // Every thread scans the (at most kChunk) scores in the same order: same max, same sum.
    float chunk_max = -FLT_MAX;
    for (int jj = 0; jj < n; ++jj) chunk_max = fmaxf(chunk_max, score[jj]);
    const float new_max = fmaxf(running_max, chunk_max);
    const float correction = expf(running_max - new_max);
    __syncthreads();  // everyone has read the raw scores before they become weights
    if (tid < n) score[tid] = expf(score[tid] - new_max);
    __syncthreads();
    float chunk_sum = 0.0f;
    for (int jj = 0; jj < n; ++jj) chunk_sum += score[jj];
    running_sum = running_sum * correction + chunk_sum;
    running_max = new_max;
    const KV* v_head = v_cache + static_cast<int64_t>(kvh) * D;
    if (D <= kThreads) {
      float part = 0.0f;
      if (group < groups) {
        const int d = tid - group * D;
#pragma unroll 8
        for (int jj = group; jj < n; jj += groups) part += score[jj] * to_f32(v_head[slot_of[jj] * kv_cols + d]);
      }
      partial[tid] = part;
      __syncthreads();
      if (tid < D) {
        float sum = 0.0f;
        for (int g = 0; g < groups; ++g) sum += partial[g * D + tid];
        acc[0] = acc[0] * correction + sum;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kDimsPerThread; ++i) {
        const int d = tid + i * kThreads;
        if (d >= D) break;
        float a = acc[i] * correction;
#pragma unroll 8
        for (int jj = 0; jj < n; ++jj) a += score[jj] * to_f32(v_head[slot_of[jj] * kv_cols + d]);
        acc[i] = a;
      }
    }
    __syncthreads();  // the next chunk overwrites score, slot_of and partial
  }
  float* o = out + static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) {
    const int d = tid + i * kThreads;
    if (d < D) o[d] = acc[i] / running_sum;
  }
}

template <typename KV>
void launch_typed(const float* qkv, KV* k_cache, KV* v_cache, const AttentionMeta& meta,
                  const AttentionShape& shape, float* out, cudaStream_t stream) {
  const int64_t D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads;
  const int64_t cols = (H + 2 * Hkv) * D, kv_cols = Hkv * D;
  const int store_threads = static_cast<int>(std::min<int64_t>(256, (kv_cols + 31) / 32 * 32));
  store_kv_kernel<KV><<<static_cast<unsigned>(meta.tokens), store_threads, 0, stream>>>(
      qkv, cols, H * D, kv_cols, meta.slot_mapping, k_cache, v_cache);
  RH_CUDA_LAUNCHED("store_kv_kernel");
  dim3 grid(static_cast<unsigned>(meta.tokens), static_cast<unsigned>(H));
  attention_kernel<KV><<<grid, kThreads, 0, stream>>>(qkv, k_cache, v_cache, meta, shape, out);
  RH_CUDA_LAUNCHED("attention_kernel");
}

}  // namespace

void launch_attention(const float* qkv, void* k_cache, void* v_cache, Elem kv_type,
                      const AttentionMeta& meta, const AttentionShape& shape, float* out,
                      cudaStream_t stream) {
  if (meta.tokens == 0) return;
  RH_CHECK(shape.head_dim <= kMaxHeadDim, "CUDA attention supports head_dim up to ", kMaxHeadDim);
  switch (kv_type) {
    case Elem::kF32:
      launch_typed(qkv, static_cast<float*>(k_cache), static_cast<float*>(v_cache), meta, shape, out, stream);
      break;
    case Elem::kF16:
      launch_typed(qkv, static_cast<__half*>(k_cache), static_cast<__half*>(v_cache), meta, shape, out, stream);
      break;
    case Elem::kBF16:
      launch_typed(qkv, static_cast<__nv_bfloat16*>(k_cache), static_cast<__nv_bfloat16*>(v_cache), meta, shape, out, stream);
      break;
  }
}

}  // namespace redhare::cuda
