// The ceiling of a batch-1 decode step built from one kernel per product: a model's decoder
// products (qkv, o, gate/up, down per layer, bf16) streamed as a chain of dependent kernels that
// do nothing but read their weights, timed against the HBM read bandwidth (a 2 GiB streaming
// read, the denominator of bench_cuda's bounds). No multiply, no attention, no LM head: what the
// chain loses is what the boundaries between dependent streams cost (the memory pipeline drains
// at each and fills again), so no decode step made of such kernels can beat it.
//
//   bench_stream_chain [--hidden 4096] [--intermediate 14336] [--heads 32] [--kv-heads 8]
//                      [--head-dim 128] [--layers 32]
//
// Variants, each one graph (or one launch) replayed, best of 8:
// - kernels, PDL: one kernel per product, launched as the engine launches its decode products
//   (programmatic dependent launch, a grid of what fits, two blocks of 8 warps per SM, a warp
//   streaming a weight row at a time in double-buffered rounds of 16-byte loads), each kernel
//   reading a 16 KB activation vector after its wait, as the norm prologue does;
// - kernels, no PDL: the same, ordinary launches;
// - kernels, PDL, multiplying: the same with a decode product's work on the stream (bf16 weights
//   times an f32 activation row in shared memory, a warp sum and a store per row): what the
//   arithmetic adds; "early round": the warp's first round of weights issued before the
//   activations are staged rather than after;
// - one persistent kernel: the same streams as phases of one grid separated by grid barriers,
//   each block loading its first round of the next phase before it arrives at the barrier.
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
// activation row staged in shared memory (f32 FMA per element), a warp sum and a store per row.
template <bool kEarly>
__global__ void __launch_bounds__(kThreads) multiply_kernel(Stream s, const float* x, float* out) {
  extern __shared__ __align__(16) float xs[];
  __shared__ float red[kWarps];
  wait_previous();
  const WarpShare share(s);
  uint4 a[kRound];
  if (kEarly && share.total > 0) share.load(a, 0);  // the first round in flight while x is staged
  const int64_t K = s.row_words * 8;
  const float scale = read_activations(x, red) + 1.0f;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) xs[k] = __ldcg(x + k % kActivations) * scale;
  __syncthreads();
  float acc = 0.0f;
  share.stream(a, kEarly, [&](const uint4 (&buf)[kRound], int64_t i) {
    const int64_t r = i % share.per_row;
#pragma unroll
    for (int u = 0; u < kRound; ++u) {
      const float4* xv = reinterpret_cast<const float4*>(xs + (r * 32 * kRound + 32 * u + share.lane) * 8);
      const float4 x0 = xv[0], x1 = xv[1];
      const uint32_t w[4] = {buf[u].x, buf[u].y, buf[u].z, buf[u].w};
      const float xf[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
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


}  // namespace

int main(int argc, char** argv) {
  int64_t hidden = 4096, inter = 14336, heads = 32, kv_heads = 8, head_dim = 128, layers = 32;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::stoll(argv[i + 1]);
    if (a == "--hidden") hidden = v;
    else if (a == "--intermediate") inter = v;
    else if (a == "--heads") heads = v;
    else if (a == "--kv-heads") kv_heads = v;
    else if (a == "--head-dim") head_dim = v;
    else if (a == "--layers") layers = v;
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

  RH_CUDA(cudaFuncSetAttribute(multiply_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  RH_CUDA(cudaFuncSetAttribute(multiply_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  RH_CHECK(*std::max_element(cols, cols + 4) * 4 <= smem, "activation rows too long for ", smem, " bytes");
  float* out = nullptr;
  RH_CUDA(cudaMalloc(&out, static_cast<size_t>(*std::max_element(rows, rows + 4)) * sizeof(float)));
  auto chain = [&](bool pdl, int multiply) {
    cudaGraph_t g;
    cudaGraphExec_t exec;
    RH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
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
      if (multiply == 1) RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<false>, s, static_cast<const float*>(x), out));
      else if (multiply == 2) RH_CUDA(cudaLaunchKernelEx(&cfg, multiply_kernel<true>, s, static_cast<const float*>(x), out));
      else RH_CUDA(cudaLaunchKernelEx(&cfg, stream_kernel, s, static_cast<const float*>(x), sink));
    }
    RH_CUDA(cudaStreamEndCapture(stream, &g));
    RH_CUDA(cudaGraphInstantiate(&exec, g, 0));
    RH_CUDA(cudaGraphDestroy(g));
    const double ms = 1e3 * cuda::best_event_seconds(stream, 8, [&] { RH_CUDA(cudaGraphLaunch(exec, stream)); });
    RH_CUDA(cudaGraphExecDestroy(exec));
    return ms;
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
