// The ceiling of a batch-1 decode step built from one kernel per product: a model's decoder
// products (qkv, o, gate/up, down per layer, bf16) streamed as a chain of dependent kernels,
// timed against the HBM read bandwidth (a 2 GiB streaming read, the denominator of bench_cuda's
// bounds). No attention, no LM head: what a chain loses against the probe is what the boundaries
// between dependent streams and the arithmetic on the stream cost.
//
//   bench_stream_chain [--hidden 4096] [--intermediate 14336] [--heads 32] [--kv-heads 8]
//                      [--head-dim 128] [--layers 32] [--only 0-3]
//
// --only keeps one product of each layer (0 qkv, 1 o, 2 gate/up, 3 down). Variants, each one
// graph (or one launch) replayed, best of 8:
// - kernels, PDL: one kernel per product, launched as the register decode kernel (gemv_kernel)
//   is (programmatic dependent launch, a grid of what fits, two blocks of 8 warps per SM, a warp
//   streaming a weight row at a time into registers in double-buffered rounds of 16-byte loads),
//   each kernel reading a 16 KB activation vector after its wait, as the norm prologue does;
// - kernels, no PDL: the same, ordinary launches;
// - multiplying: the same with a decode product's work on the stream (bf16 weights times f32
//   activations, a warp sum and a store per row), the activations staged in shared memory, the
//   same with the first round issued before the staging ("early round"), read through L1, or
//   left out (each weight times one register: widening and multiplying alone);
// - bulk-copy ring (sm_90): the scheme of kernels_gemv_bulk.cu: one block per SM, a producer
//   thread copying its rows into a ring of shared-memory stages with cp.async.bulk before the
//   block waits, consumer warps multiplying against activations held in registers; with the next
//   kernel let in at once (its ring fills while this one runs) or at exit, without the multiply,
//   and with each stage handed back as soon as its words are in registers;
// - engine products: the engine's own decode products (cuda::launch_fused_gemv with norms and
//   epilogues), the bulk-copy kernel against the register one, with and without PDL;
// - one persistent kernel: the register chain's streams as phases of one grid separated by grid
//   barriers, each block loading its first round of the next phase before it arrives.
// Shared memory per block is set so that two blocks fit per SM, as the engine's GEMV registers
// allow; otherwise this kernel's few registers would let later kernels' blocks crowd the SMs.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/event_timer.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

using namespace redhare;

namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32, kRound = 4;  // 16-byte loads per lane and round
constexpr int kActivations = 4096;                               // floats read after each wait

struct Stream {
  const uint4* w;  // rows x row_words 16-byte words
  int64_t rows, row_words;
};

__device__ __forceinline__ void wait_previous() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The block's sum of the activation vector (a dependent L2 round trip and a block reduction).
__device__ float read_activations(const float* x, float* red) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < kActivations; i += kThreads) s += __ldcg(x + i);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
  __syncthreads();
  float t = 0.0f;
  for (int i = 0; i < kWarps; ++i) t += red[i];
  __syncthreads();
  return t;
}

__device__ __forceinline__ float warp_total(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A warp's share of a stream: rows first, first + stride, ... (stride = the grid's warps), each
// in per_row rounds of kRound 16-byte loads per lane; round i of the share is round i % per_row
// of its (i / per_row)-th row.
struct WarpShare {
  const Stream& s;
  int lane, per_row;
  int64_t stride, first, total;
  __device__ explicit WarpShare(const Stream& st)
      : s(st),
        lane(static_cast<int>(threadIdx.x % 32)),
        per_row(static_cast<int>(st.row_words / (32 * kRound))),
        stride(static_cast<int64_t>(gridDim.x) * kWarps),
        first(static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32),
        total(first < st.rows ? (st.rows - first + stride - 1) / stride * per_row : 0) {}
  __device__ int64_t row(int64_t i) const { return first + i / per_row * stride; }
  __device__ void load(uint4 (&buf)[kRound], int64_t i) const {
    const uint4* p = s.w + row(i) * s.row_words + i % per_row * 32 * kRound + lane;
#pragma unroll
    for (int u = 0; u < kRound; ++u) buf[u] = __ldcs(p + 32 * u);
  }
  // use(buf, i) for every round i in order, round i + 1's loads issued before round i is used.
  // With `primed`, round 0 is already in `a`.
  template <typename Use>
  __device__ void stream(uint4 (&a)[kRound], bool primed, Use&& use) const {
    if (total == 0) return;
    uint4 b[kRound];
    if (!primed) load(a, 0);
    for (int64_t i = 0; i < total; i += 2) {
      if (i + 1 < total) load(b, i + 1);
      use(a, i);
      if (i + 1 >= total) break;
      if (i + 2 < total) load(a, i + 2);
      use(b, i + 1);
    }
  }
};

// The warp's share of s, its words folded into acc.
__device__ uint32_t stream_rows(const Stream& s, uint4 (&a)[kRound], bool primed, uint32_t acc) {
  WarpShare(s).stream(a, primed, [&](const uint4 (&buf)[kRound], int64_t) {
#pragma unroll
    for (int u = 0; u < kRound; ++u) acc ^= buf[u].x ^ buf[u].y ^ buf[u].z ^ buf[u].w;
  });
  return acc;
}

__global__ void __launch_bounds__(kThreads) stream_kernel(Stream s, const float* x, uint32_t* sink) {
  __shared__ float red[kWarps];
  wait_previous();
  uint4 a[kRound];
  const uint32_t acc = stream_rows(s, a, false, __float_as_uint(read_activations(x, red)));
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;  // never in practice: keeps the loads
}

// The same stream with a decode product's work on it: the row's bf16 weights times an f32
// activation row (f32 FMA per element), a warp sum and a store per row. Where the activations
// come from: kSmem, staged in shared memory (as the norm prologue stages them); kEarly, the same
// with the warp's first round issued before the staging; kL1, read from global memory through L1
// as the products without a norm read them; kNone, no activations at all (each weight times one
// register), what widening and multiplying alone cost.
enum XFrom { kSmem, kEarly, kL1, kNone };

template <int kFrom>
__global__ void __launch_bounds__(kThreads) multiply_kernel(Stream s, const float* x, float* out) {
  extern __shared__ __align__(16) float xs[];
  __shared__ float red[kWarps];
  wait_previous();
  const WarpShare share(s);
  uint4 a[kRound];
  if (kFrom == kEarly && share.total > 0) share.load(a, 0);  // the first round in flight while x is staged
  const int64_t K = s.row_words * 8;
  const float scale = read_activations(x, red) + 1.0f;
  if (kFrom == kSmem || kFrom == kEarly) {
    for (int64_t k = threadIdx.x; k < K; k += kThreads) xs[k] = __ldcg(x + k % kActivations) * scale;
    __syncthreads();
  }
  float acc = 0.0f;
  share.stream(a, kFrom == kEarly, [&](const uint4 (&buf)[kRound], int64_t i) {
    const int64_t r = i % share.per_row;
#pragma unroll
    for (int u = 0; u < kRound; ++u) {
      const int64_t k0 = (r * 32 * kRound + 32 * u + share.lane) * 8;
      float xf[8];
      if (kFrom == kNone) {
#pragma unroll
        for (int e = 0; e < 8; ++e) xf[e] = scale;
      } else {
        const float4* xv = reinterpret_cast<const float4*>(kFrom == kL1 ? x + k0 % kActivations : xs + k0);
        const float4 x0 = xv[0], x1 = xv[1];
        xf[0] = x0.x, xf[1] = x0.y, xf[2] = x0.z, xf[3] = x0.w, xf[4] = x1.x, xf[5] = x1.y, xf[6] = x1.z, xf[7] = x1.w;
      }
      const uint32_t w[4] = {buf[u].x, buf[u].y, buf[u].z, buf[u].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc = fmaf(__uint_as_float(w[e] << 16), xf[2 * e], acc);
        acc = fmaf(__uint_as_float(w[e] & 0xFFFF0000u), xf[2 * e + 1], acc);
      }
    }
    if (r == share.per_row - 1) {
      float t = acc;
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      if (share.lane == 0) out[share.row(i)] = t;
      acc = 0.0f;
    }
  });
}

// Bulk-copy ring (sm_90): one block per SM, its rows contiguous; a producer warp copies one row
// at a time into a ring of shared-memory stages with cp.async.bulk (completion on an mbarrier per
// stage), eight consumer warps multiply each row against activations held in registers (thread
// t: 16-byte words t + 256 j of the row) and hand the stage back. Weights need no wait, so the
// producer fills the ring before the block waits for its predecessor, and with kTrigger the next
// kernel's blocks are let in at once (two fit per SM), filling their rings while this one runs.
struct Ring {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __device__ static uint32_t addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
#endif
  __device__ static void init(uint64_t* bar, uint32_t count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(addr(bar)), "r"(count) : "memory");
#endif
  }
  __device__ static void fence_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;\n fence.proxy.async.shared::cta;" ::: "memory");
#endif
  }
  __device__ static void wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n .reg .pred p;\n WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT_%=;\n}" ::"r"(
            addr(bar)),
        "r"(parity)
        : "memory");
#endif
  }
  __device__ static void arrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(addr(bar)) : "memory");
#endif
  }
  // Copies `bytes` (a multiple of 16) from global src to shared dst; completes on bar's phase.
  __device__ static void copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(addr(bar)), "r"(bytes) : "memory");
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
            addr(dst)),
        "l"(src), "r"(bytes), "r"(addr(bar)), "l"(policy)
        : "memory");
#endif
  }
  __device__ static uint64_t evict_first() {
    uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
#endif
    return policy;
  }
};

constexpr int kRingBytes = 96 * 1024, kMaxRingStages = 16, kMaxBlockRows = 256;

// How a ring kernel runs: kLetIn, the next kernel let in at once (else at exit); kMultiply,
// the consumers multiply (else they only hand the stages back); kEarlyRelease, each warp hands
// its stage back as soon as its words are in registers, before multiplying.
enum RingMode { kLetIn = 1, kMultiply = 2, kEarlyRelease = 4 };

// CW consumer warps (P 16-byte words of each row per thread: rows of 32 * CW * P words) and one
// producer warp.
template <int CW, int P, int kMode>
__global__ void __launch_bounds__((CW + 1) * 32, 2) ring_kernel(Stream s, const float* x, float* out) {
  constexpr int kConsumers = CW * 32;
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ uint64_t full[kMaxRingStages], empty[kMaxRingStages];
  __shared__ float part[kMaxBlockRows][CW];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int stages = min(kMaxRingStages, static_cast<int>(kRingBytes / (s.row_words * 16)));
  const int64_t r0 = s.rows * blockIdx.x / gridDim.x, r1 = s.rows * (blockIdx.x + 1) / gridDim.x;
  const int nrows = static_cast<int>(r1 - r0);
  if (tid == 0) {
    for (int i = 0; i < stages; ++i) Ring::init(&full[i], 1), Ring::init(&empty[i], CW);
    Ring::fence_init();
  }
  __syncthreads();
  if (kMode & kLetIn) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  }
  if (warp == CW) {  // the producer: constant weights, so it never waits for the predecessor
    if (lane == 0) {
      const uint64_t policy = Ring::evict_first();
      const uint32_t bytes = static_cast<uint32_t>(s.row_words * 16);
      for (int i = 0; i < nrows; ++i) {
        const int st = i % stages;
        if (i >= stages) Ring::wait(&empty[st], (i / stages - 1) & 1);
        Ring::copy(ring + static_cast<int64_t>(st) * s.row_words, s.w + (r0 + i) * s.row_words, bytes, &full[st], policy);
      }
    }
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    float xr[P][8];
    if (kMode & kMultiply) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const int64_t k0 = (static_cast<int64_t>(tid) + kConsumers * j) * 8 % kActivations;
        const float4 a = __ldcg(reinterpret_cast<const float4*>(x + k0)), b = __ldcg(reinterpret_cast<const float4*>(x + k0 + 4));
        xr[j][0] = a.x, xr[j][1] = a.y, xr[j][2] = a.z, xr[j][3] = a.w, xr[j][4] = b.x, xr[j][5] = b.y, xr[j][6] = b.z, xr[j][7] = b.w;
      }
    }
    for (int i = 0; i < nrows; ++i) {
      const int st = i % stages;
      Ring::wait(&full[st], (i / stages) & 1);
      const uint4* row = ring + static_cast<int64_t>(st) * s.row_words;
      float acc = 0.0f;
      if (kMode & kMultiply) {
        uint4 v[P];
#pragma unroll
        for (int j = 0; j < P; ++j) v[j] = row[tid + kConsumers * j];
        if (kMode & kEarlyRelease) {
          __syncwarp();
          if (lane == 0) Ring::arrive(&empty[st]);
        }
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const uint32_t w[4] = {v[j].x, v[j].y, v[j].z, v[j].w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc = fmaf(__uint_as_float(w[e] << 16), xr[j][2 * e], acc);
            acc = fmaf(__uint_as_float(w[e] & 0xFFFF0000u), xr[j][2 * e + 1], acc);
          }
        }
      }
      acc = warp_total(acc);
      __syncwarp();
      if (lane == 0) {
        part[i][warp] = acc;
        if (!(kMode & kEarlyRelease) || !(kMode & kMultiply)) Ring::arrive(&empty[st]);
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < nrows; i += (CW + 1) * 32) {
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < CW; ++w) t += part[i][w];
    out[r0 + i] = t;
  }
}

template <int kMode>
void launch_ring(cudaLaunchConfig_t cfg, int sms, const Stream& s, const float* x, float* out) {
  cfg.gridDim = dim3(static_cast<unsigned>(sms));
  const int64_t stages = std::min<int64_t>(kMaxRingStages, kRingBytes / (s.row_words * 16));
  cfg.dynamicSmemBytes = static_cast<size_t>(stages * s.row_words * 16);
  RH_CHECK((s.rows + sms - 1) / sms <= kMaxBlockRows && stages >= 2, "ring variant: rows too many or too long");
  auto go = [&](auto kernel, int cw) {
    RH_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingBytes));
    cfg.blockDim = dim3((cw + 1) * 32);
    RH_CUDA(cudaLaunchKernelEx(&cfg, kernel, s, x, out));
  };
  if (s.row_words == 512) go(ring_kernel<8, 2, kMode>, 8);
  else if (s.row_words == 1792) go(ring_kernel<7, 8, kMode>, 7);
  else fail("ring variant: rows of ", s.row_words, " 16-byte words");
}

__global__ void __launch_bounds__(kThreads)
persistent_kernel(const Stream* streams, int n, const float* x, uint32_t* sink, unsigned* arrived) {
  __shared__ float red[kWarps];
  uint4 a[kRound];
  uint32_t acc = 0;
  bool primed = false;
  for (int p = 0; p < n; ++p) {
    acc = stream_rows(streams[p], a, primed, acc ^ __float_as_uint(read_activations(x, red)));
    primed = false;
    if (p + 1 == n) break;
    const WarpShare next(streams[p + 1]);
    if (next.total > 0) {  // the next phase's first round, before the barrier
      next.load(a, 0);
      primed = true;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const unsigned target = static_cast<unsigned>(p + 1) * gridDim.x;
      unsigned v;
      asm volatile("atom.add.release.gpu.global.u32 %0, [%1], 1;" : "=r"(v) : "l"(arrived) : "memory");
      do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(arrived) : "memory");
      while (v < target);
    }
    __syncthreads();
  }
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}


// Milliseconds per replay (best of 8) of the graph that enqueue() captures on `stream`.
template <typename Enqueue>
double replay_ms(cudaStream_t stream, Enqueue&& enqueue) {
  cudaGraph_t g;
  cudaGraphExec_t exec;
  RH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue();
  RH_CUDA(cudaStreamEndCapture(stream, &g));
  RH_CUDA(cudaGraphInstantiate(&exec, g, 0));
  RH_CUDA(cudaGraphDestroy(g));
  const double ms = 1e3 * cuda::best_event_seconds(stream, 8, [&] { RH_CUDA(cudaGraphLaunch(exec, stream)); });
  RH_CUDA(cudaGraphExecDestroy(exec));
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t hidden = 4096, inter = 14336, heads = 32, kv_heads = 8, head_dim = 128, layers = 32, only = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::stoll(argv[i + 1]);
    if (a == "--hidden") hidden = v;
    else if (a == "--intermediate") inter = v;
    else if (a == "--heads") heads = v;
    else if (a == "--kv-heads") kv_heads = v;
    else if (a == "--head-dim") head_dim = v;
    else if (a == "--layers") layers = v;
    else if (a == "--only") only = v;
    else fail("unknown option ", a);
  }
  const int64_t rows[4] = {(heads + 2 * kv_heads) * head_dim, hidden, 2 * inter, hidden};
  const int64_t cols[4] = {hidden, heads * head_dim, hidden, inter};
  for (int i = 0; i < 4; ++i)
    if ((cols[i] * 2) % (16 * 32 * kRound) != 0) fail("row width ", cols[i], " is not a multiple of 1024 bf16");

  const double bandwidth = cuda_read_bandwidth(0);
  int sms = 0;
  RH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::vector<Stream> streams;
  std::vector<void*> buffers;
  double bytes = 0;
  for (int64_t l = 0; l < layers; ++l)
    for (int i = 0; i < 4; ++i) {
      if (only >= 0 && i != only) continue;
      const size_t n = static_cast<size_t>(rows[i] * cols[i] * 2);
      void* w = nullptr;
      RH_CUDA(cudaMalloc(&w, n));
      RH_CUDA(cudaMemset(w, 1, n));
      buffers.push_back(w);
      streams.push_back({static_cast<const uint4*>(w), rows[i], cols[i] * 2 / 16});
      bytes += static_cast<double>(n);
    }
  float* x = nullptr;
  uint32_t* sink = nullptr;
  unsigned* arrived = nullptr;
  Stream* dstreams = nullptr;
  RH_CUDA(cudaMalloc(&x, kActivations * sizeof(float)));
  RH_CUDA(cudaMemset(x, 0, kActivations * sizeof(float)));
  RH_CUDA(cudaMalloc(&sink, 1 << 20));
  RH_CUDA(cudaMalloc(&arrived, sizeof(unsigned)));
  RH_CUDA(cudaMalloc(&dstreams, streams.size() * sizeof(Stream)));
  RH_CUDA(cudaMemcpy(dstreams, streams.data(), streams.size() * sizeof(Stream), cudaMemcpyHostToDevice));
  cudaStream_t stream;
  RH_CUDA(cudaStreamCreate(&stream));

  // Two blocks per SM: shared memory enough to exclude a third.
  int smem_per_sm = 0;
  RH_CUDA(cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
  const int smem = smem_per_sm / 3 + 1024;
  RH_CUDA(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  RH_CUDA(cudaFuncSetAttribute(persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  RH_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, stream_kernel, kThreads, smem));
  RH_CHECK(per_sm == 2, "expected two blocks per SM, got ", per_sm);

  for (const void* k : {reinterpret_cast<const void*>(multiply_kernel<kSmem>),
                        reinterpret_cast<const void*>(multiply_kernel<kEarly>),
                        reinterpret_cast<const void*>(multiply_kernel<kL1>),
                        reinterpret_cast<const void*>(multiply_kernel<kNone>)})
    RH_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  RH_CHECK(*std::max_element(cols, cols + 4) * 4 <= smem, "activation rows too long for ", smem, " bytes");
  float* out = nullptr;
  RH_CUDA(cudaMalloc(&out, static_cast<size_t>(*std::max_element(rows, rows + 4)) * sizeof(float)));
  auto chain = [&](bool pdl, int multiply) {
    return replay_ms(stream, [&] {
      for (const Stream& s : streams) {
        // Rows dealt evenly over the warps that fit, as launch_gemv deals columns.
        const int64_t fit = int64_t{2} * sms * kWarps, per_warp = (s.rows + fit - 1) / fit;
        const int64_t warps = (s.rows + per_warp - 1) / per_warp;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(static_cast<unsigned>((warps + kWarps - 1) / kWarps));
        cfg.blockDim = dim3(kThreads);
        cfg.dynamicSmemBytes = static_cast<size_t>(smem);
        cfg.stream = stream;
        cfg.attrs = attr;
        cfg.numAttrs = pdl ? 1 : 0;
        const float* xc = x;
        switch (multiply) {
          case 0: RH_CUDA(cudaLaunchKernelEx(&cfg, stream_kernel, s, xc, sink)); break;
          case 1: RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<kSmem>, s, xc, out)); break;
          case 2: RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<kEarly>, s, xc, out)); break;
          case 3: RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<kL1>, s, xc, out)); break;
          case 4: RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<kNone>, s, xc, out)); break;
          case 6: launch_ring<kLetIn | kMultiply>(cfg, sms, s, xc, out); break;
          case 7: launch_ring<kMultiply>(cfg, sms, s, xc, out); break;
          case 8: launch_ring<kLetIn>(cfg, sms, s, xc, out); break;
          case 9: launch_ring<kLetIn | kMultiply | kEarlyRelease>(cfg, sms, s, xc, out); break;
        }
      }
    });
  };
  const double ideal = bytes / bandwidth * 1e3;
  std::printf("read bandwidth %.0f GB/s; %lld layers, %.2f GB of bf16 weights: %.3f ms at that rate\n",
              bandwidth / 1e9, static_cast<long long>(layers), bytes / 1e9, ideal);
  std::printf("%-28s %10s %10s %8s\n", "variant", "ms", "GB/s", "of bound");
  auto row = [&](const char* name, double ms) {
    std::printf("%-28s %10.3f %10.0f %7.1f%%\n", name, ms, bytes / (ms * 1e-3) / 1e9, 100.0 * ideal / ms);
  };
  row("kernels, PDL", chain(true, 0));
  row("kernels, no PDL", chain(false, 0));
  row("kernels, PDL, multiplying", chain(true, 1));
  row("multiplying, early round", chain(true, 2));
  row("multiplying, x through L1", chain(true, 3));
  row("multiplying, no x", chain(true, 4));
  row("bulk-copy ring, next let in", chain(true, 6));
  row("bulk-copy ring, no trigger", chain(true, 7));
  row("bulk-copy ring, no multiply", chain(true, 8));
  row("bulk-copy ring, early release", chain(true, 9));
  // The engine's own decode products (cuda::launch_fused_gemv) on these weights, with their
  // norms and epilogues: qkv (norm), o (+= residual), gate/up (norm, SiLU), down (+= residual).
  if (only < 0) {
    float *h = nullptr, *nw = nullptr, *qkv = nullptr, *act = nullptr;
    RH_CUDA(cudaMalloc(&h, hidden * sizeof(float)));
    RH_CUDA(cudaMalloc(&nw, hidden * sizeof(float)));
    RH_CUDA(cudaMalloc(&qkv, rows[0] * sizeof(float)));
    RH_CUDA(cudaMalloc(&act, inter * sizeof(float)));
    RH_CUDA(cudaMemset(h, 0, hidden * sizeof(float)));
    RH_CUDA(cudaMemset(nw, 0, hidden * sizeof(float)));
    RH_CUDA(cudaMemset(qkv, 0, rows[0] * sizeof(float)));
    RH_CUDA(cudaMemset(act, 0, inter * sizeof(float)));
    auto engine_chain = [&] {
      return replay_ms(stream, [&] {
        for (size_t i = 0; i + 3 < streams.size(); i += 4) {
          const auto bf = cuda::Elem::kBF16;
          RH_CHECK(cuda::launch_fused_gemv(h, nw, 1e-5f, streams[i].w, bf, nullptr, 1, rows[0], cols[0], cuda::LinearMode::kStore, qkv, stream), "qkv");
          RH_CHECK(cuda::launch_fused_gemv(qkv, nullptr, 0.0f, streams[i + 1].w, bf, nullptr, 1, rows[1], cols[1], cuda::LinearMode::kAccumulate, h, stream), "o");
          RH_CHECK(cuda::launch_fused_gemv(h, nw, 1e-5f, streams[i + 2].w, bf, nullptr, 1, rows[2], cols[2], cuda::LinearMode::kSiluMul, act, stream), "gate_up");
          RH_CHECK(cuda::launch_fused_gemv(act, nullptr, 0.0f, streams[i + 3].w, bf, nullptr, 1, rows[3], cols[3], cuda::LinearMode::kAccumulate, h, stream), "down");
        }
      });
    };
    cuda::set_bulk_gemv_enabled(true);
    row("engine products, bulk", engine_chain());
    cuda::set_bulk_gemv_enabled(false);
    row("engine products, register", engine_chain());
    cuda::set_pdl_enabled(false);
    row("engine products, reg, no PDL", engine_chain());
    cuda::set_bulk_gemv_enabled(true);
    row("engine products, bulk, no PDL", engine_chain());
    cuda::set_pdl_enabled(true);
    cudaFree(h), cudaFree(nw), cudaFree(qkv), cudaFree(act);
  }
  row("one persistent kernel", 1e3 * cuda::best_event_seconds(stream, 8, [&] {
        RH_CUDA(cudaMemsetAsync(arrived, 0, sizeof(unsigned), stream));
        persistent_kernel<<<2 * sms, kThreads, smem, stream>>>(dstreams, static_cast<int>(streams.size()), x, sink,
                                                               arrived);
        RH_CUDA(cudaGetLastError());
      }));
  for (void* b : buffers) cudaFree(b);
  cudaFree(x);
  cudaFree(sink);
  cudaFree(arrived);
  cudaFree(dstreams);
  cudaFree(out);
  return 0;
}
