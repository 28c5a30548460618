// The batch-1 decode product on Hopper and later (sm_90+): out[N] = x[K] @ w[N, K]^T, bf16 or
// f16 weights, f32 activations and sums, with launch_gemv's norm prologue and epilogues.
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
// ~96 KB shared-memory ring with cp.async.bulk (the copy engine, completion counted on an
// mbarrier per stage), evicting first from L2. Weights are constant, so the producer starts
// before the block waits for the previous kernel (pdl.cuh), and the block lets the next kernel
// in at once: two blocks of ~100 KB fit an SM, so the next product's ring fills while this one
// runs, and no product starts with an empty pipeline. CW consumer warps multiply: thread t owns
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
// Numerics: f32 products summed per thread in word order, then over the warp (shuffles) and
// over the warps in order, whichever block takes the column: a different order than gemv_kernel's,
// so the two agree to rounding (the tests' 1e-5 relative bound), each deterministic. The norm sums squares in double as
// stage_rms_norm does.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_util.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/pdl.cuh"

namespace redhare::cuda {
namespace {

constexpr int kBulkRingBytes = 96 * 1024;  // per block: this product's and the next one's fit an SM
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

// Eight weights of one 16-byte word times eight activations, added to acc.
template <typename W>
__device__ __forceinline__ float dot8(const uint4& raw, const float (&a)[8], float acc) {
  const W* e = reinterpret_cast<const W*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc = fmaf(to_f32(e[i]), a[i], acc);
  return acc;
}

// R = 2: SwiGLU, columns n and cols + n of w together. (CW + 1) warps: CW consume, the last one's
// first lane produces.
template <typename W, int CW, int P, int R>
__global__ void __launch_bounds__((CW + 1) * 32, 2)
bulk_gemv_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps, const W* __restrict__ w,
                 const float* __restrict__ bias, int64_t N, int64_t K, int mode, int* __restrict__ counter,
                 float* __restrict__ out) {
  constexpr int kConsumers = CW * 32;
  constexpr int64_t kRowWords = static_cast<int64_t>(kConsumers) * P;  // K * sizeof(W) / 16
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ uint64_t full[kBulkMaxStages], empty[kBulkMaxStages];
  __shared__ float part[kBulkMaxCols / R][R][CW];  // warp sums of each column
  __shared__ double red[CW];
  __shared__ int64_t col_of[kBulkMaxStages];      // the column a stage holds; -1: no more
  __shared__ int64_t col_at[kBulkMaxCols / R];    // the column of each kept sum
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t cols = R == 2 ? N / 2 : N;
  const int stages = min(kBulkMaxStages, static_cast<int>(kBulkRingBytes / (R * kRowWords * 16)));
  if (tid == 0) {
    for (int i = 0; i < stages; ++i) Bulk::init(&full[i], 1), Bulk::init(&empty[i], CW);
    Bulk::fence_init();
  }
  __syncthreads();
  pdl_trigger();

  if (warp == CW) {
    // The producer: the block's columns one after another, column i (of this block) into stage
    // i % stages once the consumers have handed it back, then an end mark. The columns come in
    // runs of kBulkGrab taken from the launch's counter (the next run asked for while this one is
    // copied), so a block that shares its SM with another of the same kernel (blocks launched
    // early can land two to an SM) simply takes fewer. It touches nothing the previous kernel
    // writes, so it does not wait for it.
    if (lane == 0) {
      const uint64_t policy = Bulk::evict_first();
      const uint32_t bytes = static_cast<uint32_t>(kRowWords * 16);
      const uint4* wv = reinterpret_cast<const uint4*>(w);
      const int64_t runs = (cols + kBulkGrab - 1) / kBulkGrab;
      // Every block takes numbers until one is past the last run: runs + gridDim.x numbers in
      // all, so the block that takes the last of them puts the counter back for the next launch.
      auto take = [&] {
        const int64_t run = atomicAdd(counter, 1);
        if (run == runs + gridDim.x - 1) atomicExch(counter, 0);
        return run;
      };
      int64_t run = take();
      int64_t a = run * kBulkGrab, b = run < runs ? min(cols, a + kBulkGrab) : a;
      int i = 0;
      while (a < b) {
        const int64_t next = take();
        for (int64_t c = a; c < b; ++c, ++i) {
          const int st = i % stages;
          if (i >= stages) Bulk::wait(&empty[st], (i / stages - 1) & 1);
          col_of[st] = c;  // published by the arrive below
          Bulk::expect(&full[st], R * bytes);
#pragma unroll
          for (int r = 0; r < R; ++r)
            Bulk::copy(ring + (static_cast<int64_t>(st) * R + r) * kRowWords, wv + (c + r * cols) * kRowWords, bytes,
                       &full[st], policy);
        }
        a = next * kBulkGrab, b = next < runs ? min(cols, a + kBulkGrab) : a;
      }
      const int st = i % stages;
      if (i >= stages) Bulk::wait(&empty[st], (i / stages - 1) & 1);
      col_of[st] = -1;
      Bulk::arrive(&full[st]);
    }
    return;
  }

  // The consumers: this thread's activations (words tid + kConsumers * j), normalized if asked.
  // The norm weights are constant: loaded before the wait where registers allow.
  constexpr bool kHoldNorm = P <= 4;
  const float4* nv = reinterpret_cast<const float4*>(norm_w);
  float4 nw[kHoldNorm ? 2 * P : 1];
  if (kHoldNorm && norm_w) {
#pragma unroll
    for (int j = 0; j < P; ++j) nw[2 * j] = nv[2 * (tid + kConsumers * j)], nw[2 * j + 1] = nv[2 * (tid + kConsumers * j) + 1];
  }
  pdl_wait();
  float a[P][8];
  {
    const float4* xv = reinterpret_cast<const float4*>(x);
    double ss = 0;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const float4 lo = xv[2 * (tid + kConsumers * j)], hi = xv[2 * (tid + kConsumers * j) + 1];
      a[j][0] = lo.x, a[j][1] = lo.y, a[j][2] = lo.z, a[j][3] = lo.w;
      a[j][4] = hi.x, a[j][5] = hi.y, a[j][6] = hi.z, a[j][7] = hi.w;
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += static_cast<double>(a[j][e]) * a[j][e];
    }
    if (norm_w) {
      ss = warp_sum(ss);
      if (lane == 0) red[warp] = ss;
      consumers_sync<kConsumers>();
      double total = 0;
#pragma unroll
      for (int c = 0; c < CW; ++c) total += red[c];
      const float inv = rms_inverse(total, K, eps);
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const float4 wlo = kHoldNorm ? nw[(2 * j) % (kHoldNorm ? 2 * P : 1)] : nv[2 * (tid + kConsumers * j)];
        const float4 whi = kHoldNorm ? nw[(2 * j + 1) % (kHoldNorm ? 2 * P : 1)] : nv[2 * (tid + kConsumers * j) + 1];
        const float4 lo = scale4(make_float4(a[j][0], a[j][1], a[j][2], a[j][3]), wlo, inv);
        const float4 hi = scale4(make_float4(a[j][4], a[j][5], a[j][6], a[j][7]), whi, inv);
        a[j][0] = lo.x, a[j][1] = lo.y, a[j][2] = lo.z, a[j][3] = lo.w;
        a[j][4] = hi.x, a[j][5] = hi.y, a[j][6] = hi.z, a[j][7] = hi.w;
      }
    }
  }
  // Stage after stage until the producer's end mark; every kChunk columns (and at the end) the
  // kept warp sums, added in warp order, go to the output with the epilogue.
  constexpr int kChunk = kBulkMaxCols / R;
  for (int i = 0, base = 0;; ++i) {
    const int st = i % stages;
    Bulk::wait(&full[st], (i / stages) & 1);
    const int64_t c = col_of[st];
    if (c >= 0) {
      uint4 v[R][P];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = 0; j < P; ++j) v[r][j] = ring[(static_cast<int64_t>(st) * R + r) * kRowWords + tid + kConsumers * j];
      // The words (and the column) are in registers: the stage goes back before the multiply.
      __syncwarp();
      if (lane == 0) Bulk::arrive(&empty[st]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < P; ++j) acc = dot8<W>(v[r][j], a[j], acc);
        acc = warp_sum(acc);
        if (lane == 0) part[i - base][r][warp] = acc;
      }
      if (tid == 0) col_at[i - base] = c;
    }
    const bool last = c < 0;
    if (last || i - base == kChunk - 1) {
      const int end = last ? i : i + 1;
      consumers_sync<kConsumers>();
      for (int k = base + tid; k < end; k += kConsumers) {
        float s[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          s[r] = 0.0f;
#pragma unroll
          for (int w = 0; w < CW; ++w) s[r] += part[k - base][r][w];
        }
        const int64_t n = col_at[k - base];
        if constexpr (R == 2)
          out[n] = swiglu_product(s[0], s[1], bias, n, cols);
        else
          store_product(out + n, s[0], bias, n, mode == static_cast<int>(LinearMode::kAccumulate));
      }
      if (last) break;
      consumers_sync<kConsumers>();  // the table is reused
      base = end;
    }
  }
}

// The counter of the next launch: the current device's counters in turn.
int* next_counter() {
  static std::mutex mu;
  static std::map<int, int*> base;  // device -> g_bulk_counters there
  static std::atomic<unsigned> turn{0};
  int dev = 0;
  RH_CUDA(cudaGetDevice(&dev));
  int* counters = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = base.find(dev);
    if (it == base.end()) {
      void* p = nullptr;
      RH_CUDA(cudaGetSymbolAddress(&p, g_bulk_counters));
      it = base.emplace(dev, static_cast<int*>(p)).first;
    }
    counters = it->second;
  }
  return counters + turn.fetch_add(1) % kBulkCounters;
}

thread_local bool t_last_bulk = false;

// The shapes compiled (bulk_gemv_width lists them): (consumer warps, words per thread) for rows
// of 32 * CW * P 16-byte words. K (bf16/f16) 2048, 4096, 8192, 12288, 16384 on 8 warps; 14336 on
// 7; SwiGLU up to K = 8192. Every one leaves at least 3 stages of the ring.
template <typename W, int R>
bool launch_bulk_typed(const float* x, const float* norm_w, float eps, const W* w, const float* bias, int64_t N,
                       int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (!bulk_gemv_width(K, sizeof(W), R == 2)) return false;
  const int64_t words = K * static_cast<int64_t>(sizeof(W)) / 16;
  auto go = [&](auto kernel, int cw) {
    const int64_t stage_bytes = int64_t{R} * words * 16;
    const int stages = static_cast<int>(std::min<int64_t>(kBulkMaxStages, kBulkRingBytes / stage_bytes));
    allow_shared_memory(reinterpret_cast<const void*>(kernel), kBulkRingBytes);
    const int64_t cols = R == 2 ? N / 2 : N;
    const int64_t grid = std::min<int64_t>(cols, sm_count());
    launch_pdl("bulk_gemv_kernel", kernel, dim3(static_cast<unsigned>(grid)), dim3((cw + 1) * 32),
               static_cast<size_t>(stages * stage_bytes), stream, x, norm_w, eps, w, bias, N, K, static_cast<int>(mode),
               next_counter(), out);
    return true;
  };
  if (words % 256 == 0) {
    switch (words / 256) {
      case 1: return go(bulk_gemv_kernel<W, 8, 1, R>, 8);
      case 2: return go(bulk_gemv_kernel<W, 8, 2, R>, 8);
      case 4: return go(bulk_gemv_kernel<W, 8, 4, R>, 8);
      default: break;
    }
    if constexpr (R == 1) {
      if (words == 256 * 6) return go(bulk_gemv_kernel<W, 8, 6, R>, 8);
      if (words == 256 * 8) return go(bulk_gemv_kernel<W, 8, 8, R>, 8);
    }
  }
  if constexpr (R == 1) {
    if (words == 224 * 8) return go(bulk_gemv_kernel<W, 7, 8, R>, 7);
  }
  return false;
}

std::atomic<int> g_bulk_switch{-1};

}  // namespace

bool bulk_gemv_enabled() { return hopper_switch_on(g_bulk_switch, "REDHARE_BULK_GEMV"); }

void set_bulk_gemv_enabled(bool on) { g_bulk_switch.store(on ? 1 : 0); }

bool bulk_gemv_width(int64_t K, int64_t elem_bytes, bool silu) {
  if ((K * elem_bytes) % 16 != 0) return false;
  const int64_t words = K * elem_bytes / 16;
  if (silu) return words == 256 || words == 512 || words == 1024;
  return words == 256 || words == 512 || words == 1024 || words == 1536 || words == 2048 || words == 1792;
}

bool last_gemv_was_bulk() { return t_last_bulk; }
void reset_last_gemv() { t_last_bulk = false; }

bool launch_bulk_gemv(const float* x, const float* norm_w, float eps, const void* w, Elem w_type, const float* bias,
                      int64_t M, int64_t N, int64_t K, LinearMode mode, float* out, cudaStream_t stream) {
  if (M != 1 || N == 0 || w_type == Elem::kF32 || !bulk_gemv_enabled()) return false;
  if (mode == LinearMode::kSiluMul && N % 2 != 0) return false;
  // 16-byte words: whole rows of weights, activations and norm weights as float4 pairs.
  if (K % 8 != 0 || reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      (norm_w && reinterpret_cast<uintptr_t>(norm_w) % 16 != 0))
    return false;
  auto run = [&](auto* typed) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(typed)>>;
    if (mode == LinearMode::kSiluMul) return launch_bulk_typed<W, 2>(x, norm_w, eps, typed, bias, N, K, mode, out, stream);
    return launch_bulk_typed<W, 1>(x, norm_w, eps, typed, bias, N, K, mode, out, stream);
  };
  const bool launched =
      w_type == Elem::kBF16 ? run(static_cast<const __nv_bfloat16*>(w)) : run(static_cast<const __half*>(w));
  if (launched) t_last_bulk = true;
  return launched;
}

}  // namespace redhare::cuda
