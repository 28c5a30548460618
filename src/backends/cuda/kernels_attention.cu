// Attention over the paged KV cache.
//
// First the new tokens' K and V go into their slots (padding tokens, slot < 0, store nothing).
// Then up to two attention launches:
//
// * Split kernel (exact f32, every head_dim that is a multiple of one 16-byte load and at most
//   256): one block per (query token, KV head, partition of keys), computing every q
//   head of the GQA group so that each K/V row is read once per group. Inside a block, groups of
//   lanes each own one key at a time (a 16-byte load per lane, shuffle-reduced dot product) and
//   keep a private online softmax; the groups are merged in a fixed order at the end. With more
//   than one partition the blocks write (max, sum, unnormalized output) to scratch and a combine
//   kernel merges the partitions in order. The partition size is picked on the host from the
//   launch's token count and max_blocks * block_size only (launch_split), never from the
//   per-step contexts: a captured graph replays with new contexts, and partitions beyond a
//   token's context exit at once. Few tokens get small partitions (a batch-1 decode must still
//   fill the GPU); many tokens get one block per (token, KV head) and no combine pass, since
//   every block pays a fixed latency for its loads and merges. A token's result therefore
//   depends on how many tokens share its launch, not on what they are.
// * Tensor-core decode kernel (opt-in tensor_cores, bf16 and f16 caches, head_dim 64, 80, 96, 128
//   or 256), in place of the split kernel for launches of up to kTcdRowsPerSm (token, head group)
//   rows per SM: the q heads of a GQA group are the rows of mma.sync tiles, each warp streams its
//   own 16-key K/V tiles through a cp.async ring and keeps a private online softmax; partitions
//   as for the split kernel, merged by the kernel itself (the last block of a token's partitions),
//   and for decode-only launches through rope_attention the rotation and the K/V store done
//   inside (see tc_decode_kernel).
// * Flash kernel (opt-in tensor_cores, head_dim 64, 80, 96 or 128): query chunks of at least
//   kFlashMinQuery tokens. A block of 12 warps takes 192 queries of one head and walks the keys in
//   64-key tiles gathered through the block table into shared memory (16-byte rows of padding keep
//   ldmatrix free of bank conflicts). Each warp owns 16 query rows and keeps everything of them in
//   registers: Q as mma A fragments (scaled by scale * log2 e before rounding, so scores come out
//   in log2 units and exp2 needs no extra multiply), S = Q K^T and O += P V through
//   mma.sync m16n8k16 with f32 accumulation, the online softmax in f32, and P rounded straight
//   from the S accumulators into A fragments. K fragments come from ldmatrix, V fragments from
//   ldmatrix.trans. bf16 and f16 caches are copied into a double-buffered stage with cp.async (the
//   next tile lands while this one is used; one barrier per tile) and multiply in their own type
//   (f16 caches with f16 Q and P); f32 caches are rounded to bf16 through registers. A warp skips
//   tiles wholly past its rows or wholly before their window and masks only the tiles that cross
//   one. Padding rows (slot < 0) get zeros. Blocks run heads fastest and the longest query tiles
//   of a causal prompt first. Other
//   multiples of 16 up to 256 use the older WMMA kernel: 64 queries a block, S and O kept in
//   shared memory as f32. The split kernel then skips those sequences and handles the rest of the
//   batch (decodes).
//
// * FP8 caches (Fp8Kv, e4m3 with an f32 scale per token and KV head in separate pools): a warp per
//   (token, KV head) quantizes the new K/V as the host does (store_kv_fp8_kernel), and every
//   query takes the split kernel, which dequantizes 16 values per 16-byte load and applies each
//   key's scale (GQA groups of at most 4 per block: 16-value loads double the merge buffer).
//
// Head dims the split kernel cannot take fall back to the scalar kernel: one block per
// (query token, head), chunks of keys scored one per thread.
#include <cuda_fp8.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

constexpr int kThreads = 256, kChunk = kThreads;  // scalar kernel: one key per thread when scoring
constexpr int kMaxHeadDim = 512;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;

constexpr int kSplitThreads = 128;
// Keys per split block, at least: at batch 1 and 1024 keys, 16 partitions x 8 KV heads = 128
// blocks, each one round of loads.
constexpr int kMinPartition = 64;
constexpr int kTableSegment = 1024;  // block-table entries a split block stages (16k keys of 16)
constexpr int kSplitMaxDim = 256;
constexpr int kMaxGroupPerBlock = 8;  // q heads one split block computes; larger groups use more blocks

struct QueryOf {
  int seq, q0, nq, pos, first;
  bool padding;
};

// Where token t's query sits: it attends keys first..pos of sequence seq.
__device__ __forceinline__ QueryOf query_of(const AttentionMeta& meta, const AttentionShape& shape, int t) {
  QueryOf q;
  q.seq = meta.token_seq[t];
  q.q0 = meta.query_start[q.seq];
  q.nq = meta.query_start[q.seq + 1] - q.q0;
  q.padding = meta.slot_mapping[t] < 0;
  q.pos = meta.context_lens[q.seq] - q.nq + (t - q.q0);
  q.first = shape.sliding_window > 0 ? max(0, q.pos - shape.sliding_window + 1) : 0;
  return q;
}

__device__ __forceinline__ int64_t slot_of_key(const int32_t* table, int j, int bs) {
  return static_cast<int64_t>(table[j / bs]) * bs + j % bs;
}

// An FP8 cache element (e4m3 byte); its scale per (token, KV head) lives in a separate pool.
struct Fp8Kv {
  uint8_t bits;
};

template <typename KV>
__global__ void store_kv_kernel(const float* __restrict__ qkv, int64_t cols, int64_t q_cols,
                                int64_t kv_cols, const int32_t* __restrict__ slot_mapping,
                                KV* __restrict__ k_cache, KV* __restrict__ v_cache) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t t = blockIdx.x, slot = slot_mapping[t];
  if (slot < 0) return;  // padding token
  const float* k = qkv + t * cols + q_cols;
  const float* v = k + kv_cols;
  for (int64_t i = threadIdx.x; i < kv_cols; i += blockDim.x) {
    k_cache[slot * kv_cols + i] = from_f32<KV>(k[i]);
    v_cache[slot * kv_cols + i] = from_f32<KV>(v[i]);
  }
}

// rope_kernel and store_kv_kernel in one pass (launch_rope_store): one block per token rotates
// the q and k heads of its qkv row in place, with rope_kernel's arithmetic, and writes the rotated
// k heads and the v heads to the token's slot, rounded as store_kv_kernel rounds them; results
// are bit for bit those of the two kernels.
template <typename KV>
__global__ void rope_store_kernel(float* __restrict__ qkv, int64_t cols, int H, int Hkv, int D,
                                  const int32_t* __restrict__ positions, const float* __restrict__ inv_freq,
                                  const int32_t* __restrict__ slot_mapping, KV* __restrict__ k_cache,
                                  KV* __restrict__ v_cache) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t t = blockIdx.x, slot = slot_mapping[t], kv_cols = static_cast<int64_t>(Hkv) * D;
  const int half = D / 2;
  float* row = qkv + t * cols;
  const float pos = static_cast<float>(positions[t]);
  for (int e = threadIdx.x; e < (H + Hkv) * half; e += blockDim.x) {
    const int h = e / half, i = e - h * half;
    const float angle = __fmul_rn(pos, inv_freq[i]);
    float sn, cs;
    sincosf(angle, &sn, &cs);
    float* p = row + static_cast<int64_t>(h) * D;
    const float a = p[i], b = p[i + half];
    const float ra = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)), rb = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    p[i] = ra;
    p[i + half] = rb;
    if (h >= H && slot >= 0) {
      KV* k = k_cache + slot * kv_cols + static_cast<int64_t>(h - H) * D;
      k[i] = from_f32<KV>(ra);
      k[i + half] = from_f32<KV>(rb);
    }
  }
  if (slot < 0) return;  // padding token: rotated like every row, not stored
  const float* v = row + static_cast<int64_t>(H + Hkv) * D;
  for (int64_t i = threadIdx.x; i < kv_cols; i += blockDim.x) v_cache[slot * kv_cols + i] = from_f32<KV>(v[i]);
}

// FP8 cache: a warp per (token, KV head) vector: s = max|x| / 448 (1 for all zeros), bytes
// e4m3(x / s) rounded to nearest even and saturated, as store_kv_fp8() on the host.
__global__ void store_kv_fp8_kernel(const float* __restrict__ qkv, int64_t cols, int64_t q_cols, int Hkv, int D,
                                    const int32_t* __restrict__ slot_mapping, uint8_t* __restrict__ k_cache,
                                    uint8_t* __restrict__ v_cache, float* __restrict__ k_scale,
                                    float* __restrict__ v_scale) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int64_t t = blockIdx.x, slot = slot_mapping[t];
  if (slot < 0) return;  // padding token
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  for (int item = warp; item < 2 * Hkv; item += nwarps) {
    const bool is_v = item >= Hkv;
    const int h = is_v ? item - Hkv : item;
    const float* x = qkv + t * cols + q_cols + (is_v ? static_cast<int64_t>(Hkv) * D : 0) + static_cast<int64_t>(h) * D;
    float amax = 0.0f;
    for (int d = lane; d < D; d += 32) amax = fmaxf(amax, fabsf(x[d]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float sc = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
    uint8_t* dst = (is_v ? v_cache : k_cache) + (slot * Hkv + h) * D;
    for (int d = lane; d < D; d += 32)
      dst[d] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fdiv_rn(x[d], sc), __NV_SATFINITE, __NV_E4M3));
    if (lane == 0) (is_v ? v_scale : k_scale)[slot * Hkv + h] = sc;
  }
}

// ---------------------------------------------------------------------------------------------
// Scalar fallback.

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
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  __shared__ float q[kMaxHeadDim];
  __shared__ float score[kChunk];
  __shared__ int64_t slot_of[kChunk];
  __shared__ float partial[kThreads];
  const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size;
  const QueryOf qo = query_of(meta, shape, t);
  float* o = out + static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h) * D;
  if (qo.padding) {
    for (int d = tid; d < D; d += kThreads) o[d] = 0.0f;
    return;
  }
  const int pos = qo.pos, first = qo.first;
  const int kvh = h / (H / Hkv);
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  const int32_t* table = meta.block_tables + static_cast<int64_t>(qo.seq) * meta.max_blocks;

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
      const int64_t slot = slot_of_key(table, j, bs);
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
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) {
    const int d = tid + i * kThreads;
    if (d < D) o[d] = acc[i] / running_sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Split kernel.

// One 16-byte load widened to f32.
template <typename KV>
struct Vec16 {
  static constexpr int kN = 16 / static_cast<int>(sizeof(KV));
};

template <typename KV>
__device__ __forceinline__ void widen(const uint4& raw, float (&f)[Vec16<KV>::kN]) {
  if constexpr (std::is_same_v<KV, Fp8Kv>) {
    // Sixteen e4m3 bytes, each exactly (f16 holds every e4m3 value); the caller applies the scale.
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 16; ++i)
      f[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b[i]), __NV_E4M3)));
  } else {
    const KV* e = reinterpret_cast<const KV*>(&raw);
#pragma unroll
    for (int i = 0; i < Vec16<KV>::kN; ++i) f[i] = to_f32(e[i]);
  }
}

// Lanes that share one key: enough 16-byte loads to cover the head, a power of two, at most 32.
__host__ __device__ inline int split_lanes(int vecs_per_row) {
  int lanes = 1;
  while (lanes < vecs_per_row && lanes < 32) lanes <<= 1;
  return lanes;
}

template <typename KV, int G>
__global__ void __launch_bounds__(kSplitThreads)
split_kernel(const float* __restrict__ qkv, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
             const float* __restrict__ k_scale, const float* __restrict__ v_scale,
             AttentionMeta meta, AttentionShape shape, int token_begin, int nparts, int partition,
             int skip_query_len, float* __restrict__ out, float* __restrict__ part_ml,
             float* __restrict__ part_o) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  constexpr int V = Vec16<KV>::kN;
  constexpr int NI = (kSplitMaxDim / V + 31) / 32;  // 16-byte loads per lane per row
  // Keys in flight per lane group: as many as the registers allow (q, acc, K and V rows).
  constexpr int U = NI == 1 ? (G <= 4 ? 8 : 4) : 2;
  // groups * G * D <= kSplitThreads * V * G (a lane group covers the head in loads of V values)
  __shared__ float red[(V > 8 ? kSplitThreads * V : 1024) * G];
  __shared__ float red_m[kSplitThreads * G], red_l[kSplitThreads * G];

  const int local_t = blockIdx.x, t = token_begin + local_t, p = blockIdx.z, tid = threadIdx.x;
  const int D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size;
  const int group_size = H / Hkv, nsub = (group_size + G - 1) / G;
  const int kvh = blockIdx.y / nsub, h0 = kvh * group_size + (blockIdx.y % nsub) * G;
  const int gcount = min(G, group_size - (blockIdx.y % nsub) * G);
  const int nvec = D / V, lanes = split_lanes(nvec), lane = tid % lanes, grp = tid / lanes;
  const int ngroups = kSplitThreads / lanes;
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  // The query first: its loads need nothing from the metadata, so they overlap the chain of
  // dependent metadata loads below (sequence, context, block table, then K/V).
  float q[G][NI][V];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int vi = i * lanes + lane;
      const bool live = g < gcount && vi < nvec;
      const float* src = qkv + t * cols + static_cast<int64_t>(h0 + g) * D + vi * V;
#pragma unroll
      for (int e = 0; e < V; e += 4) {
        const float4 x = live ? *reinterpret_cast<const float4*>(src + e) : make_float4(0, 0, 0, 0);
        q[g][i][e] = x.x, q[g][i][e + 1] = x.y, q[g][i][e + 2] = x.z, q[g][i][e + 3] = x.w;
      }
    }
  const QueryOf qo = query_of(meta, shape, t);
  if (skip_query_len > 0 && qo.nq >= skip_query_len) return;  // the flash kernel owns this one
  const bool direct = nparts == 1;
  if (qo.padding) {
    if (direct)
      for (int i = tid; i < gcount * D; i += kSplitThreads) out[static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h0) * D + i] = 0.0f;
    return;
  }
  const int kbeg = max(qo.first, p * partition), kend = min(qo.pos + 1, (p + 1) * partition);
  if (kbeg >= kend) return;  // beyond this token's context: the combine kernel skips it

  const int32_t* table = meta.block_tables + static_cast<int64_t>(qo.seq) * meta.max_blocks;
  const KV* k_head = k_cache + static_cast<int64_t>(kvh) * D;
  const KV* v_head = v_cache + static_cast<int64_t>(kvh) * D;

  float m[G], l[G], acc[G][NI][V];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < NI; ++i)
#pragma unroll
      for (int e = 0; e < V; ++e) acc[g][i][e] = 0.0f;
  }

  // Every lane runs the same number of rounds (the shuffles need the whole warp); a group whose
  // keys all lie past the partition only skips the softmax update.
  // The partition's block-table entries in shared memory: a key's slot is then one shared load
  // away instead of a global load in front of every K/V load.
  __shared__ int32_t seg[kTableSegment];
  const int b0 = kbeg / bs, nb = (kend - 1) / bs - b0 + 1;
  const bool seg_ok = nb <= kTableSegment;
  if (seg_ok) {
    for (int i = tid; i < nb; i += kSplitThreads) seg[i] = table[b0 + i];
    __syncthreads();
  }
  for (int base = kbeg; base < kend; base += ngroups * U) {
    const int j0 = base + grp * U;
    uint4 kr[U][NI], vr[U][NI];
    float ks[U], vs[U];  // FP8 caches: each key's K and V scale
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = min(j0 + u, kend - 1);  // clamped keys are masked below
      const int64_t slot = seg_ok ? static_cast<int64_t>(seg[j / bs - b0]) * bs + j % bs : slot_of_key(table, j, bs);
      const int64_t row = slot * kv_cols;
      if constexpr (std::is_same_v<KV, Fp8Kv>) {
        ks[u] = k_scale[slot * Hkv + kvh];
        vs[u] = v_scale[slot * Hkv + kvh];
      } else {
        ks[u] = vs[u] = 1.0f;
      }
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        const int vi = i * lanes + lane;
        if (vi < nvec) {
          kr[u][i] = *reinterpret_cast<const uint4*>(k_head + row + vi * V);
          vr[u][i] = *reinterpret_cast<const uint4*>(v_head + row + vi * V);
        } else {
          kr[u][i] = vr[u][i] = make_uint4(0, 0, 0, 0);
        }
      }
    }
    float sc[U][G];
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int g = 0; g < G; ++g) sc[u][g] = 0.0f;
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        float kf[V];
        widen<KV>(kr[u][i], kf);
        if constexpr (std::is_same_v<KV, Fp8Kv>)
#pragma unroll
          for (int e = 0; e < V; ++e) kf[e] *= ks[u];
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
          for (int e = 0; e < V; ++e) sc[u][g] += q[g][i][e] * kf[e];
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        for (int o = lanes >> 1; o > 0; o >>= 1) sc[u][g] += __shfl_xor_sync(0xffffffffu, sc[u][g], o);
        sc[u][g] = j0 + u < kend ? sc[u][g] * shape.scale : -INFINITY;
      }
    }
    if (j0 >= kend) continue;
    // Key j0 is in range, so the new max is finite and masked keys weigh exp(-inf) = 0.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < U; ++u) mx = fmaxf(mx, sc[u][g]);
      const float corr = expf(m[g] - mx);
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < U; ++u) sum += (sc[u][g] = expf(sc[u][g] - mx));
      l[g] = l[g] * corr + sum;
      m[g] = mx;
#pragma unroll
      for (int i = 0; i < NI; ++i)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[g][i][e] *= corr;
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        float vf[V];
        widen<KV>(vr[u][i], vf);
        if constexpr (std::is_same_v<KV, Fp8Kv>)
#pragma unroll
          for (int e = 0; e < V; ++e) vf[e] *= vs[u];
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[g][i][e] += sc[u][g] * vf[e];
      }
  }

  // Merge the lane groups in group order: each scales its accumulator to the block's max.
  if (lane == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) red_m[grp * G + g] = m[g], red_l[grp * G + g] = l[g];
  __syncthreads();
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float mx = -INFINITY;
    for (int r = 0; r < ngroups; ++r) mx = fmaxf(mx, red_m[r * G + g]);
    const float scale = m[g] == -INFINITY ? 0.0f : expf(m[g] - mx);
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int vi = i * lanes + lane;
      if (vi < nvec)
#pragma unroll
        for (int e = 0; e < V; ++e) red[(grp * G + g) * D + vi * V + e] = acc[g][i][e] * scale;
    }
  }
  __syncthreads();
  for (int idx = tid; idx < gcount * D; idx += kSplitThreads) {
    const int g = idx / D, d = idx % D;
    float mx = -INFINITY;
    for (int r = 0; r < ngroups; ++r) mx = fmaxf(mx, red_m[r * G + g]);
    float sum = 0.0f, o = 0.0f;
    for (int r = 0; r < ngroups; ++r) {
      const float mr = red_m[r * G + g];
      if (mr != -INFINITY) sum += red_l[r * G + g] * expf(mr - mx);
      o += red[(r * G + g) * D + d];
    }
    const int h = h0 + g;
    if (direct) {
      out[static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h) * D + d] = o / sum;
    } else {
      const int64_t at = (static_cast<int64_t>(local_t) * H + h) * nparts + p;
      part_o[at * D + d] = o;
      if (d == 0) part_ml[2 * at] = mx, part_ml[2 * at + 1] = sum;
    }
  }
}

// Merges a token's partitions in partition order (one block per (token, head)).
constexpr int kCombineStaged = 1024;
__global__ void combine_kernel(AttentionMeta meta, AttentionShape shape, int token_begin, int nparts,
                               int partition, int skip_query_len, const float* __restrict__ part_ml,
                               const float* __restrict__ part_o, float* __restrict__ out) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  const int local_t = blockIdx.x, t = token_begin + local_t, h = blockIdx.y;
  const int D = shape.head_dim, H = shape.num_heads;
  const QueryOf qo = query_of(meta, shape, t);
  if (skip_query_len > 0 && qo.nq >= skip_query_len) return;
  float* o = out + static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h) * D;
  if (qo.padding) {
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = 0.0f;
    return;
  }
  const int p0 = qo.first / partition, p1 = qo.pos / partition, np = p1 - p0 + 1;
  const int64_t base = (static_cast<int64_t>(local_t) * H + h) * nparts + p0;
  if (np <= kCombineStaged) {
    // The partitions' (max, sum) fetched in parallel and each weight computed once; the sums
    // below run in partition order, as in the loop version underneath.
    __shared__ float m_s[kCombineStaged], l_s[kCombineStaged];
    for (int i = threadIdx.x; i < np; i += blockDim.x) {
      m_s[i] = part_ml[2 * (base + i)];
      l_s[i] = part_ml[2 * (base + i) + 1];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int i = 0; i < np; ++i) mx = fmaxf(mx, m_s[i]);
    __syncthreads();  // everyone has the max before the maxima become weights
    for (int i = threadIdx.x; i < np; i += blockDim.x) m_s[i] = expf(m_s[i] - mx);
    __syncthreads();
    float sum = 0.0f;
    for (int i = 0; i < np; ++i) sum += l_s[i] * m_s[i];
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
#pragma unroll 8
      for (int i = 0; i < np; ++i) acc += part_o[(base + i) * D + d] * m_s[i];
      o[d] = acc / sum;
    }
    return;
  }
  float mx = -INFINITY;
  for (int i = 0; i < np; ++i) mx = fmaxf(mx, part_ml[2 * (base + i)]);
  float sum = 0.0f;
  for (int i = 0; i < np; ++i) sum += part_ml[2 * (base + i) + 1] * expf(part_ml[2 * (base + i)] - mx);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < np; ++i) acc += part_o[(base + i) * D + d] * expf(part_ml[2 * (base + i)] - mx);
    o[d] = acc / sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Flash kernel (tensor cores).

namespace wmma = nvcuda::wmma;
constexpr int kFlashRows = 64, kFlashKeys = 64, kFlashThreads = 128;
constexpr int kFlashMaxDim = 256;

struct FlashLayout {
  int ldh, lds, ldp, ldo;  // leading dims (elements) of the bf16 Q/K/V, f32 S, bf16 P, f32 O tiles
  size_t q, k, v, s, p, o, bytes;
  explicit __host__ __device__ FlashLayout(int D)
      : ldh(D + 8), lds(kFlashKeys + 4), ldp(kFlashKeys + 8), ldo(D + 4) {
    // Padded rows keep WMMA fragments 32-byte aligned and spread rows over the banks.
    q = 0;
    k = q + sizeof(__nv_bfloat16) * kFlashRows * ldh;
    v = k + sizeof(__nv_bfloat16) * kFlashKeys * ldh;
    s = v + sizeof(__nv_bfloat16) * kFlashKeys * ldh;
    p = s + sizeof(float) * kFlashRows * lds;
    o = p + sizeof(__nv_bfloat16) * kFlashRows * ldp;
    bytes = o + sizeof(float) * kFlashRows * ldo;
  }
};

template <typename KV>
__global__ void __launch_bounds__(kFlashThreads)
flash_kernel(const float* __restrict__ qkv, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
             AttentionMeta meta, AttentionShape shape, float* __restrict__ out) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  extern __shared__ __align__(128) unsigned char smem[];
  const int qt = blockIdx.x, s = blockIdx.y, h = blockIdx.z, tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int q0 = meta.query_start[s], nq = meta.query_start[s + 1] - q0;
  if (nq < kFlashMinQuery || qt * kFlashRows >= nq) return;
  const int D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size;
  const int W = shape.sliding_window;
  const FlashLayout lay(D);
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem + lay.q);
  __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem + lay.k);
  __nv_bfloat16* sv = reinterpret_cast<__nv_bfloat16*>(smem + lay.v);
  float* ss = reinterpret_cast<float*>(smem + lay.s);
  __nv_bfloat16* sp = reinterpret_cast<__nv_bfloat16*>(smem + lay.p);
  float* so = reinterpret_cast<float*>(smem + lay.o);

  const int rows = min(kFlashRows, nq - qt * kFlashRows);
  const int t0 = q0 + qt * kFlashRows;
  const int pos0 = meta.context_lens[s] - nq + qt * kFlashRows;  // position of the tile's row 0
  const int kvh = h / (H / Hkv);
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  const int32_t* table = meta.block_tables + static_cast<int64_t>(s) * meta.max_blocks;

  for (int idx = tid; idx < kFlashRows * D; idx += kFlashThreads) {
    const int r = idx / D, d = idx % D;
    const float x = r < rows ? qkv[(t0 + r) * cols + static_cast<int64_t>(h) * D + d] : 0.0f;
    sq[r * lay.ldh + d] = __float2bfloat16_rn(x);
    so[r * lay.ldo + d] = 0.0f;
  }
  // Two lanes per row: lane pair (row, half) owns 32 score columns and half of the output row.
  const int my_row = warp * 16 + lane / 2, half = lane % 2;
  const int my_pos = pos0 + my_row, my_first = W > 0 ? max(0, my_pos - W + 1) : 0;
  float m_row = -INFINITY, l_row = 0.0f;
  const int kmin = W > 0 ? max(0, pos0 - W + 1) : 0, kend = pos0 + rows;

  constexpr int V = Vec16<KV>::kN;
  const int nvec = D / V;
  for (int j0 = kmin; j0 < kend; j0 += kFlashKeys) {
    __syncthreads();  // every warp is done with the previous K/V tile (and Q is written)
#pragma unroll 4
    for (int idx = tid; idx < kFlashKeys * nvec; idx += kFlashThreads) {
      const int r = idx / nvec, vi = idx % nvec, j = j0 + r;
      float kf[V], vf[V];
      if (j < kend) {
        const int64_t at = slot_of_key(table, j, bs) * kv_cols + static_cast<int64_t>(kvh) * D + vi * V;
        widen<KV>(*reinterpret_cast<const uint4*>(k_cache + at), kf);
        widen<KV>(*reinterpret_cast<const uint4*>(v_cache + at), vf);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) kf[e] = vf[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        sk[r * lay.ldh + vi * V + e] = __float2bfloat16_rn(kf[e]);
        sv[r * lay.ldh + vi * V + e] = __float2bfloat16_rn(vf[e]);
      }
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[kFlashKeys / 16];
#pragma unroll
    for (int c = 0; c < kFlashKeys / 16; ++c) wmma::fill_fragment(sacc[c], 0.0f);
    for (int kk = 0; kk < D; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
      wmma::load_matrix_sync(a, sq + warp * 16 * lay.ldh + kk, lay.ldh);
#pragma unroll
      for (int c = 0; c < kFlashKeys / 16; ++c) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(b, sk + c * 16 * lay.ldh + kk, lay.ldh);
        wmma::mma_sync(sacc[c], a, b, sacc[c]);
      }
    }
#pragma unroll
    for (int c = 0; c < kFlashKeys / 16; ++c)
      wmma::store_matrix_sync(ss + warp * 16 * lay.lds + c * 16, sacc[c], lay.lds, wmma::mem_row_major);
    __syncwarp();

    // Online softmax of this lane's half row; P is rounded to bf16 and the sum uses the rounded
    // weights, so numerator and denominator see the same P.
    float* srow = ss + my_row * lay.lds + half * 32;
    float mx = -INFINITY;
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int j = j0 + half * 32 + c;
      const bool live = j < kend && j <= my_pos && j >= my_first;
      const float x = live ? srow[c] * shape.scale : -INFINITY;
      srow[c] = x;
      mx = fmaxf(mx, x);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_row, mx);
    const float corr = m_new == -INFINITY ? 1.0f : expf(m_row - m_new);
    float sum = 0.0f;
    __nv_bfloat16* prow = sp + my_row * lay.ldp + half * 32;
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const __nv_bfloat16 pb = __float2bfloat16_rn(m_new == -INFINITY ? 0.0f : expf(srow[c] - m_new));
      prow[c] = pb;
      sum += __bfloat162float(pb);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_row = l_row * corr + sum;
    m_row = m_new;
    float* orow = so + my_row * lay.ldo;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) orow[d] *= corr;
    __syncwarp();

    // O += P V.
    for (int n = 0; n < D; n += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc;
      wmma::load_matrix_sync(oacc, so + warp * 16 * lay.ldo + n, lay.ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kFlashKeys; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, sp + warp * 16 * lay.ldp + kk, lay.ldp);
        wmma::load_matrix_sync(b, sv + kk * lay.ldh + n, lay.ldh);
        wmma::mma_sync(oacc, a, b, oacc);
      }
      wmma::store_matrix_sync(so + warp * 16 * lay.ldo + n, oacc, lay.ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (my_row < rows) {
    float* o = out + static_cast<int64_t>(t0 + my_row) * H * D + static_cast<int64_t>(h) * D;
    const float* orow = so + my_row * lay.ldo;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); ++d) o[d] = orow[d] / l_row;
  }
}

// ---------------------------------------------------------------------------------------------
// Register-resident flash kernel (mma.sync m16n8k16, head_dim 64, 80, 96 or 128).

// 12 warps (192 queries) a block and two stages measured fastest on an H200 for the 8B prefill
// shape (4096 tokens: 198 TFLOP/s, against 184 with 8 warps and 168 with 4; a third stage gained
// nothing with 8 warps and lost with 4). At 168 registers a thread one block fills an SM's
// register file; 192-query tiles cost a little on short prompts (512 tokens: 51 against 55).
constexpr int kFaWarps = 12, kFaStages = 2;
constexpr int kFaKeys = 64;  // keys per K/V tile
constexpr float kLog2e = 1.4426950408889634f;

// The 16-bit type the tensor cores multiply: a 16-bit cache's own type, bf16 for an f32 cache.
template <typename KV>
struct MmaType {
  using T = KV;
};
template <>
struct MmaType<float> {
  using T = __nv_bfloat16;
};

// Bytes of shared memory: ST stages of one K and one V tile, rows padded by 16 bytes so that the
// eight rows one ldmatrix phase reads fall on distinct bank groups.
template <int D, int ST>
constexpr int fa_smem_bytes() {
  return ST * 2 * kFaKeys * (D + 8) * 2;
}

// Two floats rounded to a 16-bit pair, the first in the low half (the lower column).
template <typename T16>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// c += a * b for a 16x16 A fragment, a 16x8 B fragment and a 16x8 f32 accumulator.
template <typename T16>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T16, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Keys j0 .. j0 + kFaKeys - 1 of one KV head into a K and a V tile of 16-bit rows (LD elements
// apart); keys at or past kend become zero rows. 16-bit caches copy asynchronously (the caller
// commits and waits); f32 caches are rounded to bf16 through registers.
template <typename KV, int D, int NT>
__device__ __forceinline__ void fa_load_tile(typename MmaType<KV>::T* sk, typename MmaType<KV>::T* sv,
                                             const KV* k_head, const KV* v_head, const int32_t* table, int bs,
                                             int64_t kv_cols, int j0, int kend, int tid) {
  using T16 = typename MmaType<KV>::T;
  constexpr int C = D / 8, LD = D + 8, kChunks = kFaKeys * C;
#pragma unroll 1
  for (int i = 0; i < (kChunks + NT - 1) / NT; ++i) {
    const int idx = tid + i * NT;
    if (kChunks % NT != 0 && idx >= kChunks) break;
    const int r = idx / C, c = idx % C, j = j0 + r;
    const bool live = j < kend;
    const int64_t at = live ? slot_of_key(table, j, bs) * kv_cols + c * 8 : 0;
    if constexpr (sizeof(KV) == 2) {
      cp_async16(smem_u32(sk + r * LD + c * 8), k_head + at, live);
      cp_async16(smem_u32(sv + r * LD + c * 8), v_head + at, live);
    } else {
      const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      const float4 k0 = live ? *reinterpret_cast<const float4*>(k_head + at) : z;
      const float4 k1 = live ? *reinterpret_cast<const float4*>(k_head + at + 4) : z;
      const float4 v0 = live ? *reinterpret_cast<const float4*>(v_head + at) : z;
      const float4 v1 = live ? *reinterpret_cast<const float4*>(v_head + at + 4) : z;
      *reinterpret_cast<uint4*>(sk + r * LD + c * 8) =
          make_uint4(pack2<T16>(k0.x, k0.y), pack2<T16>(k0.z, k0.w), pack2<T16>(k1.x, k1.y), pack2<T16>(k1.z, k1.w));
      *reinterpret_cast<uint4*>(sv + r * LD + c * 8) =
          make_uint4(pack2<T16>(v0.x, v0.y), pack2<T16>(v0.z, v0.w), pack2<T16>(v1.x, v1.y), pack2<T16>(v1.z, v1.w));
    }
  }
}

// A block of NW warps takes NW * 16 consecutive queries of one head; each warp owns 16 rows and
// keeps their scores, softmax state and output in registers. Fragment layouts (m16n8k16): lane
// = 4 * g + tq holds rows g and g + 8 of a 16-row fragment, columns 2 tq, 2 tq + 1 (and + 8).
template <typename KV, int D, int NW, int ST>
__global__ void __launch_bounds__(NW * 32)
fa_kernel(const float* __restrict__ qkv, const KV* __restrict__ k_cache, const KV* __restrict__ v_cache,
          AttentionMeta meta, AttentionShape shape, float* __restrict__ out) {
  pdl_begin();  // launched by launch_pdl (pdl.cuh)
  using T16 = typename MmaType<KV>::T;
  constexpr int R = NW * 16, LD = D + 8, KS = D / 16, ND = D / 8, NK = kFaKeys / 8, kTile = kFaKeys * LD;
  extern __shared__ __align__(128) unsigned char smem[];
  T16* tiles = reinterpret_cast<T16*>(smem);  // [stage][K, V][kFaKeys][LD]
  // Heads vary fastest (the q heads of one GQA group read the same K/V tiles close together in
  // time) and the longest query tiles of a causal prompt start first.
  const int h = blockIdx.x, s = blockIdx.y, qt = static_cast<int>(gridDim.z - 1 - blockIdx.z);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tq = lane % 4;
  const int q0 = meta.query_start[s], nq = meta.query_start[s + 1] - q0;
  if (nq < kFlashMinQuery || qt * R >= nq) return;
  const int H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size, W = shape.sliding_window;
  const int rows = min(R, nq - qt * R), t0 = q0 + qt * R;
  const int pos0 = meta.context_lens[s] - nq + qt * R;  // position of the tile's row 0
  const int kvh = h / (H / Hkv);
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  const int32_t* table = meta.block_tables + static_cast<int64_t>(s) * meta.max_blocks;
  const KV* k_head = k_cache + static_cast<int64_t>(kvh) * D;
  const KV* v_head = v_cache + static_cast<int64_t>(kvh) * D;
  const int kmin = W > 0 ? max(0, pos0 - W + 1) : 0, kend = pos0 + rows;
  const int ntiles = (kend - kmin + kFaKeys - 1) / kFaKeys;

  // Up to ST - 1 tiles in flight ahead of the one in use; every step commits one (possibly empty)
  // group, so waiting for all but the newest ST - 2 groups means the current tile has landed.
#pragma unroll
  for (int st = 0; st < ST - 1; ++st) {
    if (st < ntiles)
      fa_load_tile<KV, D, NW * 32>(tiles + st * 2 * kTile, tiles + st * 2 * kTile + kTile, k_head, v_head, table, bs,
                                   kv_cols, kmin + st * kFaKeys, kend, tid);
    cp_async_commit();
  }

  // Q as A fragments, scaled by scale * log2(e) before rounding: scores come out in log2 units.
  const int wr0 = warp * 16, wpos = pos0 + wr0;  // the warp's first row and its position
  const bool warp_live = wr0 < rows;
  uint32_t qf[KS][4];
  {
    const float qs = shape.scale * kLog2e;
    const int ra = min(wr0 + g, rows - 1), rb = min(wr0 + g + 8, rows - 1);
    const float* qa = qkv + static_cast<int64_t>(t0 + ra) * cols + static_cast<int64_t>(h) * D + 2 * tq;
    const float* qb = qkv + static_cast<int64_t>(t0 + rb) * cols + static_cast<int64_t>(h) * D + 2 * tq;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const float2 a0 = *reinterpret_cast<const float2*>(qa + ks * 16);
      const float2 a1 = *reinterpret_cast<const float2*>(qb + ks * 16);
      const float2 a2 = *reinterpret_cast<const float2*>(qa + ks * 16 + 8);
      const float2 a3 = *reinterpret_cast<const float2*>(qb + ks * 16 + 8);
      qf[ks][0] = pack2<T16>(a0.x * qs, a0.y * qs);
      qf[ks][1] = pack2<T16>(a1.x * qs, a1.y * qs);
      qf[ks][2] = pack2<T16>(a2.x * qs, a2.y * qs);
      qf[ks][3] = pack2<T16>(a3.x * qs, a3.y * qs);
    }
  }

  float o[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g + 8; l is this lane's part
  const int p0 = wpos + g, p1 = p0 + 8;
  // ldmatrix row addresses: lanes 8i .. 8i + 7 give the rows of matrix i. For K (B of S = Q K^T)
  // the matrices are (keys 0-7, dims 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15): the two B
  // registers of two key n-tiles. For V (B of O += P V, transposed on load) they are
  // (keys 0-7, dims 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): two dim n-tiles.
  const int k_off = ((lane % 8) + (lane / 16) * 8) * LD + ((lane / 8) % 2) * 8;
  const int v_off = ((lane % 8) + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8;

  for (int it = 0; it < ntiles; ++it) {
    const int j0 = kmin + it * kFaKeys;
    cp_async_wait<ST - 2>();
    __syncthreads();  // tile it has landed for every thread, and every warp is done with tile it - 1
    if (it + ST - 1 < ntiles) {  // refill the stage tile it - 1 used
      T16* nk = tiles + ((it + ST - 1) % ST) * 2 * kTile;
      fa_load_tile<KV, D, NW * 32>(nk, nk + kTile, k_head, v_head, table, bs, kv_cols, j0 + (ST - 1) * kFaKeys, kend,
                                   tid);
    }
    cp_async_commit();
    // A warp skips tiles wholly after its rows (causal) or wholly before their window.
    const bool skip = !warp_live || j0 > wpos + 15 || (W > 0 && j0 + kFaKeys - 1 < wpos - W + 1);
    if (!skip) {
      const T16* sk = tiles + (it % ST) * 2 * kTile;
      const T16* sv = sk + kTile;
      float sc[NK][4];
#pragma unroll
      for (int n = 0; n < NK; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
      const uint32_t kb = smem_u32(sk + k_off);
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int np = 0; np < NK / 2; ++np) {
          uint32_t b[4];
          ldsm_x4(b, kb + (np * 16 * LD + ks * 16) * 2);
          mma16816<T16>(sc[2 * np], qf[ks], b[0], b[1]);
          mma16816<T16>(sc[2 * np + 1], qf[ks], b[2], b[3]);
        }
      // Only tiles reaching past a row's position or before its window need the per-key mask.
      if (j0 + kFaKeys - 1 > wpos || (W > 0 && j0 < wpos + 16 - W)) {
#pragma unroll
        for (int n = 0; n < NK; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = j0 + n * 8 + 2 * tq + (e & 1), p = e < 2 ? p0 : p1;
            if (j > p || (W > 0 && j <= p - W)) sc[n][e] = -INFINITY;
          }
      }
      // Online softmax in f32; a row with no live key so far keeps base 0 (its weights are 0).
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        mx0 = fmaxf(mx0, fmaxf(sc[n][0], sc[n][1]));
        mx1 = fmaxf(mx1, fmaxf(sc[n][2], sc[n][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
      const float c0 = fast_exp2(m0 - base0), c1 = fast_exp2(m1 - base1);
      m0 = mx0, m1 = mx1;
      float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        sc[n][0] = fast_exp2(sc[n][0] - base0);
        sc[n][1] = fast_exp2(sc[n][1] - base0);
        sc[n][2] = fast_exp2(sc[n][2] - base1);
        sc[n][3] = fast_exp2(sc[n][3] - base1);
        rs0 += sc[n][0] + sc[n][1];
        rs1 += sc[n][2] + sc[n][3];
      }
      l0 = l0 * c0 + rs0;
      l1 = l1 * c1 + rs1;
#pragma unroll
      for (int d = 0; d < ND; ++d) {
        o[d][0] *= c0, o[d][1] *= c0;
        o[d][2] *= c1, o[d][3] *= c1;
      }
      // O += P V: the S accumulators of key n-tiles 2k and 2k + 1 are exactly the A fragment of
      // key step k.
      const uint32_t vb = smem_u32(sv + v_off);
#pragma unroll
      for (int ks = 0; ks < NK / 2; ++ks) {
        const uint32_t a[4] = {pack2<T16>(sc[2 * ks][0], sc[2 * ks][1]), pack2<T16>(sc[2 * ks][2], sc[2 * ks][3]),
                               pack2<T16>(sc[2 * ks + 1][0], sc[2 * ks + 1][1]),
                               pack2<T16>(sc[2 * ks + 1][2], sc[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < ND / 2; ++dp) {
          uint32_t b[4];
          ldsm_x4_trans(b, vb + (ks * 16 * LD + dp * 16) * 2);
          mma16816<T16>(o[2 * dp], a, b[0], b[1]);
          mma16816<T16>(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = wr0 + g + half * 8;
    if (r >= rows) continue;
    const int64_t t = t0 + r;
    const bool pad = meta.slot_mapping[t] < 0;  // padding rows are zero, as everywhere else
    const float inv = 1.0f / (half ? l1 : l0);
    float* orow = out + t * H * D + static_cast<int64_t>(h) * D + 2 * tq;
#pragma unroll
    for (int d = 0; d < ND; ++d) {
      const float x = pad ? 0.0f : o[d][2 * half] * inv, y = pad ? 0.0f : o[d][2 * half + 1] * inv;
      *reinterpret_cast<float2*>(orow + d * 8) = make_float2(x, y);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core decode kernel (opt-in tensor_cores, 16-bit caches, head_dim a multiple of 16 in
// kTcdDims): the split kernel's job for the queries the flash kernel leaves, with the q heads
// of a GQA group as the 16 rows of mma.sync m16n8k16 (rows past the group are zero queries whose
// results are dropped). One block per (query token, group of up to 16 q heads of one KV head,
// partition of keys); each of its warps takes every kTcdWarps-th 16-key tile of the partition and
// runs on its own: a private ring of kTcdStages K/V tiles filled by cp.async (two tiles in flight
// while the third is used, no block barrier), S = Q K^T and O += P V as in the flash kernel (Q
// scaled by scale * log2 e and rounded once, P rounded from the S accumulators) and a private
// online softmax in f32. The warps merge in warp order at the end; partitions go through the
// combine kernel as the split kernel's do.

constexpr int kTcdWarps = 4, kTcdStages = 3, kTcdKeys = 16, kTcdRows = 16;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr bool tcd_dim_ok(int d) { return d == 64 || d == 80 || d == 96 || d == 128 || d == 256; }

// Dynamic shared memory: every warp's ring of K and V tiles (rows padded by 16 bytes, as the
// flash kernel's), reused after the key loop as the f32 merge buffer of every warp's 16 rows.
template <int D>
constexpr int tcd_smem_bytes() {
  constexpr int tiles = kTcdWarps * kTcdStages * 2 * kTcdKeys * (D + 8) * 2;
  constexpr int merge = kTcdWarps * kTcdRows * D * 4;
  return tiles > merge ? tiles : merge;
}

// rope_attention's rotation inside the tensor-core decode kernel (decode-only launches, see
// launch_typed): every block rotates its q heads in registers, and a block that holds a token's
// newest key (its own: one query per sequence) rotates that key from the qkv row, takes the row
// into its tile from shared memory and (first head group) stores it and the V row to the token's
// slot, with rope_store_kernel's arithmetic and rounding. qkv itself is left unrotated.
// positions == nullptr: no rotation (the K/V rows were stored before the launch).
struct TcdRope {
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
};

template <typename T16, int D>
__global__ void __launch_bounds__(kTcdWarps * 32)
tc_decode_kernel(const float* __restrict__ qkv, T16* k_cache, T16* v_cache, AttentionMeta meta, AttentionShape shape,
                 int token_begin, int nparts, int partition, int skip_query_len, float* __restrict__ out,
                 float* __restrict__ part_ml, float* __restrict__ part_o, int* __restrict__ counters, TcdRope rope) {
  // Launched by launch_pdl (pdl.cuh), but no pdl_trigger: the product after it (the o
  // projection, a grid of what fits on the GPU) is scheduled only as these blocks exit. Letting
  // it in early (a trigger at the start, as the other kernels do) left half of its blocks
  // resident beside these, waiting, and cost whole decode steps about 10 us per layer at batch 1
  // (H100, 8B shape: bf16 6.18 -> 5.83 ms, FP8 weights 3.86 -> 3.73 ms; a trigger after the key
  // loop, before the merge, 6.22 ms; batch 8 unchanged). Cause not established.
  // The metadata, the block table and (rotation fused) the first cached K/V tiles are loaded
  // before pdl_wait, further down. That gains only where these blocks are resident while the qkv
  // product runs: beside the register GEMV's two blocks of 104 x 256 registers they were not, and
  // making room cost more than it saved (H100, batch 1: the qkv product capped at one block per
  // SM 5.92 against 5.79-5.81 ms per step, 5.84 with the early loads); beside the bulk-copy
  // product (kernels_gemv_bulk.cu, one block of 288 threads per SM) they are.
  // Also measured without gain (H100, batch 1): these blocks asking the L2 for the o product's
  // weights before the wait (cp.async.bulk.prefetch.L2; the prefetch competes with the K/V reads
  // and an L2 hit is only ~1.3x faster to stream); for decode-only launches, loading sequence t's
  // lengths and this partition's block-table entries in one round, checked against token_seq.
  // The exception: a bulk-copy successor (AttentionShape::let_in_successor), whose blocks take
  // their columns from a counter and whose rings fill while these blocks run.
  if (shape.let_in_successor) pdl_trigger();
  constexpr int NW = kTcdWarps, ST = kTcdStages, LD = D + 8, KS = D / 16, ND = D / 8, C = D / 8, HALF = D / 2;
  constexpr int kTile = kTcdKeys * LD, kStage = 2 * kTile;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int32_t seg[kTableSegment];
  __shared__ float red_m[NW * kTcdRows], red_l[NW * kTcdRows];
  __shared__ float rope_cs[HALF], rope_sn[HALF];  // the token's rotation (fused rope only)
  __shared__ __align__(16) T16 new_kv[2][D];      // its own K and V rows as the cache holds them
  __shared__ int is_last;
  const int local_t = blockIdx.x, t = token_begin + local_t, p = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tq = lane % 4;
  const int H = shape.num_heads, Hkv = shape.num_kv_heads, bs = shape.block_size;
  const int group_size = H / Hkv, nsub = (group_size + kTcdRows - 1) / kTcdRows;
  const int kvh = blockIdx.y / nsub, sub = blockIdx.y % nsub, h0 = kvh * group_size + sub * kTcdRows;
  const int gcount = min(kTcdRows, group_size - sub * kTcdRows);
  const int64_t cols = static_cast<int64_t>(H + 2 * Hkv) * D, kv_cols = static_cast<int64_t>(Hkv) * D;
  const bool fuse_rope = rope.positions != nullptr;

  if (fuse_rope) {
    const float pos = static_cast<float>(rope.positions[t]);
    for (int i = tid; i < HALF; i += NW * 32) {
      float sn, cs;
      sincosf(__fmul_rn(pos, rope.inv_freq[i]), &sn, &cs);
      rope_cs[i] = cs, rope_sn[i] = sn;
    }
  }
  // rope_kernel's rotation of column pair (i, i + HALF).
  auto rotate = [&](float& a, float& b, int i) {
    const float cs = rope_cs[i], sn = rope_sn[i];
    const float ra = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)), rb = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    a = ra, b = rb;
  };
  const QueryOf qo = query_of(meta, shape, t);
  if (skip_query_len > 0 && qo.nq >= skip_query_len) return;  // the flash kernel owns this one
  const bool direct = nparts == 1, merge = !direct && counters != nullptr;
  if (qo.padding) {
    pdl_wait();
    if (p == 0 && (direct || merge))
      for (int i = tid; i < gcount * D; i += NW * 32) out[static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h0) * D + i] = 0.0f;
    return;
  }
  const int kbeg = max(qo.first, p * partition), kend = min(qo.pos + 1, (p + 1) * partition);
  if (kbeg >= kend) return;  // beyond this token's context: the merge skips it

  const int32_t* table = meta.block_tables + static_cast<int64_t>(qo.seq) * meta.max_blocks;
  const int b0 = kbeg / bs, nb = (kend - 1) / bs - b0 + 1;
  const bool seg_ok = nb <= kTableSegment;
  if (seg_ok)
    for (int i = tid; i < nb; i += NW * 32) seg[i] = table[b0 + i];
  __syncthreads();  // the block-table segment and the rotation table
  // With fused rope the block holding the token's own key (always the newest, qo.pos) makes its
  // row instead of reading it back.
  const int own_key = fuse_rope && kend == qo.pos + 1 ? qo.pos : -1;
  const T16* k_head = k_cache + static_cast<int64_t>(kvh) * D;
  const T16* v_head = v_cache + static_cast<int64_t>(kvh) * D;
  T16* ring = reinterpret_cast<T16*>(smem) + warp * ST * kStage;
  const int ntiles = (kend - kbeg + kTcdKeys - 1) / kTcdKeys;
  const int my_tiles = ntiles > warp ? (ntiles - warp + NW - 1) / NW : 0;

  // This warp's it-th tile (keys from kbeg + (warp + it * NW) * 16) into ring stage st; keys at
  // or past kend, and the key this block makes, become zero rows.
  auto load_tile = [&](int it, int st) {
    const int j0 = kbeg + (warp + it * NW) * kTcdKeys;
    T16* sk = ring + st * kStage;
    T16* sv = sk + kTile;
#pragma unroll
    for (int i = 0; i < kTcdKeys * C / 32; ++i) {
      const int idx = lane + i * 32, r = idx / C, c = idx % C, j = j0 + r;
      const bool live = j < kend && j != own_key;
      int64_t at = 0;
      if (live) {
        const int64_t slot = seg_ok ? static_cast<int64_t>(seg[j / bs - b0]) * bs + j % bs : slot_of_key(table, j, bs);
        at = slot * kv_cols + c * 8;
      }
      cp_async16(smem_u32(sk + r * LD + c * 8), k_head + at, live);
      cp_async16(smem_u32(sv + r * LD + c * 8), v_head + at, live);
    }
  };

  // Up to ST - 1 tiles in flight ahead of the one in use; every step commits one (possibly
  // empty) group, so waiting for all but the newest ST - 1 groups means the current tile landed.
  auto first_tiles = [&] {
#pragma unroll
    for (int st = 0; st < ST - 1; ++st) {
      if (st < my_tiles) load_tile(st, st);
      cp_async_commit();
    }
  };
  // Everything above reads only what no kernel of this step writes before this one: the batch's
  // metadata and block tables (uploaded ahead of the step), the rotation table, and, with the
  // rotation fused, the cached keys and values of earlier steps (this token's own are made here).
  // So it runs before the wait, while the qkv product still streams: with that product on the
  // bulk-copy kernel these blocks are resident beside it (kernels_gemv_bulk.cu). Without fused
  // rope the new rows were stored by the kernel just before this one, so the tiles wait.
  if (fuse_rope) first_tiles();
  pdl_wait();
  if (!fuse_rope) first_tiles();
  // Q, as raw f32 in the lane's 8-column chunks (chunk u: columns u * 8 + 2 tq, + 1).
  const bool la = g < gcount, lb = g + 8 < gcount;
  float2 qa[2 * KS], qb[2 * KS];
  {
    const float* pa = qkv + t * cols + static_cast<int64_t>(h0 + (la ? g : 0)) * D + 2 * tq;
    const float* pb = qkv + t * cols + static_cast<int64_t>(h0 + (lb ? g + 8 : 0)) * D + 2 * tq;
    const float2 z = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int u = 0; u < 2 * KS; ++u) {
      qa[u] = la ? *reinterpret_cast<const float2*>(pa + u * 8) : z;
      qb[u] = lb ? *reinterpret_cast<const float2*>(pb + u * 8) : z;
    }
  }

  if (own_key >= 0) {
    // The token's k head rotated and its v head, rounded to the cache type, stored to its slot.
    const float* krow = qkv + t * cols + static_cast<int64_t>(H + kvh) * D;
    const float* vrow = krow + kv_cols;
    const int64_t at = static_cast<int64_t>(meta.slot_mapping[t]) * kv_cols + static_cast<int64_t>(kvh) * D;
    for (int i = tid; i < HALF; i += NW * 32) {
      float a = krow[i], b = krow[i + HALF];
      rotate(a, b, i);
      const T16 ka = from_f32<T16>(a), kb = from_f32<T16>(b), va = from_f32<T16>(vrow[i]),
                vb = from_f32<T16>(vrow[i + HALF]);
      new_kv[0][i] = ka, new_kv[0][i + HALF] = kb, new_kv[1][i] = va, new_kv[1][i + HALF] = vb;
      if (sub == 0) {
        T16* kc = k_cache + at;
        T16* vc = v_cache + at;
        kc[i] = ka, kc[i + HALF] = kb, vc[i] = va, vc[i + HALF] = vb;
      }
    }
  }

  // Q as A fragments: rotated (the pair of a column sits HALF / 8 = KS chunks on, in the same
  // lane), scaled by scale * log2 e and rounded once.
  uint32_t qf[KS][4];
  {
    if (fuse_rope) {
#pragma unroll
      for (int u = 0; u < KS; ++u) {
        const int i = u * 8 + 2 * tq;
        rotate(qa[u].x, qa[u + KS].x, i), rotate(qa[u].y, qa[u + KS].y, i + 1);
        rotate(qb[u].x, qb[u + KS].x, i), rotate(qb[u].y, qb[u + KS].y, i + 1);
      }
    }
    const float qs = shape.scale * kLog2e;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      qf[ks][0] = pack2<T16>(qa[2 * ks].x * qs, qa[2 * ks].y * qs);
      qf[ks][1] = pack2<T16>(qb[2 * ks].x * qs, qb[2 * ks].y * qs);
      qf[ks][2] = pack2<T16>(qa[2 * ks + 1].x * qs, qa[2 * ks + 1].y * qs);
      qf[ks][3] = pack2<T16>(qb[2 * ks + 1].x * qs, qb[2 * ks + 1].y * qs);
    }
  }
  if (own_key >= 0) __syncthreads();  // new_kv complete

  float o[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g + 8; l is this lane's part
  // ldmatrix row addresses as in the flash kernel: K matrices (keys 0-7, dims 0-7), (0-7, 8-15),
  // (8-15, 0-7), (8-15, 8-15); V matrices (keys 0-7, dims 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
  const int k_off = ((lane % 8) + (lane / 16) * 8) * LD + ((lane / 8) % 2) * 8;
  const int v_off = ((lane % 8) + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8;

  for (int it = 0; it < my_tiles; ++it) {
    if (it + ST - 1 < my_tiles) load_tile(it + ST - 1, (it + ST - 1) % ST);  // the stage tile it - 1 used
    cp_async_commit();
    cp_async_wait<ST - 1>();
    __syncwarp();
    const int j0 = kbeg + (warp + it * NW) * kTcdKeys;
    T16* sk = ring + (it % ST) * kStage;
    T16* sv = sk + kTile;
    if (own_key >= j0 && own_key < j0 + kTcdKeys) {  // this block's own key: its zero row filled in
      const int r = own_key - j0;
      for (int idx = lane; idx < 2 * C; idx += 32) {
        const int c = idx % C;
        *reinterpret_cast<uint4*>((idx < C ? sk : sv) + r * LD + c * 8) =
            *reinterpret_cast<const uint4*>(&new_kv[idx < C ? 0 : 1][c * 8]);
      }
      __syncwarp();
    }
    float sc[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
    const uint32_t kb = smem_u32(sk + k_off);
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t b[4];
      ldsm_x4(b, kb + ks * 16 * 2);
      mma16816<T16>(sc[0], qf[ks], b[0], b[1]);
      mma16816<T16>(sc[1], qf[ks], b[2], b[3]);
    }
    if (j0 + kTcdKeys > kend) {
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (j0 + n * 8 + 2 * tq + (e & 1) >= kend) sc[n][e] = -INFINITY;
    }
    // Key j0 is live, so every row's new max is finite.
    float mx0 = fmaxf(m0, fmaxf(fmaxf(sc[0][0], sc[0][1]), fmaxf(sc[1][0], sc[1][1])));
    float mx1 = fmaxf(m1, fmaxf(fmaxf(sc[0][2], sc[0][3]), fmaxf(sc[1][2], sc[1][3])));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float c0 = fast_exp2(m0 - mx0), c1 = fast_exp2(m1 - mx1);
    m0 = mx0, m1 = mx1;
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      sc[n][0] = fast_exp2(sc[n][0] - mx0);
      sc[n][1] = fast_exp2(sc[n][1] - mx0);
      sc[n][2] = fast_exp2(sc[n][2] - mx1);
      sc[n][3] = fast_exp2(sc[n][3] - mx1);
    }
    l0 = l0 * c0 + (sc[0][0] + sc[0][1] + sc[1][0] + sc[1][1]);
    l1 = l1 * c1 + (sc[0][2] + sc[0][3] + sc[1][2] + sc[1][3]);
    // The S accumulators of the tile's two key n-tiles are exactly the A fragment of O += P V.
    const uint32_t a[4] = {pack2<T16>(sc[0][0], sc[0][1]), pack2<T16>(sc[0][2], sc[0][3]),
                           pack2<T16>(sc[1][0], sc[1][1]), pack2<T16>(sc[1][2], sc[1][3])};
    const uint32_t vb = smem_u32(sv + v_off);
#pragma unroll
    for (int dp = 0; dp < ND / 2; ++dp) {
      o[2 * dp][0] *= c0, o[2 * dp][1] *= c0, o[2 * dp][2] *= c1, o[2 * dp][3] *= c1;
      o[2 * dp + 1][0] *= c0, o[2 * dp + 1][1] *= c0, o[2 * dp + 1][2] *= c1, o[2 * dp + 1][3] *= c1;
      uint32_t b[4];
      ldsm_x4_trans(b, vb + dp * 16 * 2);
      mma16816<T16>(o[2 * dp], a, b[0], b[1]);
      mma16816<T16>(o[2 * dp + 1], a, b[2], b[3]);
    }
    __syncwarp();  // every lane is done with this stage before the next step refills it
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);

  // Merge the warps in warp order, each scaled to the block's max (a warp without tiles has
  // m = -inf and weighs nothing); the rings become the merge buffer.
  cp_async_wait<0>();
  __syncthreads();
  float* red_o = reinterpret_cast<float*>(smem);  // [warp][row][D]
  if (tq == 0) {
    red_m[warp * kTcdRows + g] = m0, red_m[warp * kTcdRows + g + 8] = m1;
    red_l[warp * kTcdRows + g] = l0, red_l[warp * kTcdRows + g + 8] = l1;
  }
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    *reinterpret_cast<float2*>(red_o + (warp * kTcdRows + g) * D + d * 8 + 2 * tq) = make_float2(o[d][0], o[d][1]);
    *reinterpret_cast<float2*>(red_o + (warp * kTcdRows + g + 8) * D + d * 8 + 2 * tq) = make_float2(o[d][2], o[d][3]);
  }
  __syncthreads();
  // Each thread merges four consecutive columns of a row (float4 loads and stores: these merges
  // are latency bound, one block per SM, so fewer and wider accesses shorten them), every column
  // with the same arithmetic in the same order as one at a time.
  constexpr int Q = D / 4;
  const bool out_vec = (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  // Row r's columns d .. d + 3 of the token's output: the weighted sums over their total weight.
  auto store_out = [&](int r, int d, const float4& acc, float sum) {
    float* o4 = out + static_cast<int64_t>(t) * H * D + static_cast<int64_t>(h0 + r) * D + d;
    const float4 res = make_float4(acc.x / sum, acc.y / sum, acc.z / sum, acc.w / sum);
    if (out_vec) *reinterpret_cast<float4*>(o4) = res;
    else o4[0] = res.x, o4[1] = res.y, o4[2] = res.z, o4[3] = res.w;
  };
  for (int idx = tid; idx < gcount * Q; idx += NW * 32) {
    const int r = idx / Q, d = (idx % Q) * 4;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, red_m[w * kTcdRows + r]);
    float sum = 0.0f;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float mw = red_m[w * kTcdRows + r];
      if (mw == -INFINITY) continue;
      const float s = fast_exp2(mw - mx);
      sum += red_l[w * kTcdRows + r] * s;
      const float4 v = *reinterpret_cast<const float4*>(red_o + (w * kTcdRows + r) * D + d);
      acc.x += v.x * s, acc.y += v.y * s, acc.z += v.z * s, acc.w += v.w * s;
    }
    if (direct) {
      store_out(r, d, acc, sum);
    } else {
      // The merge weighs partitions by expf: the max goes back to natural-log units. (part_o is
      // 16-byte aligned: launch_partitioned.)
      const int64_t at = (static_cast<int64_t>(local_t) * H + h0 + r) * nparts + p;
      *reinterpret_cast<float4*>(part_o + at * D + d) = acc;
      if (d == 0) part_ml[2 * at] = mx * kLn2, part_ml[2 * at + 1] = sum;
    }
  }

  if (merge) {
    // Publish this partition, count it in; the last of the token's partitions merges them all.
    // (Tried: the partitions of a token as one thread-block cluster, merged through distributed
    // shared memory without scratch, fence or counter, 128-key partitions where more than 16
    // would be needed: batch 1 unchanged, batch 8 7.08 -> 7.59 ms per step; H100, 8B shape. One
    // atom.acq_rel.gpu by thread 0 in place of the two fences: no change.)
    const int p0 = qo.first / partition, np = qo.pos / partition - p0 + 1;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      int* counter = counters + static_cast<int64_t>(local_t) * gridDim.y + blockIdx.y;
      is_last = atomicAdd(counter, 1) == np - 1;
      if (is_last) *counter = 0;  // every partition has arrived: ready for the next launch
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    // The combine kernel's arithmetic, row by row: maxima, weights expf(m - max), the sums and
    // the weighted outputs in partition order. The merge buffer is free again: the partitions'
    // rows are copied into it in one round of cp.async (where they fit) while the (max, sum)
    // pairs load beside them.
    float* m_s = reinterpret_cast<float*>(smem);  // [row][np] each
    float* l_s = m_s + kTcdRows * np;
    float* w_s = l_s + kTcdRows * np;
    float* o_s = w_s + kTcdRows * np;  // [row][np][D]
    const bool staged = (3 * kTcdRows * np + gcount * np * D) * static_cast<int>(sizeof(float)) <= tcd_smem_bytes<D>();
    const int64_t base = (static_cast<int64_t>(local_t) * H + h0) * nparts + p0;
    if (staged) {
      // Thread item (row r, columns d .. d + 3) copies those columns of every partition.
      for (int idx = tid; idx < gcount * Q; idx += NW * 32) {
        const int r = idx / Q, d = (idx % Q) * 4;
        const float* src = part_o + (base + static_cast<int64_t>(r) * nparts) * D + d;
        float* dst = o_s + static_cast<int64_t>(r) * np * D + d;
        for (int i = 0; i < np; ++i) cp_async16(smem_u32(dst + i * D), src + static_cast<int64_t>(i) * D, true);
      }
      cp_async_commit();
    }
    for (int idx = tid; idx < gcount * np; idx += NW * 32) {
      const int r = idx / np, i = idx - r * np;
      const int64_t at = base + static_cast<int64_t>(r) * nparts + i;
      m_s[idx] = __ldcg(part_ml + 2 * at);
      l_s[idx] = __ldcg(part_ml + 2 * at + 1);
    }
    __syncthreads();
    for (int idx = tid; idx < gcount * np; idx += NW * 32) {
      const int r = idx / np;
      float mx = -INFINITY;
#pragma unroll 8
      for (int i = 0; i < np; ++i) mx = fmaxf(mx, m_s[r * np + i]);
      w_s[idx] = expf(m_s[idx] - mx);
    }
    cp_async_wait<0>();
    __syncthreads();
    for (int idx = tid; idx < gcount * Q; idx += NW * 32) {
      const int r = idx / Q, d = (idx % Q) * 4;
      const float* lr = l_s + r * np;
      const float* wr = w_s + r * np;
      float sum = 0.0f;
#pragma unroll 8
      for (int i = 0; i < np; ++i) sum += lr[i] * wr[i];
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      const float* po = staged ? o_s + static_cast<int64_t>(r) * np * D + d
                               : part_o + (base + static_cast<int64_t>(r) * nparts) * D + d;
#pragma unroll 8
      for (int i = 0; i < np; ++i) {
        const float4 v = staged ? *reinterpret_cast<const float4*>(po + static_cast<int64_t>(i) * D)
                                : __ldcg(reinterpret_cast<const float4*>(po + static_cast<int64_t>(i) * D));
        const float wi = wr[i];
        acc.x += v.x * wi, acc.y += v.y * wi, acc.z += v.z * wi, acc.w += v.w * wi;
      }
      store_out(r, d, acc, sum);
    }
  }
}

template <int D>
constexpr int tcd_merge_max_parts() {
  return tcd_smem_bytes<D>() / (3 * kTcdRows * static_cast<int>(sizeof(float)));
}

// ---------------------------------------------------------------------------------------------
// Launches.

// The partition of a partitioned decode kernel (split or tensor-core): the largest that still
// gives about per_sm blocks per SM (a few waves of those that fit), at least kMinPartition keys: a
// block's keys take dependent rounds, so long partitions leave the memory system idle. It depends
// only on the launch's token count and max_blocks, never on the per-step contexts.
struct Partitions {
  int64_t partition;
  int nparts;
};
Partitions choose_partitions(const AttentionMeta& meta, int64_t block_size, int64_t heads_y, int per_sm) {
  const int64_t max_keys = std::max<int64_t>(1, static_cast<int64_t>(meta.max_blocks) * block_size);
  const int64_t rows = static_cast<int64_t>(meta.tokens) * heads_y;
  int64_t partition = kMinPartition;
  while (partition < max_keys && rows * ((max_keys + 2 * partition - 1) / (2 * partition)) >= per_sm * sm_count())
    partition *= 2;
  return {partition, static_cast<int>((max_keys + partition - 1) / partition)};
}

// Runs a partitioned decode kernel and, unless it merged its partitions itself, the combine
// kernel: launch(grid, t0, nparts, partition, part_ml, part_o) launches the kernel for tokens
// t0 .. t0 + grid.x - 1, with grid.y = heads_y, and returns whether it merged them.
template <typename Launch>
void launch_partitioned(const AttentionMeta& meta, const AttentionShape& shape, int64_t heads_y, int per_sm,
                        int skip_query_len, float* out, cudaStream_t stream, Launch&& launch) {
  const int64_t D = shape.head_dim, H = shape.num_heads;
  const auto [partition, nparts] = choose_partitions(meta, shape.block_size, heads_y, per_sm);
  // Scratch per token: (max, sum) and an unnormalized row per (head, partition). Long prefills
  // run in token slices so scratch stays under about 64 MiB.
  const int64_t per_token = nparts == 1 ? 0 : H * nparts * (D + 2);
  // (4 floats more: padding that aligns part_o below.)
  const int64_t slice = per_token == 0 ? meta.tokens
                                       : std::clamp<int64_t>((kAttentionWorkspaceFloats - 4) / per_token, 1, meta.tokens);
  const int64_t slice_tokens = std::min<int64_t>(slice, meta.tokens);
  const int64_t scratch_floats = per_token * slice_tokens + 4;
  float* scratch = nullptr;
  bool own_scratch = false;
  if (per_token > 0) {
    if (meta.workspace && scratch_floats <= meta.workspace_floats) {
      scratch = meta.workspace;
    } else {
      RH_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&scratch), sizeof(float) * scratch_floats, stream));
      own_scratch = true;
    }
  }
  float* part_ml = scratch;
  // part_o 16-byte aligned (the tensor-core decode kernel stores and loads it as float4).
  float* part_o = scratch ? scratch + (2 * slice_tokens * H * nparts + 3) / 4 * 4 : nullptr;
  for (int64_t t0 = 0; t0 < meta.tokens; t0 += slice_tokens) {
    const int64_t n = std::min<int64_t>(slice_tokens, meta.tokens - t0);
    dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(heads_y), static_cast<unsigned>(nparts));
    const bool merged = launch(grid, static_cast<int>(t0), nparts, static_cast<int>(partition), part_ml, part_o);
    if (nparts > 1 && !merged) {
      dim3 cgrid(static_cast<unsigned>(n), static_cast<unsigned>(H));
      launch_pdl("combine_kernel", combine_kernel, cgrid, dim3(D <= 64 ? 64 : 128), 0, stream, meta, shape,
                 static_cast<int>(t0), nparts, static_cast<int>(partition), skip_query_len, part_ml, part_o, out);
    }
  }
  if (own_scratch) RH_CUDA(cudaFreeAsync(scratch, stream));
}

// Split blocks: about twelve per SM (four waves of the three that fit; 24 and 48 measured slower
// at batch 64 on an H200).
template <typename KV, int G>
void launch_split(const float* qkv, const KV* k_cache, const KV* v_cache, const float* k_scale, const float* v_scale,
                  const AttentionMeta& meta, const AttentionShape& shape, int skip_query_len, float* out,
                  cudaStream_t stream) {
  const int64_t group_size = shape.num_heads / shape.num_kv_heads, nsub = (group_size + G - 1) / G;
  launch_partitioned(meta, shape, shape.num_kv_heads * nsub, 12, skip_query_len, out, stream,
                     [&](dim3 grid, int t0, int nparts, int partition, float* part_ml, float* part_o) {
                       launch_pdl("split_kernel", split_kernel<KV, G>, grid, dim3(kSplitThreads), 0, stream, qkv,
                                  k_cache, v_cache, k_scale, v_scale, meta, shape, t0, nparts, partition,
                                  skip_query_len, out, part_ml, part_o);
                       return false;
                     });
}

// Two blocks per SM (H200, 8B shape, whole decode steps: batch 8 5.985 ms against 6.085 with
// four and 6.369 with eight, batch 1 and 64 within 0.3%; earlier, four against eight: batch 64
// attention 101 us against 116, one sequence of 32k keys 70 us against 92).
constexpr int kTcdPerSm = 2;

int64_t tcd_heads_y(const AttentionShape& shape) {
  return static_cast<int64_t>(shape.num_kv_heads) * ((shape.num_heads / shape.num_kv_heads + kTcdRows - 1) / kTcdRows);
}

// Whether a tensor-core decode launch of nparts partitions (grid.x tokens) merges them in the
// kernel (tc_decode_kernel's counters) rather than through the combine kernel.
template <int D>
bool tcd_merges(const AttentionMeta& meta, int64_t tokens, int64_t heads_y, int nparts) {
  return nparts > 1 && meta.counters != nullptr && tokens * heads_y <= meta.counter_count &&
         nparts <= tcd_merge_max_parts<D>();
}

template <typename T16, int D>
void launch_tc_decode(const float* qkv, T16* k_cache, T16* v_cache, const AttentionMeta& meta,
                      const AttentionShape& shape, int skip_query_len, float* out, const TcdRope& rope,
                      cudaStream_t stream) {
  constexpr int bytes = tcd_smem_bytes<D>();
  once_per_device(reinterpret_cast<const void*>(tc_decode_kernel<T16, D>), [] {
    RH_CUDA(cudaFuncSetAttribute(tc_decode_kernel<T16, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    RH_CUDA(cudaFuncSetAttribute(tc_decode_kernel<T16, D>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared));
  });
  const int64_t heads_y = tcd_heads_y(shape);
  launch_partitioned(meta, shape, heads_y, kTcdPerSm, skip_query_len, out, stream,
                     [&](dim3 grid, int t0, int nparts, int partition, float* part_ml, float* part_o) {
                       const bool merge = tcd_merges<D>(meta, grid.x, heads_y, nparts);
                       launch_pdl("tc_decode_kernel", tc_decode_kernel<T16, D>, grid, dim3(kTcdWarps * 32), bytes,
                                  stream, qkv, k_cache, v_cache, meta, shape, t0, nparts, partition, skip_query_len,
                                  out, part_ml, part_o, merge ? meta.counters : nullptr, rope);
                       return merge;
                     });
}

// Whether launch_tc_decode can take rope_attention's rotation (TcdRope): a decode-only launch, one
// query per sequence, so that a token's only key not yet in the cache is its own.
bool tcd_takes_rope(const AttentionMeta& meta) { return meta.max_query_len == 1; }

template <typename T16>
void launch_tc_decode_dim(const float* qkv, T16* k_cache, T16* v_cache, const AttentionMeta& meta,
                          const AttentionShape& shape, int skip_query_len, float* out, const TcdRope& rope,
                          cudaStream_t stream) {
  switch (shape.head_dim) {
    case 64: launch_tc_decode<T16, 64>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, rope, stream); break;
    case 80: launch_tc_decode<T16, 80>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, rope, stream); break;
    case 96: launch_tc_decode<T16, 96>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, rope, stream); break;
    case 128: launch_tc_decode<T16, 128>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, rope, stream); break;
    default: launch_tc_decode<T16, 256>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, rope, stream); break;
  }
}

template <typename KV>
void launch_split_grouped(const float* qkv, const KV* k_cache, const KV* v_cache, const float* k_scale,
                          const float* v_scale, const AttentionMeta& meta, const AttentionShape& shape,
                          int skip_query_len, float* out, cudaStream_t stream) {
  const int64_t group_size = shape.num_heads / shape.num_kv_heads;
  if (group_size <= 1)
    launch_split<KV, 1>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, skip_query_len, out, stream);
  else if (group_size <= 2)
    launch_split<KV, 2>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, skip_query_len, out, stream);
  else if (group_size <= 4)
    launch_split<KV, 4>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, skip_query_len, out, stream);
  else if constexpr (std::is_same_v<KV, Fp8Kv>)
    // 16 values per load double the merge buffer: larger groups take two or more blocks of 4.
    launch_split<KV, 4>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, skip_query_len, out, stream);
  else
    launch_split<KV, kMaxGroupPerBlock>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, skip_query_len, out,
                                        stream);
}

// The register-resident flash kernel for the sequences of at least kFlashMinQuery queries.
template <typename KV, int D>
void launch_fa(const float* qkv, const KV* k_cache, const KV* v_cache, const AttentionMeta& meta,
               const AttentionShape& shape, float* out, cudaStream_t stream) {
  constexpr int NW = kFaWarps, ST = kFaStages, bytes = fa_smem_bytes<D, ST>(), rows = NW * 16;
  once_per_device(reinterpret_cast<const void*>(fa_kernel<KV, D, NW, ST>), [] {
    RH_CUDA(cudaFuncSetAttribute(fa_kernel<KV, D, NW, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    RH_CUDA(cudaFuncSetAttribute(fa_kernel<KV, D, NW, ST>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared));
  });
  const int64_t qtiles = (meta.max_query_len + rows - 1) / rows;
  RH_CHECK(qtiles <= 65535 && meta.num_seqs <= 65535, "flash attention: too many query tiles or sequences");
  dim3 grid(static_cast<unsigned>(shape.num_heads), static_cast<unsigned>(meta.num_seqs),
            static_cast<unsigned>(qtiles));
  launch_pdl("fa_kernel", fa_kernel<KV, D, NW, ST>, grid, dim3(NW * 32), bytes, stream, qkv, k_cache, v_cache, meta,
             shape, out);
}

// The WMMA flash kernel, for the head dims the register-resident one is not built for. False
// (nothing launched) when its shared memory for this head dim does not fit the device.
template <typename KV>
bool launch_wmma_flash(const float* qkv, const KV* k_cache, const KV* v_cache, const AttentionMeta& meta,
                       const AttentionShape& shape, float* out, cudaStream_t stream) {
  const FlashLayout lay(shape.head_dim);
  if (static_cast<int64_t>(lay.bytes) > max_block_smem()) return false;
  once_per_device(reinterpret_cast<const void*>(flash_kernel<KV>), [] {
    const int most = static_cast<int>(std::min<int64_t>(FlashLayout(kFlashMaxDim).bytes, device_block_smem()));
    RH_CUDA(cudaFuncSetAttribute(flash_kernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, most));
  });
  dim3 grid(static_cast<unsigned>((meta.max_query_len + kFlashRows - 1) / kFlashRows),
            static_cast<unsigned>(meta.num_seqs), static_cast<unsigned>(shape.num_heads));
  launch_pdl("flash_kernel", flash_kernel<KV>, grid, dim3(kFlashThreads), lay.bytes, stream, qkv, k_cache, v_cache,
             meta, shape, out);
  return true;
}

// Shared memory of the tensor-core decode kernel for a head dim it supports.
int tcd_smem_for(int D) {
  switch (D) {
    case 64: return tcd_smem_bytes<64>();
    case 80: return tcd_smem_bytes<80>();
    case 96: return tcd_smem_bytes<96>();
    case 128: return tcd_smem_bytes<128>();
    default: return tcd_smem_bytes<256>();
  }
}

// Rows (token, head group) per SM up to which launches take the tensor-core decode kernel. Since
// it rotates, stores and merges by itself (one kernel where the split path runs three), it is
// ahead at every batch measured: H100, 8B shape, 1024 keys, whole decode steps with a limit of 2
// / 4 / 16 rows per SM: batch 64 13.64 / 10.88 / 10.88 ms, batch 256 33.41 / 33.41 / 23.25 ms
// (batch 1-8 within their limit already).
constexpr int kTcdRowsPerSm = 16;

// Whether a launch goes to the tensor-core decode kernel (16-bit caches; see launch_typed).
template <typename KV>
bool takes_tc_decode(const AttentionMeta& meta, const AttentionShape& shape) {
  if constexpr (sizeof(KV) != 2) {
    return false;
  } else {
    const int D = shape.head_dim;
    return shape.tensor_cores && tcd_dim_ok(D) && tcd_heads_y(shape) * meta.tokens <= kTcdRowsPerSm * sm_count() &&
           tcd_smem_for(D) <= max_block_smem();
  }
}

// rope_store_kernel over one token per block (launch_attention with rope inputs, where the
// tensor-core decode kernel does not take the rotation itself).
template <typename KV>
void launch_rope_store(const RopeInputs& rope, KV* k_cache, KV* v_cache, const AttentionMeta& meta,
                       const AttentionShape& shape, cudaStream_t stream) {
  const int64_t cols = (static_cast<int64_t>(shape.num_heads) + 2 * shape.num_kv_heads) * shape.head_dim;
  const int64_t work = std::max<int64_t>((static_cast<int64_t>(shape.num_heads) + shape.num_kv_heads) * shape.head_dim / 2,
                                         static_cast<int64_t>(shape.num_kv_heads) * shape.head_dim);
  const int threads = static_cast<int>(std::min<int64_t>(512, (work + 31) / 32 * 32));
  launch_pdl("rope_store_kernel", rope_store_kernel<KV>, dim3(static_cast<unsigned>(meta.tokens)), dim3(threads), 0,
             stream, rope.qkv, cols, shape.num_heads, shape.num_kv_heads, shape.head_dim, rope.positions,
             rope.inv_freq, meta.slot_mapping, k_cache, v_cache);
}

template <typename KV>
void launch_typed(const float* qkv, KV* k_cache, KV* v_cache, const AttentionMeta& meta,
                  const AttentionShape& shape, const RopeInputs* rope, float* out, cudaStream_t stream) {
  const int64_t D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads;
  const int64_t cols = (H + 2 * Hkv) * D, kv_cols = Hkv * D;
  const bool split_ok = D % Vec16<KV>::kN == 0 && D <= kSplitMaxDim;
  // The tensor-core decode kernel, up to kTcdRowsPerSm (token, head group) rows per SM: its deep
  // per-warp pipeline, the rotation and store done inside and the in-kernel merge beat the split
  // path's three kernels (H200, 8B shape, 1024 keys, attention alone before those fusions: batch 1
  // 18 us against the split kernel's 41, batch 8 34 against 42; whole steps since, see
  // kTcdRowsPerSm). Like the partition size, the choice depends only on the launch's token count.
  // (Its K/V rings need 52 KB at head_dim 128 and 101 KB at 256: not on every GPU.) Tried: its
  // blocks streaming the o projection's weights into L2 (cp.async.bulk.prefetch) while their own
  // loads wait on latency, so the o product would read from L2: no change at batch 1-64 (H100).
  const bool tcd = takes_tc_decode<KV>(meta, shape);
  // With rope inputs the tensor-core decode kernel rotates and stores a decode launch's K itself.
  const bool fused_rope = rope != nullptr && tcd && tcd_takes_rope(meta);
  if (rope != nullptr && !fused_rope) {
    launch_rope_store<KV>(*rope, k_cache, v_cache, meta, shape, stream);
  } else if (rope == nullptr) {
    const int store_threads = static_cast<int>(std::min<int64_t>(256, (kv_cols + 31) / 32 * 32));
    launch_pdl("store_kv_kernel", store_kv_kernel<KV>, dim3(static_cast<unsigned>(meta.tokens)), dim3(store_threads),
               0, stream, qkv, cols, H * D, kv_cols, meta.slot_mapping, k_cache, v_cache);
  }

  if (!split_ok) {
    dim3 grid(static_cast<unsigned>(meta.tokens), static_cast<unsigned>(H));
    launch_pdl("attention_kernel", attention_kernel<KV>, grid, dim3(kThreads), 0, stream, qkv, k_cache, v_cache, meta,
               shape, out);
    return;
  }
  int skip_query_len = 0;
  if (shape.tensor_cores && D % 16 == 0 && D <= kFlashMaxDim && meta.max_query_len >= kFlashMinQuery) {
    RH_CHECK(meta.num_seqs > 0, "attention meta: num_seqs not set for the tensor-core path");
    if (D == 64)
      launch_fa<KV, 64>(qkv, k_cache, v_cache, meta, shape, out, stream);
    else if (D == 80)
      launch_fa<KV, 80>(qkv, k_cache, v_cache, meta, shape, out, stream);
    else if (D == 96)
      launch_fa<KV, 96>(qkv, k_cache, v_cache, meta, shape, out, stream);
    else if (D == 128)
      launch_fa<KV, 128>(qkv, k_cache, v_cache, meta, shape, out, stream);
    else if (!launch_wmma_flash(qkv, k_cache, v_cache, meta, shape, out, stream))
      skip_query_len = -1;  // too little shared memory: the split kernel takes every query
    skip_query_len = skip_query_len < 0 ? 0 : kFlashMinQuery;
    // A prefill-only launch: the flash kernel took every query (the split kernel would launch a
    // block per token and head group only for each to find nothing to do: 61 us per layer at 4096
    // tokens of the 8B shape).
    if (skip_query_len > 0 && meta.min_query_len >= kFlashMinQuery) return;
  }
  if constexpr (sizeof(KV) == 2) {
    if (tcd) {
      TcdRope tr;
      if (fused_rope) tr = TcdRope{rope->positions, rope->inv_freq};
      launch_tc_decode_dim<KV>(qkv, k_cache, v_cache, meta, shape, skip_query_len, out, tr, stream);
      return;
    }
  }
  launch_split_grouped<KV>(qkv, k_cache, v_cache, nullptr, nullptr, meta, shape, skip_query_len, out, stream);
}

// FP8 cache: the store quantizes each head vector; every query goes through the split kernel
// (exact f32 over the dequantized keys and values).
void launch_fp8(const float* qkv, Fp8Kv* k_cache, Fp8Kv* v_cache, float* k_scale, float* v_scale,
                const AttentionMeta& meta, const AttentionShape& shape, float* out, cudaStream_t stream) {
  const int64_t D = shape.head_dim, H = shape.num_heads, Hkv = shape.num_kv_heads;
  RH_CHECK(D % 16 == 0 && D <= kSplitMaxDim, "CUDA FP8 KV cache needs head_dim a multiple of 16 up to ", kSplitMaxDim,
           ", not ", D);
  const int threads = static_cast<int>(std::min<int64_t>(1024, 2 * Hkv * 32));
  launch_pdl("store_kv_fp8_kernel", store_kv_fp8_kernel, dim3(static_cast<unsigned>(meta.tokens)), dim3(threads), 0,
             stream, qkv, (H + 2 * Hkv) * D, H * D, static_cast<int>(Hkv), static_cast<int>(D), meta.slot_mapping,
             reinterpret_cast<uint8_t*>(k_cache), reinterpret_cast<uint8_t*>(v_cache), k_scale, v_scale);
  launch_split_grouped<Fp8Kv>(qkv, k_cache, v_cache, k_scale, v_scale, meta, shape, 0, out, stream);
}

}  // namespace

void launch_attention_fp8(const float* qkv, void* k_cache, void* v_cache, float* k_scale, float* v_scale,
                          const AttentionMeta& meta, const AttentionShape& shape, float* out, cudaStream_t stream) {
  if (meta.tokens == 0) return;
  launch_fp8(qkv, static_cast<Fp8Kv*>(k_cache), static_cast<Fp8Kv*>(v_cache), k_scale, v_scale, meta, shape, out,
             stream);
}

bool attention_fuses_rope(const AttentionMeta& meta, const AttentionShape& shape, Elem kv_type) {
  if (shape.head_dim < 2 || shape.head_dim % 2 != 0) return false;
  switch (kv_type) {
    case Elem::kF16: return takes_tc_decode<__half>(meta, shape) && tcd_takes_rope(meta);
    case Elem::kBF16: return takes_tc_decode<__nv_bfloat16>(meta, shape) && tcd_takes_rope(meta);
    default: return false;
  }
}

void launch_attention(const float* qkv, void* k_cache, void* v_cache, Elem kv_type, const AttentionMeta& meta,
                      const AttentionShape& shape, float* out, cudaStream_t stream, const RopeInputs* rope) {
  if (meta.tokens == 0) return;
  RH_CHECK(shape.head_dim <= kMaxHeadDim, "CUDA attention supports head_dim up to ", kMaxHeadDim);
  RH_CHECK(rope == nullptr || (shape.head_dim >= 2 && shape.head_dim % 2 == 0 && rope->qkv == qkv),
           "launch_attention: rope over head_dim ", shape.head_dim, " or on other rows");
  switch (kv_type) {
    case Elem::kF32:
      launch_typed(qkv, static_cast<float*>(k_cache), static_cast<float*>(v_cache), meta, shape, rope, out, stream);
      break;
    case Elem::kF16:
      launch_typed(qkv, static_cast<__half*>(k_cache), static_cast<__half*>(v_cache), meta, shape, rope, out, stream);
      break;
    case Elem::kBF16:
      launch_typed(qkv, static_cast<__nv_bfloat16*>(k_cache), static_cast<__nv_bfloat16*>(v_cache), meta, shape, rope,
                   out, stream);
      break;
  }
}

}  // namespace redhare::cuda
