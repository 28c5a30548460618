// Sampling on the GPU: Backend::sample_rows' kernels, which draw exactly as
// sample_row_reference() (backends/sampling.cpp) does, so only token ids and asked-for logprobs
// cross to the host.
//
// Per group of rows (the backend sizes groups to bound scratch memory):
// 1. prepare (a block per row): the row is copied into scratch with its penalties applied (each
//    penalised token listed once, so no two threads touch one logit); the block then finds the
//    first largest penalised logit (the greedy token) and, for rows that want logprobs, the raw
//    row's log-sum-exp (max in f32, sum of exp(x - max) in double, as the reference). Rows that
//    draw at random also write a 64-bit sort key per logit: the row's index above an
//    order-reversed view of the float bits, so one ascending radix sort of all keys puts every
//    row's logits in descending order, row after row; the sort is stable and the ids go in
//    ascending, so equal logits keep the smaller id first (the reference's tie order).
// 2. a device-wide radix sort of (key, id) pairs (CUB), only over the rows that draw.
// 3. weights (many blocks per row): with the row sorted, top-k is a prefix; each block turns a
//    chunk of 4096 candidates into weights exp((x - max) / T) in double and sums them.
// 4. pick (a block per row): probabilities are the weights over their total; min-p cuts at the
//    first candidate below min_p times the first one's probability; top-p at the first prefix
//    whose mass reaches top_p; the pick is the first candidate whose running mass passes
//    u * (kept mass), u = counter_uniform(seed, step, 0). Running masses walk the chunk sums
//    and then scan the crossing chunk element by element (block-wide scans in double). Sums are
//    taken in another order than the reference's sequential loop, so a draw can differ only
//    where u falls within a few ulps of a boundary between two candidates.
// 5. top logprobs (rows that want N > 0): N passes over the raw row, each taking the best logit
//    after the previous one in (value descending, id ascending) order.
#include <cub/device/device_radix_sort.cuh>

#include <cfloat>
#include <climits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"

namespace redhare::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kWeightChunk = 4096;  // sorted candidates per weights_kernel block

// Float bits mapped so that ascending unsigned order is descending float order (+0 and -0 equal).
__device__ __forceinline__ uint32_t descending_bits(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t u = __float_as_uint(f);
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ascending;
}

__device__ __forceinline__ float from_descending_bits(uint32_t d) {
  const uint32_t ascending = ~d;
  const uint32_t u = (ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending;
  return __uint_as_float(u);
}

// The draw's uniform number, bit for bit the host's counter_uniform(seed, step, 0).
__device__ __forceinline__ double device_uniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + step * 0xd1b54a32d192ed03ull;
  for (int i = 0; i < 2; ++i) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
  }
  return __dmul_rn(static_cast<double>(z >> 11), 1.0 / 9007199254740992.0);
}

// (value, index) pairs: larger value first, then smaller index (device_util.cuh).
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return first_largest_beats(v, i, bv, bi); }

// Block-wide reductions: each warp reduces with shuffles, lane 0 of each writes its warp's value,
// then every warp reads the kWarps (= 32) values one per lane and reduces them again, so every
// thread ends with the same result without a further barrier or broadcast.
__device__ __forceinline__ void warp_best(float& v, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (better(ov, oi, v, idx)) {
      v = ov;
      idx = oi;
    }
  }
}

// Block-wide best (value, index) pair; every thread gets the result.
__device__ void block_best(float& v, int& idx, float* sv, int* si) {
  static_assert(kWarps == 32, "one warp value per lane");
  warp_best(v, idx);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with sv / si
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = idx;
  }
  __syncthreads();
  v = sv[lane];
  idx = si[lane];
  warp_best(v, idx);
}

template <typename T>
__device__ T block_sum(T x, T* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  T total = scratch[lane];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  return total;  // the same butterfly order in every warp: the same value everywhere
}

// Inclusive prefix sum of one value per thread over the block; `total` gets the block's sum.
__device__ double block_inclusive_scan(double x, double* scratch, double& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = x;
  __syncthreads();
  // The warps' sums, scanned across lanes: lane w holds warps 0..w.
  double w = scratch[lane];
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, w, o);
    if (lane >= o) w += y;
  }
  const double before = __shfl_sync(0xffffffffu, w, (warp + 31) & 31);
  total = __shfl_sync(0xffffffffu, w, 31);
  return (warp > 0 ? before : 0.0) + x;
}

// The smallest `candidate` over the block (INT_MAX where a thread has none).
__device__ int block_min(int candidate, int* slot) {
  __syncthreads();
  if (threadIdx.x == 0) *slot = INT_MAX;
  __syncthreads();
  if (candidate != INT_MAX) atomicMin(slot, candidate);
  __syncthreads();
  return *slot;
}

__global__ void __launch_bounds__(kThreads)
prepare_kernel(const float* __restrict__ logits, int64_t V, const SampleRowDev* __restrict__ rows,
               const int32_t* __restrict__ pen_tokens, const int32_t* __restrict__ pen_counts,
               float* __restrict__ work, uint64_t* __restrict__ keys, int32_t* __restrict__ ids,
               SampleResultDev* __restrict__ result) {
  __shared__ float sv[kWarps];
  __shared__ int si[kWarps];
  __shared__ double sd[kWarps];
  const int r = blockIdx.x;
  const SampleRowDev p = rows[r];
  const float* raw = logits + static_cast<int64_t>(r) * V;
  float* w = work + static_cast<int64_t>(r) * V;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) w[i] = raw[i];
  __syncthreads();
  for (int j = p.pen_begin + static_cast<int>(threadIdx.x); j < p.pen_end; j += kThreads) {
    float x = w[pen_tokens[j]];
    if (p.repetition_penalty != 1.0f) x = x > 0 ? __fdiv_rn(x, p.repetition_penalty) : __fmul_rn(x, p.repetition_penalty);
    if (pen_counts[j] > 0 && (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f))
      x = __fsub_rn(x, __fadd_rn(__fmul_rn(p.frequency_penalty, static_cast<float>(pen_counts[j])), p.presence_penalty));
    w[pen_tokens[j]] = x;
  }
  __syncthreads();

  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int64_t i = threadIdx.x; i < V; i += kThreads)
    if (better(w[i], static_cast<int>(i), bv, bi) || bi == INT_MAX) {
      bv = w[i];
      bi = static_cast<int>(i);
    }
  block_best(bv, bi, sv, si);
  if (threadIdx.x == 0) {
    result[r].token = bi;
    result[r].lse = 0.0f;
  }

  if (p.logprobs >= 0) {
    float mv = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) mv = fmaxf(mv, raw[i]);
    int unused = 0;
    block_best(mv, unused, sv, si);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) sum += exp(static_cast<double>(__fsub_rn(raw[i], mv)));
    sum = block_sum(sum, sd);
    if (threadIdx.x == 0) result[r].lse = __fadd_rn(mv, static_cast<float>(log(sum)));
  }

  if (p.sort_row >= 0) {
    const uint64_t high = static_cast<uint64_t>(p.sort_row) << 32;
    uint64_t* k = keys + static_cast<int64_t>(p.sort_row) * V;
    int32_t* id = ids + static_cast<int64_t>(p.sort_row) * V;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      k[i] = high | descending_bits(w[i]);
      id[i] = static_cast<int32_t>(i);
    }
  }
}

// The tempered weights of a sorted row, chunk by chunk over many blocks: w_i = exp((x_i - max) / T)
// in double for the first `keep` candidates (top-k), and each chunk's sum, so the draw below walks
// chunk sums and scans at most a chunk or two element by element.
__global__ void __launch_bounds__(kThreads)
weights_kernel(int64_t V, const SampleRowDev* __restrict__ rows, const uint64_t* __restrict__ keys,
               double* __restrict__ weights, double* __restrict__ chunk_sums) {
  __shared__ double sd[kWarps];
  const SampleRowDev p = rows[blockIdx.y];
  if (p.sort_row < 0) return;
  const int64_t nch = (V + kWeightChunk - 1) / kWeightChunk;
  const uint64_t* k = keys + static_cast<int64_t>(p.sort_row) * V;
  const int64_t keep = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  const double inv_t = 1.0 / static_cast<double>(p.temperature);
  const double mx = from_descending_bits(static_cast<uint32_t>(k[0]));
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kWeightChunk;
  double part = 0;
  const int64_t c1 = c0 + kWeightChunk < keep ? c0 + kWeightChunk : keep;
  for (int64_t i = c0 + threadIdx.x; i < c1; i += kThreads) {
    const double x = from_descending_bits(static_cast<uint32_t>(k[i]));
    const double e = exp(__dmul_rn(__dsub_rn(x, mx), inv_t));
    weights[static_cast<int64_t>(p.sort_row) * V + i] = e;
    part += e;
  }
  part = block_sum(part, sd);
  if (threadIdx.x == 0) chunk_sums[static_cast<int64_t>(p.sort_row) * nch + blockIdx.x] = part;
}

__global__ void __launch_bounds__(kThreads)
pick_kernel(int64_t V, const SampleRowDev* __restrict__ rows, const int32_t* __restrict__ ids,
            const double* __restrict__ weights, const double* __restrict__ chunk_sums,
            SampleResultDev* __restrict__ result) {
  __shared__ double sd[kWarps];
  __shared__ int first;
  __shared__ int s_chunk;
  __shared__ double s_carry;
  const SampleRowDev p = rows[blockIdx.x];
  if (p.sort_row < 0) return;
  const int64_t nch = (V + kWeightChunk - 1) / kWeightChunk;
  const int32_t* id = ids + static_cast<int64_t>(p.sort_row) * V;
  const double* e = weights + static_cast<int64_t>(p.sort_row) * V;
  const double* cs = chunk_sums + static_cast<int64_t>(p.sort_row) * nch;
  const int64_t keep = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  double part = 0;
  for (int64_t c = threadIdx.x; c < nch; c += kThreads) part += cs[c];
  const double sum = block_sum(part, sd);
  auto prob = [&](int64_t i) { return __ddiv_rn(e[i], sum); };

  int64_t n = keep;
  if (p.min_p > 0.0f) {
    // The first candidate (after the first) less likely than min_p times the first.
    const double floor = __dmul_rn(static_cast<double>(p.min_p), __ddiv_rn(1.0, sum));
    int cut = INT_MAX;
    for (int64_t i = 1 + threadIdx.x; i < n; i += kThreads)
      if (prob(i) < floor) {
        cut = static_cast<int>(i);
        break;  // this thread's later candidates are larger indices
      }
    cut = block_min(cut, &first);
    if (cut != INT_MAX) n = cut;
  }
  // The first index i < n whose running mass (prob_0 + ... + prob_i) reaches `target` (>= when
  // `inclusive`, else >), or -1. Whole chunks below n are skipped by their sums; the scan then
  // goes element by element from the chunk where the mass crosses (on to n if rounding puts the
  // crossing later).
  auto find = [&](double target, bool inclusive) -> int64_t {
    if (threadIdx.x == 0) {
      double carry = 0;
      int64_t c = 0;
      for (; (c + 1) * kWeightChunk <= n; ++c) {
        const double m = __ddiv_rn(cs[c], sum);
        if (inclusive ? carry + m >= target : carry + m > target) break;
        carry += m;
      }
      s_chunk = static_cast<int>(c);
      s_carry = carry;
    }
    __syncthreads();
    double carry = s_carry;
    for (int64_t base = static_cast<int64_t>(s_chunk) * kWeightChunk; base < n; base += kThreads) {
      const int64_t i = base + threadIdx.x;
      double total;
      const double cum = carry + block_inclusive_scan(i < n ? prob(i) : 0.0, sd, total);
      const bool hit = i < n && (inclusive ? cum >= target : cum > target);
      const int h = block_min(hit ? static_cast<int>(i) : INT_MAX, &first);
      if (h != INT_MAX) return h;
      carry += total;
    }
    return -1;
  };
  if (p.top_p < 1.0f) {
    // The smallest prefix whose mass reaches top_p.
    const int64_t hit = find(static_cast<double>(p.top_p), true);
    if (hit >= 0) n = hit + 1;
  }
  // The kept mass: whole chunks by their sums, the rest element by element.
  const int64_t whole = n / kWeightChunk;
  double kept = 0;
  for (int64_t c = threadIdx.x; c < whole; c += kThreads) kept += __ddiv_rn(cs[c], sum);
  for (int64_t i = whole * kWeightChunk + threadIdx.x; i < n; i += kThreads) kept += prob(i);
  kept = block_sum(kept, sd);
  const double u = __dmul_rn(device_uniform(p.seed, p.step), kept);
  // The first candidate whose running mass passes u (the last one if rounding leaves none).
  const int64_t hit = find(u, false);
  const int64_t pick = hit >= 0 ? hit : n - 1;
  if (threadIdx.x == 0) result[blockIdx.x].token = id[pick];
}

// The drawn token's logprob and the `logprobs` best raw logits, as logprob_of() lists them.
__global__ void __launch_bounds__(kThreads)
logprob_kernel(const float* __restrict__ logits, int64_t V, const SampleRowDev* __restrict__ rows, int max_top,
               SampleResultDev* __restrict__ result, int32_t* __restrict__ top_ids, float* __restrict__ top_lp) {
  __shared__ float sv[kWarps];
  __shared__ int si[kWarps];
  const int r = blockIdx.x;
  const SampleRowDev p = rows[r];
  if (p.logprobs < 0) return;
  const float* raw = logits + static_cast<int64_t>(r) * V;
  const float lse = result[r].lse;
  if (threadIdx.x == 0) result[r].logprob = __fsub_rn(raw[result[r].token], lse);
  const int64_t want = min(p.logprobs, max_top);
  const int n = static_cast<int>(want < V ? want : V);
  float pv = 0.0f;
  int pi = -1;  // the previous pick; -1: none yet
  for (int j = 0; j < n; ++j) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const float x = raw[i];
      const bool after = pi < 0 || x < pv || (x == pv && i > pi);
      if (after && (bi == INT_MAX || better(x, static_cast<int>(i), bv, bi))) {
        bv = x;
        bi = static_cast<int>(i);
      }
    }
    block_best(bv, bi, sv, si);
    if (bi == INT_MAX) break;
    if (threadIdx.x == 0) {
      top_ids[static_cast<int64_t>(r) * max_top + j] = bi;
      top_lp[static_cast<int64_t>(r) * max_top + j] = __fsub_rn(bv, lse);
    }
    pv = bv;
    pi = bi;
  }
}

}  // namespace

void launch_sample_prepare(const float* logits, int64_t V, const SampleRowDev* rows, int64_t num_rows,
                           const int32_t* pen_tokens, const int32_t* pen_counts, float* work, uint64_t* keys,
                           int32_t* ids, SampleResultDev* result, cudaStream_t stream) {
  if (num_rows == 0) return;
  prepare_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(logits, V, rows, pen_tokens, pen_counts,
                                                                          work, keys, ids, result);
  RH_CUDA_LAUNCHED("sample prepare_kernel");
}

int sample_sort_end_bit(int64_t sorted_rows) {
  int bits = 0;
  while ((int64_t{1} << bits) < sorted_rows) ++bits;
  return 32 + bits;
}

size_t sample_sort_temp_bytes(int64_t items, int64_t sorted_rows) {
  size_t bytes = 0;
  RH_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint64_t*>(nullptr),
                                          static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                          static_cast<int32_t*>(nullptr), items, 0,
                                          sample_sort_end_bit(sorted_rows)));
  return bytes;
}

void launch_sample_sort(void* temp, size_t temp_bytes, const uint64_t* keys_in, uint64_t* keys_out,
                        const int32_t* ids_in, int32_t* ids_out, int64_t items, int64_t sorted_rows,
                        cudaStream_t stream) {
  RH_CUDA(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, ids_in, ids_out, items, 0,
                                          sample_sort_end_bit(sorted_rows), stream));
}

int64_t sample_weight_chunks(int64_t V) { return (V + kWeightChunk - 1) / kWeightChunk; }

void launch_sample_pick(int64_t V, const SampleRowDev* rows, int64_t num_rows, const uint64_t* keys,
                        const int32_t* ids, double* weights, double* chunk_sums, SampleResultDev* result,
                        cudaStream_t stream) {
  if (num_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(sample_weight_chunks(V)), static_cast<unsigned>(num_rows));
  weights_kernel<<<grid, kThreads, 0, stream>>>(V, rows, keys, weights, chunk_sums);
  RH_CUDA_LAUNCHED("sample weights_kernel");
  pick_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(V, rows, ids, weights, chunk_sums, result);
  RH_CUDA_LAUNCHED("sample pick_kernel");
}

void launch_sample_logprobs(const float* logits, int64_t V, const SampleRowDev* rows, int64_t num_rows, int max_top,
                            SampleResultDev* result, int32_t* top_ids, float* top_lp, cudaStream_t stream) {
  if (num_rows == 0) return;
  logprob_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(logits, V, rows, max_top, result,
                                                                           top_ids, top_lp);
  RH_CUDA_LAUNCHED("sample logprob_kernel");
}

}  // namespace redhare::cuda
