// The FP8 (kF8B128) decode products alone: each Llama-3.1-8B decode product at 1 to 4 activation
// rows, timed beside its bound (the weight bytes over the HBM read bandwidth measured here, a 2 GiB
// streaming read). Unlike bench_cuda's per-product table, which repeats one weight matrix (the
// smaller ones partly stay in L2 between calls), each launch here reads another copy of the
// weights, at least 256 MB of copies in rotation, so every byte comes from DRAM; and the launches
// are replayed from a CUDA graph, as decode steps are, so launch gaps are those of a step.
// Weights are random e4m3 bytes (no NaN) with random block scales, activations random.
//
//   bench_fp8_decode [--rows 1,2,3,4] [--kernel tc|exact] [--pdl 1] [--reps 200] [--graph 1]
//                    [--copies 0]
//
// --kernel tc: the tensor-core mode's decode kernel (launch_fp8_decode, bf16 activations);
// bulk: the bulk-copy kernel (launch_bulk_gemv_fp8, sm_90+, one row, same numerics);
// exact: exact mode's fp8_gemv_kernel (launch_fused_fp8_gemv, f32 activations).
// --copies N: N copies of each matrix in rotation instead (1: the same one every launch, which
// stays in the 50 MB L2 where it fits: the kernel's pace when the weights come quickly).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "bench_args.h"

using namespace redhare;

namespace {

using redhare::bench::parse_list;

// One kF8B128 matrix [N, K] on the host: random e4m3 bytes (0x7F / 0xFF, the NaNs, excluded),
// one scale in [5e-4, 5e-3) per 128 x 128 block (as checkpoints and redhare convert have them,
// so the device layout holds the block table), zero padding.
std::vector<uint8_t> random_fp8_rows(int64_t N, int64_t K, std::mt19937& rng) {
  const int64_t blocks = K / 128;
  std::vector<uint8_t> w(static_cast<size_t>(N * blocks * 144), 0);
  std::uniform_real_distribution<float> scale(0.0005f, 0.005f);
  std::vector<float> table(static_cast<size_t>((N + 127) / 128 * blocks));
  for (float& t : table) t = scale(rng);
  uint32_t state = rng();
  for (int64_t b = 0; b < N * blocks; ++b) {
    uint8_t* blk = w.data() + b * 144;
    for (int k = 0; k < 128; ++k) {
      state = state * 1664525u + 1013904223u;
      uint8_t v = static_cast<uint8_t>(state >> 24);
      if ((v & 0x7F) == 0x7F) v = 0;
      blk[k] = v;
    }
    const float s = table[static_cast<size_t>(b / blocks / 128 * blocks + b % blocks)];
    std::memcpy(blk + 128, &s, 4);
  }
  return w;
}

std::vector<float> random_floats(int64_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = d(rng);
  return v;
}

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  RH_CUDA(cudaMalloc(&p, v.size() * sizeof(T)));
  RH_CUDA(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> rows = {1, 2, 3, 4};
  std::string kernel = "tc";
  bool graph = true;
  int reps = 200, copies_asked = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--rows") rows = parse_list(v);
    else if (a == "--kernel") kernel = v;
    else if (a == "--pdl") cuda::set_pdl_enabled(v != "0");
    else if (a == "--reps") reps = std::max(1, std::stoi(v));
    else if (a == "--graph") graph = v != "0";
    else if (a == "--copies") copies_asked = std::max(0, std::stoi(v));
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (cuda_device_count() == 0) fail("bench_fp8_decode: no CUDA device");
    if (kernel != "tc" && kernel != "bulk" && kernel != "exact") fail("--kernel must be tc, bulk or exact");
    if (kernel == "bulk") rows = {1};
    for (int64_t m : rows)
      if (m < 1 || m > cuda::kFp8DecodeMaxRows) fail("--rows must be 1 to ", cuda::kFp8DecodeMaxRows);
    RH_CUDA(cudaSetDevice(0));
    cudaDeviceProp prop;
    RH_CUDA(cudaGetDeviceProperties(&prop, 0));
    const double bw = cuda_read_bandwidth(0);
    std::printf("device             %s (%d SMs, %.0f MB L2)\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize / 1e6);
    std::printf("HBM read bandwidth %.0f GB/s (2 GiB streaming read, best of 5)\n", bw / 1e9);
    std::printf("kernel             %s, PDL %s, %s, %d launches per timing, best of 5\n",
                kernel == "tc"     ? "tensor-core decode (launch_fp8_decode)"
                : kernel == "bulk" ? "bulk copy (launch_bulk_gemv_fp8)"
                                   : "exact (launch_fused_fp8_gemv)",
                cuda::pdl_enabled() ? "on" : "off", graph ? "replayed from a CUDA graph" : "direct launches", reps);

    struct Shape {
      const char* name;
      int64_t N, K;
      bool norm;
      cuda::LinearMode mode;
    };
    // Llama-3.1-8B: hidden 4096, intermediate 14336, 32 query and 8 KV heads of 128.
    const Shape shapes[] = {{"qkv (norm folded in)", 6144, 4096, true, cuda::LinearMode::kStore},
                            {"o (+= residual)", 4096, 4096, false, cuda::LinearMode::kAccumulate},
                            {"gate_up (norm, SiLU)", 2 * 14336, 4096, true, cuda::LinearMode::kSiluMul},
                            {"down (+= residual)", 4096, 14336, false, cuda::LinearMode::kAccumulate}};
    std::mt19937 rng(1234);
    cudaStream_t stream;
    RH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    RH_CUDA(cudaEventCreate(&e0));
    RH_CUDA(cudaEventCreate(&e1));
    std::printf("\n%-22s %4s %10s %10s %10s %8s\n", "product", "M", "us", "bound us", "GB/s", "of read");
    for (const Shape& s : shapes) {
      const std::vector<uint8_t> blocks = random_fp8_rows(s.N, s.K, rng);
      std::vector<uint8_t> host_w(blocks.size());
      cuda::fp8_blocks_to_device_layout(blocks.data(), s.N, s.K, host_w.data());  // as CudaBackend::upload
      // Bytes a product reads: the e4m3 values and the f32 block scales (not the layout's padding).
      const int64_t bytes = s.N * s.K + s.N * (s.K / 128) * static_cast<int64_t>(sizeof(float));
      const int copies = copies_asked > 0 ? copies_asked
                                          : static_cast<int>(std::max<int64_t>(2, ((int64_t{256} << 20) + bytes - 1) / bytes));
      std::vector<uint8_t*> w(static_cast<size_t>(copies));
      for (auto& p : w) {
        RH_CUDA(cudaMalloc(&p, host_w.size()));
        RH_CUDA(cudaMemcpy(p, host_w.data(), host_w.size(), cudaMemcpyHostToDevice));
      }
      const int64_t max_m = *std::max_element(rows.begin(), rows.end());
      float* x = to_device(random_floats(max_m * s.K, -1.0f, 1.0f, rng));
      float* nw = to_device(random_floats(s.K, 0.5f, 1.5f, rng));
      const int64_t cols = s.mode == cuda::LinearMode::kSiluMul ? s.N / 2 : s.N;
      float* out = to_device(random_floats(max_m * cols, -1.0f, 1.0f, rng));
      for (int64_t M : rows) {
        auto launch = [&](int i) {
          const void* wi = w[static_cast<size_t>(i % copies)];
          const float* norm = s.norm ? nw : nullptr;
          const bool ok =
              kernel == "tc"     ? cuda::launch_fp8_decode(x, norm, 1e-5f, wi, nullptr, M, s.N, s.K, s.mode, out, stream)
              : kernel == "bulk" ? cuda::launch_bulk_gemv_fp8(x, norm, 1e-5f, wi, nullptr, M, s.N, s.K, s.mode, out,
                                                              stream)
                                 : cuda::launch_fused_fp8_gemv(x, norm, 1e-5f, wi, nullptr, M, s.N, s.K, s.mode, out,
                                                               stream);
          if (!ok) fail("the kernel declined M=", M, " N=", s.N, " K=", s.K);
        };
        for (int i = 0; i < 2 * copies; ++i) launch(i);  // warm-up (module load, attributes)
        RH_CUDA(cudaStreamSynchronize(stream));
        cudaGraphExec_t exec = nullptr;
        if (graph) {
          cudaGraph_t g;
          RH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
          for (int i = 0; i < reps; ++i) launch(i);
          RH_CUDA(cudaStreamEndCapture(stream, &g));
          RH_CUDA(cudaGraphInstantiate(&exec, g, 0));
          RH_CUDA(cudaGraphDestroy(g));
          RH_CUDA(cudaGraphLaunch(exec, stream));  // warm-up
        }
        double best = 1e30;
        for (int t = 0; t < 5; ++t) {
          RH_CUDA(cudaEventRecord(e0, stream));
          if (graph) RH_CUDA(cudaGraphLaunch(exec, stream));
          else
            for (int i = 0; i < reps; ++i) launch(i);
          RH_CUDA(cudaEventRecord(e1, stream));
          RH_CUDA(cudaEventSynchronize(e1));
          float ms = 0;
          RH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
          best = std::min(best, static_cast<double>(ms) * 1e-3 / reps);
        }
        if (exec) RH_CUDA(cudaGraphExecDestroy(exec));
        const double gbs = static_cast<double>(bytes) / best / 1e9;
        std::printf("%-22s %4lld %10.2f %10.2f %10.0f %7.1f%%\n", s.name, static_cast<long long>(M), best * 1e6,
                    static_cast<double>(bytes) / bw * 1e6, gbs, 100.0 * gbs * 1e9 / bw);
        std::fflush(stdout);
      }
      for (auto* p : w) RH_CUDA(cudaFree(p));
      RH_CUDA(cudaFree(x));
      RH_CUDA(cudaFree(nw));
      RH_CUDA(cudaFree(out));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fp8_decode: error: %s\n", e.what());
    return 1;
  }
}
