// The batch-1 decode product on Hopper and later (sm_90+): out[N] = x[K] @ w[N, K]^T, bf16 or
// f16 weights, f32 activations and sums, with launch_gemv's norm prologue and epilogues; and the
// same on block-scaled FP8 weights (kF8B128 with its 128 x 128 block table) with the W8A16
// numerics (below).
//
// Why another kernel: a decode step is a chain of dependent products, and with one warp per
// weight row and loads into registers (gemv_kernel) the memory pipeline drains at the end of
// each product and fills again after the next one has waited for its activations, since the next
// product's blocks are resident only as this one's leave. bench_stream_chain measured the chain of
// the 8B shape's products so: register loads, weights only read, 95% of the read bandwidth; the
// same multiplying 90%; this kernel's scheme 99% reading, 96% multiplying (H100).
//
// The scheme: one block per SM. A producer thread takes runs of kBulkGrab output columns from a
// counter of the launch and copies each column's weight row (two for SwiGLU) into a stage of a
// shared-memory ring of ~95-105 KB with cp.async.bulk (the copy engine, completion counted on an
// mbarrier per stage), evicting first from L2. Weights are constant, so the producer starts
// before the block waits for the previous kernel (pdl.cuh), and the block lets the next kernel
// in at once: two blocks fit an SM (a large and a small footprint in turn, kBulkLargeBlock), so
// the next product's ring is full before its wait ends, and no product starts with an empty
// pipeline.
//
// The ring order: the next product's producer on an SM starts filling its ring only once this
// product's producer there has issued its last copy (per-SM tags, g_sm_started / g_sm_issued;
// bounded by kRingOrderTimeoutNs, a preference and never a dependency). Filled at once, that ring
// competed with this product's copies and was full long before this product ended; from the last
// copy on, until the next product's consumers were past their wait and norm, neither ring asked
// DRAM for anything (~3 us per product boundary: products streamed back to back without waiting
// for each other took 8.5 / 5.9 / 37.3 / 19.2 us against 11.1 / 7.6 / 40.0 / 22.2 for the 8B
// FP8 shapes). Filled after it, the next ring takes DRAM through that gap. H100, batch-1 8B FP8
// steps in one lease: 3.284 / 3.316 ms against 3.412 / 3.400, and 3.365 / 3.358 starting one run
// (kGrab columns) before the last copy; bf16 in another lease unchanged (5.363 against 5.353).
//
// CW consumer warps multiply: thread t owns
// the 16-byte words t + 32 CW j (j < P) of every row and holds the matching activations
// (RMS-normalized when norm_w is set) in registers for the whole product; it takes its words of a
// stage into registers, the warp hands the stage back, multiplies and keeps its warp sum per
// column in shared memory. Every kBulkMaxCols columns, and at the producer's end mark, the
// consumers add each column's warp sums in warp order and store it with the epilogue
// (store_product, swiglu_product).
//
// Why a counter rather than a fixed share per block: blocks launched early do not always land one
// to an SM (beside the attention kernel, or three to an SM with a 64 KB ring), and with fixed
// shares the doubled-up blocks set the product's time. H100, batch-1 8B steps: fixed shares
// 5.55-5.56 ms, the counter 5.42-5.43, and with the attention kernel letting this product in at
// its start (AttentionShape::let_in_successor) 5.36. (A first version had the producer store each
// column before refilling its stage: the residual add's load stalled the copies.)
//
// FP8 weights (launch_bulk_gemv_fp8): a stage also carries the block-table rows of its columns
// (a consumer waiting on a global load for its scales cost the gate_up product 20% streaming from
// DRAM), FP8 rows of one word per thread come four columns to a stage and of two words two
// (kStageCols), and runs of kGrab = 8 columns keep a run's bytes at 32 KB (K = 4096).
// bench_fp8_decode, H100, each launch reading another copy of the weights, two columns per stage
// (us, against launch_fp8_decode's tensor-core kernel): qkv 11.3 / 11.8, o 7.7 / 8.5, gate_up 39.0
// / 41.8, down 22.3 / 22.6. Batch-1 8B steps: 3.50 ms against 3.61 at first (RESULTS has later
// figures). The
// multiply converts e4m3 pairs to f16 pairs, each f16 to f32 (HADD2.F32) and an FFMA per weight;
// the tensor cores instead (one m16n8k16 per 128-value block of two rows, the activations as f16
// B fragments) were no faster per product and slower per step (RESULTS, twelfth session). Smaller
// models lose: Llama-3.2-1B steps took 1.148 ms with every product here (K = 2048 on 4 consumer
// warps), 1.076 with only its down product (K = 8192, N = 2048) here, 0.939 with none, so the
// backend takes this kernel for FP8 products of N and K >= 4096 only (bulk_gemv_fp8_preferred;
// Qwen3-8B: 3.78 ms against 3.91). Mixing it with the tensor-core kernel in one step costs (8B,
// gate_up alone on the tensor-core kernel: 3.89-3.96 ms).
//
// Numerics: f32 products summed per thread in word order, then over the warp (shuffles) and
// over the warps in order, whichever block takes the column: a different order than gemv_kernel's,
// so the two agree to rounding (the tests' 1e-5 relative bound), each deterministic. The norm
// sums squares in double as stage_rms_norm does, but its 1 / rms is applied to each column's sum
// (inv * sum_k w_k (x_k g_k)), not to every activation (sum_k w_k (x_k inv g_k)): the same up to
// f32 rounding, and the consumers start on their stages without first waiting for every warp's
// sum of squares. H100, batch-1 Llama-3.1-8B FP8 steps, one lease: 3.223 / 3.216 ms against
// 3.266 / 3.272 with the scale applied first (bf16 weights: 5.287 against 5.286). FP8: the
// activations stay f32 (launch_fp8_decode's tensor cores round them to bf16; here they feed f32
// multiplies, so there is nothing to gain from rounding them), the e4m3 weights are exact in f32
// and so are their products; a thread's 16 products of a word are summed, times the word's block
// scale, into its column sum.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/fp8_device.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

constexpr int kBulkRingBytes = 96 * 1024;  // per block: this product's and the next one's fit an SM
// Where an SM holds 228 KB of shared memory (Hopper), the launches' blocks alternate between these
// footprints (static and dynamic shared memory; the ring takes what the static part leaves), the
// product after attention large. Blocks scheduled while others still hold part of the GPU (an
// attention kernel's, a product's that let this one in) land where there is room, and two 96 KB
// blocks of one launch fit an SM: then half the SMs ran two blocks of the product and half none,
// and each product after it was scheduled the same way (block start times and SM ids, H100, 8B
// steps: 53 to 66 SMs with two blocks of each product where attention let the o product in). Two
// large blocks do not fit an SM, a large and a small one do, and a small one beside a large one
// leaves no room for a second: every launch but the first after an idle GPU gets one block per
// SM. The small footprint also leaves room for two tensor-core decode attention blocks.
constexpr int kBulkLargeBlock = 114 * 1024, kBulkSmallBlock = 103 * 1024;
constexpr int kBulkMaxStages = 16;
// Columns (times rows per column) whose warp sums a block keeps in shared memory (8 KB at 8
// consumer warps) before it stores them: a block's share of a wider product (an LM head) goes
// in chunks of this many.
constexpr int kBulkMaxCols = 256;
// Columns a block takes at a time from its launch's counter.
constexpr int kBulkGrab = 4;
// The launches' column counters, one per launch in turn on each device: a launch's last block
// puts its counter back to 0, and a counter comes round again only kBulkCounters launches later,
// long after (a stream has at most a few kernels resident at once). Two streams running these
// products on one device at the same time could share one; the engine drives a device from one
// stream.
constexpr int kBulkCounters = 64;
__device__ int g_bulk_counters[kBulkCounters];
// Per SM, for the ring order (above): the tag of the last launch whose block
// started there, and of the last whose producer there has issued all its copies. A launch's tag is
// its counter's index + 1.
constexpr int kMaxSms = 1024;
__device__ int g_sm_started[kMaxSms], g_sm_issued[kMaxSms];
// How long a producer waits at most for the previous product's producer on its SM (ns): the order
// is a preference, never a dependency.
constexpr uint64_t kRingOrderTimeoutNs = 50000;

__device__ __forceinline__ unsigned sm_id() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// A barrier of the first `threads` threads of the block (the consumer warps), not the producer.
template <int threads>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(threads) : "memory");
}

// mbarrier and bulk-copy primitives (PTX, sm_90). They compile to nothing for older targets,
// where the host never launches this kernel.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define REDHARE_BULK 1
#endif
struct Bulk {
  __device__ static void init(uint64_t* bar, uint32_t count) {
#ifdef REDHARE_BULK
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#endif
  }
  // Makes the initialized barriers visible to the copy engine.
  __device__ static void fence_init() {
#ifdef REDHARE_BULK
    asm volatile("fence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;" ::: "memory");
#endif
  }
  __device__ static void wait(uint64_t* bar, uint32_t parity) {
#ifdef REDHARE_BULK
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "WAIT_%=:\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
        "@!done bra WAIT_%=;\n}" ::"r"(smem_u32(bar)),
        "r"(parity)
        : "memory");
#endif
  }
  __device__ static void arrive(uint64_t* bar) {
#ifdef REDHARE_BULK
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
#endif
  }
  // Announces `bytes` more to arrive on bar's current phase (and arrives).
  __device__ static void expect(uint64_t* bar, uint32_t bytes) {
#ifdef REDHARE_BULK
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
  }
  // `bytes` (a multiple of 16, both addresses 16-byte aligned) global -> shared, counted on bar.
  __device__ static void copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
#ifdef REDHARE_BULK
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::
            "r"(smem_u32(dst)),
        "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
        : "memory");
#endif
  }
  // The FP8 block table is read again by every block: kept in L2.
  __device__ static uint64_t evict_last() {
    uint64_t policy = 0;
#ifdef REDHARE_BULK
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
#endif
    return policy;
  }
  // Weights are read once per step: first out of L2, so they do not evict the activations.
  __device__ static uint64_t evict_first() {
    uint64_t policy = 0;
#ifdef REDHARE_BULK
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
#endif
    return policy;
  }
};
#undef REDHARE_BULK

// The weight formats: bf16 or f16 rows, or E4m3Blocks: kF8B128 rows in the device layout
// (fp8_device.cuh), e4m3 bytes with one f32 scale per 128 x 128 block (the layout's block table).
struct E4m3Blocks {};
template <typename W>
constexpr bool kIsFp8 = std::is_same_v<W, E4m3Blocks>;
template <typename W>
constexpr int kValueBytes = kIsFp8<W> ? 1 : static_cast<int>(sizeof(W));
// Values per 16-byte word, and the float4s of activations they meet.
template <typename W>
constexpr int kWordValues = 16 / kValueBytes<W>;
// Columns per stage. A consumer warp's work on a stage is one dependent chain (wait, words into
// registers, multiply, a shuffle sum per column), which it cannot overlap with the next stage's:
// a stage of few bytes per thread leaves the consumers slower than the copies. In place in 8B
// decode steps (H100, each stage's arrival timed in the first blocks) a one-column FP8 stage of
// K = 4096 took 0.5 us, so the qkv and o products ran at 2.2 TB/s even from a full ring. So: FP8
// rows of one word per thread come four columns to a stage, FP8 rows of two words and 16-bit rows
// of up to two words (K <= 8192) two (SwiGLU FP8: two gate and two up rows), each stage's columns
// summed side by side so their shuffles overlap. Batch-1 8B steps, one lease: FP8 3.62 -> 3.52 ms
// (four columns at one word), bf16 5.65 -> 5.40 (two columns at up to two words); SwiGLU gate_up
// on FP8 streamed from DRAM (bench_fp8_decode): 45.1 us with one column per stage, 39.0 with two.
template <typename W, int P, int R>
constexpr int kStageCols = kIsFp8<W> && R == 1 && P == 1 ? 4 : P <= 2 && (kIsFp8<W> || R == 1) ? 2 : 1;
// A stage: its R x G weight rows of `words` 16-byte words, then (FP8) the block-table row of each
// of its R row groups (K / 128 floats: a stage's G columns lie in one 128-row block, as runs of
// columns start at multiples of kGrab), copied with the rows so that no consumer waits on a
// global load; rounded up to 128 bytes.
template <typename W, int P, int R>
constexpr int64_t stage_bytes(int64_t words) {
  const int64_t rows = int64_t{R} * kStageCols<W, P, R> * words * 16;
  const int64_t scales = kIsFp8<W> ? int64_t{R} * (words * 16 / kBK) * static_cast<int64_t>(sizeof(float)) : 0;
  return (rows + scales + 127) / 128 * 128;
}
// Columns a block takes at a time from its launch's counter: about 32 KB of weights at K = 4096.
template <typename W>
constexpr int kGrab = kIsFp8<W> ? 2 * kBulkGrab : kBulkGrab;

// The weights of one 16-byte word times the activations they meet, added to acc (16-bit weights),
// or their sum (FP8: the caller multiplies it by the word's block scale). FP8 values become f32
// exactly (e4m3 -> f16 -> f32) and so do their products with the bf16-rounded activations.
template <typename W>
__device__ __forceinline__ float word_dot(const uint4& raw, const float (&a)[kWordValues<W>], float acc) {
  if constexpr (kIsFp8<W>) {
    const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = e4m3x2_to_f16x2(u[i]), hi = e4m3x2_to_f16x2(u[i] >> 16);
      const float2 l = __half22float2(*reinterpret_cast<const __half2*>(&lo));
      const float2 h = __half22float2(*reinterpret_cast<const __half2*>(&hi));
      s = fmaf(l.x, a[4 * i], s);
      s = fmaf(l.y, a[4 * i + 1], s);
      s = fmaf(h.x, a[4 * i + 2], s);
      s = fmaf(h.y, a[4 * i + 3], s);
    }
    return s;
  } else {
    const W* e = reinterpret_cast<const W*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc = fmaf(to_f32(e[i]), a[i], acc);
    return acc;
  }
}

// N sums over the warp (N = 1, 2 or 4) in 6 shuffles for four and 5 for two, not 5 N: the
// halves of the warp swap half of the sums (the lower half keeps the first ones), then the
// quarters, until each group of 32 / N lanes holds one sum, which it adds up alone; lane
// k * 32 / N ends with sum k in v[0]. Every addition is one that warp_sum makes for that sum at
// that lane, so the bits are the same. H100, batch-1 8B FP8 steps (four sums per stage: 6
// shuffles instead of 20), one lease: 3.238-3.249 ms against 3.271-3.275.
template <int N>
__device__ __forceinline__ void warp_sums(float* v) {
  static_assert(N == 1 || N == 2 || N == 4, "warp_sums: 1, 2 or 4 sums");
  const int lane = threadIdx.x % 32;
  int count = N, o = 16;
#pragma unroll
  for (; count > 1; count /= 2, o /= 2) {
    const bool hi = lane & o;
#pragma unroll
    for (int j = 0; j < count / 2; ++j) {
      const float keep = hi ? v[j + count / 2] : v[j], send = hi ? v[j] : v[j + count / 2];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
#pragma unroll
  for (; o > 0; o /= 2) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
}

// R = 2: SwiGLU, columns n and cols + n of w together. (CW + 1) warps: CW consume, the last one's
// first lane produces. FP8 weights: `scales` is the block table ([ceil(N / 128)][K / 128]).
template <typename W, int CW, int P, int R>
__global__ void __launch_bounds__((CW + 1) * 32, 2)
bulk_gemv_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, const void* __restrict__ w,
                 const float* __restrict__ scales, const float* __restrict__ bias, int64_t N, int64_t K, int mode,
                 int* __restrict__ counter, float* __restrict__ out, int ring_bytes, int tag, int prev_tag) {
  constexpr int kConsumers = CW * 32;
  constexpr int kV = kWordValues<W>, kF4 = kV / 4;                       // values, float4s per word
  constexpr int G = kStageCols<W, P, R>;
  constexpr int64_t kRowWords = static_cast<int64_t>(kConsumers) * P;  // K * value bytes / 16
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ uint64_t full[kBulkMaxStages], empty[kBulkMaxStages];
  __shared__ float part[kBulkMaxCols / R][R][CW];  // warp sums of each column
  __shared__ double red[CW];
  __shared__ int64_t col_of[kBulkMaxStages];      // the first column a stage holds; -1: no more
  __shared__ int col_count[kBulkMaxStages];       // and how many (up to G)
  __shared__ int64_t col_at[kBulkMaxCols / R];    // the column of each kept sum; -1: none
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t cols = R == 2 ? N / 2 : N;
  constexpr int64_t kStageWords = stage_bytes<W, P, R>(kRowWords) / 16;
  constexpr int kKB = static_cast<int>(kRowWords * 16 / kBK);  // FP8: 128-value blocks per row
  const int stages = min(kBulkMaxStages, static_cast<int>(ring_bytes / (kStageWords * 16)));
  if (tid == 0) {
    for (int i = 0; i < stages; ++i) Bulk::init(&full[i], 1), Bulk::init(&empty[i], CW);
    Bulk::fence_init();
  }
  __syncthreads();
  pdl_trigger();

  if (warp == CW) {
    // The producer: the block's columns one after another, G at a time into stage i % stages once
    // the consumers have handed it back, then an end mark. The columns come in runs of kGrab
    // taken from the launch's counter (the next run asked for while this one is copied), so a
    // block that shares its SM with another of the same kernel (blocks launched early can land
    // two to an SM) simply takes fewer. It touches nothing the previous kernel writes, so it does
    // not wait for it.
    if (lane == 0) {
      // The ring order: where the previous product (prev_tag) has a block on this SM, this ring
      // starts filling once that block's producer has issued its last copy.
      const unsigned sm = sm_id() % kMaxSms;
      const int there = atomicExch(&g_sm_started[sm], tag);
      if (prev_tag != 0 && there == prev_tag) {
        const uint64_t t0 = global_ns();
        while (*static_cast<volatile int*>(&g_sm_issued[sm]) != prev_tag && global_ns() - t0 < kRingOrderTimeoutNs)
          __nanosleep(64);
      }
      const uint64_t policy = Bulk::evict_first(), keep = Bulk::evict_last();
      const uint32_t bytes = static_cast<uint32_t>(kRowWords * 16), table_bytes = kKB * sizeof(float);
      const uint4* wv = static_cast<const uint4*>(w);
      constexpr int kRun = kGrab<W>;
      const int64_t runs = (cols + kRun - 1) / kRun;
      // Every block takes numbers until one is past the last run: runs + gridDim.x numbers in
      // all, so the block that takes the last of them puts the counter back for the next launch.
      auto take = [&] {
        const int64_t run = atomicAdd(counter, 1);
        if (run == runs + gridDim.x - 1) atomicExch(counter, 0);
        return run;
      };
      int64_t run = take();
      int64_t a = run * kRun, b = run < runs ? min(cols, a + kRun) : a;
      int i = 0;
      while (a < b) {
        const int64_t next = take();
        for (int64_t c = a; c < b; c += G, ++i) {
          const int st = i % stages;
          const int n = static_cast<int>(b - c < G ? b - c : G);
          if (i >= stages) Bulk::wait(&empty[st], (i / stages - 1) & 1);
          col_of[st] = c;  // published by the arrive below
          if constexpr (G > 1) col_count[st] = n;
          Bulk::expect(&full[st], R * (n * bytes + (kIsFp8<W> ? table_bytes : 0)));
          // A stage's rows [r][g]: columns c .. c + n - 1 are consecutive rows of w.
          uint4* stage = ring + st * kStageWords;
#pragma unroll
          for (int r = 0; r < R; ++r) {
            if constexpr (kIsFp8<W>)
              Bulk::copy(stage + R * G * kRowWords + r * (kKB / 4), scales + ((c + r * cols) >> 7) * kKB, table_bytes,
                         &full[st], keep);
            Bulk::copy(stage + r * G * kRowWords, wv + (c + r * cols) * kRowWords, n * bytes, &full[st], policy);
          }
        }
        a = next * kRun, b = next < runs ? min(cols, a + kRun) : a;
      }
      const int st = i % stages;
      if (i >= stages) Bulk::wait(&empty[st], (i / stages - 1) & 1);
      col_of[st] = -1;
      Bulk::arrive(&full[st]);
      atomicExch(&g_sm_issued[sm], tag);  // the next product's ring here may fill
    }
    return;
  }

  // The consumers: this thread's activations (words tid + kConsumers * j), f32 for every weight
  // type, times the norm weights if asked (see Numerics above). The norm weights are constant:
  // loaded before the wait where registers allow.
  constexpr bool kHoldNorm = P * kF4 <= 8;
  constexpr int kHeld = kHoldNorm ? P * kF4 : 1;
  const float4* nv = reinterpret_cast<const float4*>(norm_w);
  float4 nw[kHeld];
  if (kHoldNorm && norm_w) {
#pragma unroll
    for (int j = 0; j < P; ++j)
#pragma unroll
      for (int f = 0; f < kF4; ++f) nw[(j * kF4 + f) % kHeld] = nv[kF4 * (tid + kConsumers * j) + f];
  }
  pdl_wait();
  float a[P][kV];
  {
    const float4* xv = reinterpret_cast<const float4*>(x);
    double ss = 0;
#pragma unroll
    for (int j = 0; j < P; ++j)
#pragma unroll
      for (int f = 0; f < kF4; ++f) {
        const float4 q = xv[kF4 * (tid + kConsumers * j) + f];
        a[j][4 * f] = q.x, a[j][4 * f + 1] = q.y, a[j][4 * f + 2] = q.z, a[j][4 * f + 3] = q.w;
#pragma unroll
        for (int e = 0; e < 4; ++e) ss += static_cast<double>(a[j][4 * f + e]) * a[j][4 * f + e];
      }
    if (norm_w) {
      // The row's 1 / rms needs every warp's sum of squares: it scales the column sums at the
      // flush (red is read past the flush's barrier), so no warp waits for the others here.
      ss = warp_sum(ss);
      if (lane == 0) red[warp] = ss;
#pragma unroll
      for (int j = 0; j < P; ++j)
#pragma unroll
        for (int f = 0; f < kF4; ++f) {
          const float4 wf = kHoldNorm ? nw[(j * kF4 + f) % kHeld] : nv[kF4 * (tid + kConsumers * j) + f];
          a[j][4 * f] = __fmul_rn(a[j][4 * f], wf.x), a[j][4 * f + 1] = __fmul_rn(a[j][4 * f + 1], wf.y);
          a[j][4 * f + 2] = __fmul_rn(a[j][4 * f + 2], wf.z), a[j][4 * f + 3] = __fmul_rn(a[j][4 * f + 3], wf.w);
        }
    }
  }
  // Stage after stage until the producer's end mark; every kChunk stages (and at the end) the
  // kept warp sums, added in warp order, go to the output with the epilogue. A stage is taken
  // into registers (Held) and handed back before its multiply.
  //
  // kPipe: the next stage is taken before this one's multiply, so that its wait and shared-memory
  // loads overlap this one's arithmetic and shuffles (a consumer warp otherwise runs one stage
  // as one dependent chain). 16-bit rows of up to K = 4096 only, where the second register set
  // fits. H100, batch-1 Llama-3.1-8B bf16 steps, one lease: 5.346 ms against 5.410. On FP8 rows it
  // sped up the products alone (bench_fp8_decode, us: qkv 10.27 -> 9.87, o 7.88 -> 7.69) but
  // slowed whole steps, 3.445 / 3.501 ms against 3.296 / 3.280: the kernel's registers rise from
  // 72 to 96 per thread, and a qkv block of 96 x 288 registers no longer leaves room on its SM for
  // two tensor-core decode attention blocks (168 x 128 each), which then wait for it to exit
  // before their loads can start (kernels_attention.cu). Shapes where a + v exceed 32 registers
  // would spill.
  constexpr int kChunk = kBulkMaxCols / (R * G);
  constexpr int kSP = kIsFp8<W> ? P : 1;
  struct Held {
    int64_t c;  // first column; -1: the end mark
    int n;      // columns (up to G)
    uint4 v[R][G][P];
    float s[R][kSP];  // FP8: the block scales of this thread's words
  };
  constexpr bool kPipe = !kIsFp8<W> && R * G * P * 4 + P * kV <= 32;
  auto take_stage = [&](int i, Held& h) {
    const int st = i % stages;
    Bulk::wait(&full[st], (i / stages) & 1);
    h.c = col_of[st];
    if (h.c < 0) return;
    h.n = G > 1 ? col_count[st] : 1;
    const uint4* stage = ring + st * kStageWords;  // 16-bit rows (kPipe): no block scales
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int j = 0; j < P; ++j)
          h.v[r][g][j] = G == 1 || g < h.n ? stage[(r * G + g) * kRowWords + tid + kConsumers * j]
                                           : make_uint4(0, 0, 0, 0);
    // The words (and the columns) are in registers: the stage goes back.
    __syncwarp();
    if (lane == 0) Bulk::arrive(&empty[st]);
  };
  // Stage i's columns (held in h) multiplied, their warp sums kept in row i - base of the table.
  auto multiply = [&](int i, int base, const Held& h) {
    float acc[R][G];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int g = 0; g < G; ++g) {
        acc[r][g] = 0.0f;
#pragma unroll
        for (int j = 0; j < P; ++j) {
          if constexpr (kIsFp8<W>)
            acc[r][g] = fmaf(word_dot<W>(h.v[r][g][j], a[j], 0.0f), h.s[r][j], acc[r][g]);
          else
            acc[r][g] = word_dot<W>(h.v[r][g][j], a[j], acc[r][g]);
        }
      }
    // Lane k * 32 / (R * G) holds sum k = r * G + g.
    warp_sums<R * G>(&acc[0][0]);
    if (lane % (32 / (R * G)) == 0) {
      const int k = lane / (32 / (R * G));
      part[(i - base) * G + k % G][k / G][warp] = acc[0][0];
    }
    if constexpr (G == 1) {
      if (tid == 0) col_at[i - base] = h.c;
    } else {
      if (tid < G) col_at[(i - base) * G + tid] = tid < h.n ? h.c + tid : -1;
    }
  };
  // After stage i: every kChunk stages, and at the end mark, the kept sums of the stages since
  // `base`, added in warp order, go out with the epilogue. Returns true at the end mark.
  auto flush = [&](int i, int& base, bool last) {
    if (!last && i - base != kChunk - 1) return false;
    const int end = last ? i : i + 1;
    consumers_sync<kConsumers>();
    float inv = 1.0f;  // the norm's 1 / rms (every warp's red is in)
    if (norm_w) {
      double total = 0;
#pragma unroll
      for (int c = 0; c < CW; ++c) total += red[c];
      inv = rms_inverse(total, K, eps);
    }
    for (int k = tid; k < (end - base) * G; k += kConsumers) {
      const int64_t col = col_at[k];
      if (G > 1 && col < 0) continue;
      float sum[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        sum[r] = 0.0f;
#pragma unroll
        for (int q = 0; q < CW; ++q) sum[r] += part[k][r][q];
        if (norm_w) sum[r] = __fmul_rn(sum[r], inv);
      }
      if constexpr (R == 2)
        out[col] = swiglu_product(sum[0], sum[1], bias, col, cols);
      else
        store_product(out + col, sum[0], bias, col,
                      mode == static_cast<int>(LinearMode::kAccumulate));
    }
    if (last) return true;
    consumers_sync<kConsumers>();  // the table is reused
    base = end;
    return false;
  };
  int base = 0;
  if constexpr (kPipe) {
    // Stage i in h, the next one taken into `next` before the multiply; two register sets in turn
    // (no copies between them).
    auto run_stage = [&](int i, Held& h, Held& next) {
      if (h.c >= 0) {
        take_stage(i + 1, next);
        multiply(i, base, h);
      }
      return flush(i, base, h.c < 0);
    };
    Held h0, h1;
    take_stage(0, h0);
    for (int i = 0;; i += 2) {
      if (run_stage(i, h0, h1)) break;
      if (run_stage(i + 1, h1, h0)) break;
    }
  } else {
    // The same as take_stage, written out: as a lambda here the K = 16384 16-bit kernel spilled
    // (212 bytes; ptxas, sm_90).
    for (int i = 0;; ++i) {
      const int st = i % stages;
      Bulk::wait(&full[st], (i / stages) & 1);
      Held h;
      h.c = col_of[st];
      if (h.c >= 0) {
        h.n = G > 1 ? col_count[st] : 1;
        const uint4* stage = ring + st * kStageWords;
        // FP8: word j of this thread lies in block (tid + kConsumers j) / 8, the same for the
        // stage's G columns.
        float s[R][kSP];
        if constexpr (kIsFp8<W>) {
          const float* table = reinterpret_cast<const float*>(stage + R * G * kRowWords);
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int j = 0; j < P; ++j)
              s[r][j] = table[r * kKB + (tid + kConsumers * j) * kV / kBK];
        }
        uint4 v[R][G][P];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < P; ++j)
              v[r][g][j] = G == 1 || g < h.n ? stage[(r * G + g) * kRowWords + tid + kConsumers * j]
                                             : make_uint4(0, 0, 0, 0);
        __syncwarp();
        if (lane == 0) Bulk::arrive(&empty[st]);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if constexpr (kIsFp8<W>)
#pragma unroll
            for (int j = 0; j < kSP; ++j) h.s[r][j] = s[r][j];
#pragma unroll
          for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < P; ++j) h.v[r][g][j] = v[r][g][j];
        }
        multiply(i, base, h);
      }
      if (flush(i, base, h.c < 0)) break;
    }
  }
}

// g_bulk_counters on the current device.
int* counters_here() {
  static std::mutex mu;
  static std::map<int, int*> base;  // device -> g_bulk_counters there
  int dev = 0;
  RH_CUDA(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  auto it = base.find(dev);
  if (it == base.end()) {
    void* p = nullptr;
    RH_CUDA(cudaGetSymbolAddress(&p, g_bulk_counters));
    it = base.emplace(dev, static_cast<int*>(p)).first;
  }
  return it->second;
}

// The counter of the next launch: the current device's counters in turn.
int* next_counter() {
  static std::atomic<unsigned> turn{0};
  return counters_here() + turn.fetch_add(1) % kBulkCounters;
}

// The tag of the last launch on this thread, for the ring order (0: none, or attention since).
thread_local int t_prev_tag = 0;
std::atomic<int> g_ring_order_switch{-1};

// The value bytes of the last product that took this kernel on this thread (0: none since the
// backend's last reset).
thread_local int t_last_bulk_bytes = 0;

template <int CW, int P>
struct Shape {};

// The one list of the shapes compiled: f(Shape<CW, P>{}) for rows of words = 32 * CW * P 16-byte
// words (CW consumer warps, P words per thread); false where none is. Each leaves at least 3
// stages of the ring, except the 32 KB stages (16-bit K = 16384, SwiGLU at K = 8192) in the small
// footprint, which holds 2 (not measured: no model of those shapes has been timed), and none
// spills registers (ptxas -v, sm_90; at 8 warps a thread has 96). 16-bit
// weights: K = 2048, 4096, 8192, 12288, 16384 on 8 warps and 14336 on 7; SwiGLU up to K = 8192.
// FP8: K = 4096, 8192, 12288 on 8 warps, 7168 (DeepSeek-V3) and 14336 on 7; SwiGLU up to 8192.
template <typename W, int R, class F>
bool with_shape(int64_t words, F&& f) {
  if constexpr (kIsFp8<W>) {
    switch (words) {
      case 256: return f(Shape<8, 1>{});
      case 448: return f(Shape<7, 2>{});
      case 512: return f(Shape<8, 2>{});
      default: break;
    }
    if constexpr (R == 1) {
      switch (words) {
        case 768: return f(Shape<8, 3>{});
        case 896: return f(Shape<7, 4>{});
        default: break;
      }
    }
  } else {
    switch (words) {
      case 256: return f(Shape<8, 1>{});
      case 512: return f(Shape<8, 2>{});
      case 1024: return f(Shape<8, 4>{});
      default: break;
    }
    if constexpr (R == 1) {
      switch (words) {
        case 1536: return f(Shape<8, 6>{});
        case 1792: return f(Shape<7, 8>{});
        case 2048: return f(Shape<8, 8>{});
        default: break;
      }
    }
  }
  return false;
}

template <int R>
bool compiled_width(int64_t words, bool fp8) {
  const auto yes = [](auto) { return true; };
  return fp8 ? with_shape<E4m3Blocks, R>(words, yes) : with_shape<__nv_bfloat16, R>(words, yes);
}

// Whether launches alternate between kBulkLargeBlock and kBulkSmallBlock: the two fit an SM, two
// large ones do not.
bool alternate_footprints() {
  const int sm = device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor);
  const int reserved = device_attribute(cudaDevAttrReservedSharedMemoryPerBlock);
  return kBulkLargeBlock + kBulkSmallBlock + 2 * reserved <= sm && 2 * (kBulkLargeBlock + reserved) > sm &&
         kBulkLargeBlock <= max_block_smem();
}

// Whether the next launch on this thread gets the large footprint.
thread_local bool t_next_large = true;

template <typename W, int R>
bool launch_bulk_typed(const float* x, const float* norm_w, float eps, const void* w, const float* scales,
                       const float* bias, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  const int64_t words = K * kValueBytes<W> / 16;
  return with_shape<W, R>(words, [&]<int CW, int P>(Shape<CW, P>) {
    const auto kernel = bulk_gemv_kernel<W, CW, P, R>;
    const int64_t bytes = stage_bytes<W, P, R>(words);
    // Once per kernel and device: its static shared memory, room for the large ring, and the SM
    // split to the most shared memory, so that the next product's block fits beside this one's.
    const int static_bytes = per_device_value(reinterpret_cast<const void*>(kernel), [kernel] {
      cudaFuncAttributes attr{};
      RH_CUDA(cudaFuncGetAttributes(&attr, kernel));
      RH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   std::max(kBulkRingBytes, kBulkLargeBlock - static_cast<int>(attr.sharedSizeBytes))));
      RH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                   cudaSharedmemCarveoutMaxShared));
      return static_cast<int>(attr.sharedSizeBytes);
    });
    const bool alternate = alternate_footprints();
    int ring = kBulkRingBytes;
    if (alternate) {
      ring = (t_next_large ? kBulkLargeBlock : kBulkSmallBlock) - static_bytes;
      t_next_large = !t_next_large;
    }
    const int stages = static_cast<int>(std::min<int64_t>(kBulkMaxStages, ring / bytes));
    // Alternating, the whole footprint is asked for, not just whole stages.
    const size_t dynamic = alternate ? static_cast<size_t>(ring) : static_cast<size_t>(stages * bytes);
    const int64_t cols = R == 2 ? N / 2 : N;
    const int64_t grid = std::min<int64_t>(cols, sm_count());
    int* counter = next_counter();
    const int tag = 1 + static_cast<int>(counter - counters_here());
    launch_pdl("bulk_gemv_kernel", kernel, dim3(static_cast<unsigned>(grid)), dim3((CW + 1) * 32), dynamic, stream, x,
               norm_w, eps, w, scales, bias, N, K, static_cast<int>(mode), counter, out, ring, tag,
               bulk_ring_order_enabled() ? t_prev_tag : 0);
    t_prev_tag = tag;
    return true;
  });
}

// What every launch needs: one activation row, 16-byte words (whole rows of weights, activations
// and norm weights as float4s), and the switch on.
bool bulk_takes(const float* x, const float* norm_w, const void* w, int64_t M, int64_t N, int64_t K,
                LinearMode mode) {
  if (M != 1 || N == 0 || !bulk_gemv_enabled()) return false;
  if (mode == LinearMode::kSiluMul && N % 2 != 0) return false;
  return K % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         (!norm_w || reinterpret_cast<uintptr_t>(norm_w) % 16 == 0);
}

// FP8 SwiGLU stages hold two columns: up rows cols + c and cols + c + 1 (c even) share a 128-row
// block of the scale table only for an even number of columns cols = N / 2.
bool fp8_stage_pairs_fit(int64_t N, bool silu) { return !silu || (N / 2) % 2 == 0; }

std::atomic<int> g_bulk_switch{-1};

}  // namespace

bool bulk_gemv_enabled() { return hopper_switch_on(g_bulk_switch, "REDHARE_BULK_GEMV"); }

bool bulk_ring_order_enabled() { return hopper_switch_on(g_ring_order_switch, "REDHARE_RING_ORDER"); }

void set_bulk_ring_order_enabled(bool on) { g_ring_order_switch.store(on ? 1 : 0); }

void set_bulk_gemv_enabled(bool on) { g_bulk_switch.store(on ? 1 : 0); }

bool bulk_gemv_width(int64_t K, int64_t elem_bytes, bool silu) {
  if (elem_bytes != 1 && elem_bytes != 2) return false;
  if ((K * elem_bytes) % 16 != 0) return false;
  const int64_t words = K * elem_bytes / 16;
  return silu ? compiled_width<2>(words, elem_bytes == 1) : compiled_width<1>(words, elem_bytes == 1);
}

bool bulk_gemv_fp8_preferred(int64_t N, int64_t K, bool silu) {
  return N >= 4096 && K >= 4096 && bulk_gemv_width(K, 1, silu) && fp8_stage_pairs_fit(N, silu);
}

int last_bulk_gemv_bytes() { return t_last_bulk_bytes; }
void bulk_gemv_after_attention() {
  t_next_large = true;
  t_prev_tag = 0;
}
void reset_last_gemv() { t_last_bulk_bytes = 0; }

bool launch_bulk_gemv(const float* x, const float* norm_w, float eps, const void* w, Elem w_type, const float* bias,
                      int64_t M, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (w_type == Elem::kF32 || !bulk_takes(x, norm_w, w, M, N, K, mode)) return false;
  const bool silu = mode == LinearMode::kSiluMul;
  const bool launched =
      w_type == Elem::kBF16
          ? (silu ? launch_bulk_typed<__nv_bfloat16, 2>(x, norm_w, eps, w, nullptr, bias, N, K, mode, out, stream)
                  : launch_bulk_typed<__nv_bfloat16, 1>(x, norm_w, eps, w, nullptr, bias, N, K, mode, out, stream))
          : (silu ? launch_bulk_typed<__half, 2>(x, norm_w, eps, w, nullptr, bias, N, K, mode, out, stream)
                  : launch_bulk_typed<__half, 1>(x, norm_w, eps, w, nullptr, bias, N, K, mode, out, stream));
  if (launched) t_last_bulk_bytes = 2;
  return launched;
}

bool launch_bulk_gemv_fp8(const float* x, const float* norm_w, float eps, const void* w, const float* bias, int64_t M,
                          int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (!bulk_takes(x, norm_w, w, M, N, K, mode) || K % kBK != 0) return false;
  if (!fp8_stage_pairs_fit(N, mode == LinearMode::kSiluMul)) return false;
  // The device layout: N rows of K bytes, the per-row scales [K / 128][N], then the block table.
  const float* table = Fp8Rows(w, N, K).s + N * (K / kBK);
  const bool launched =
      mode == LinearMode::kSiluMul
          ? launch_bulk_typed<E4m3Blocks, 2>(x, norm_w, eps, w, table, bias, N, K, mode, out, stream)
          : launch_bulk_typed<E4m3Blocks, 1>(x, norm_w, eps, w, table, bias, N, K, mode, out, stream);
  if (launched) t_last_bulk_bytes = 1;
  return launched;
}

}  // namespace redhare::cuda
