// Single-sequence decode (m = 1) matrix-vector speed of the quant kernels, as weight bytes read
// per second, next to the memory read bandwidth measured in the same run with the same pool.
//
// The matrices are those of Llama-3.2-1B layers (hidden 2048, 32 query / 8 KV heads of 64,
// MLP 8192): q 2048x2048, k and v 512x2048, o 2048x2048, gate and up 8192x2048, down 2048x8192.
// All 16 layers are used, and more if needed to make the weights at least four times the
// last-level cache: server L3s keep part of a working set only twice their size between passes,
// which would flatter both the kernels and the bound.
//
// Usage: bench_quant [threads (0 = all)] [seconds per measurement]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "backends/cpu/quant.h"
#include "core/dtype.h"
#include "core/thread_pool.h"

namespace {

using redhare::DType;
using redhare::QuantIsa;
using redhare::ThreadPool;
using Clock = std::chrono::steady_clock;

struct Matrix {
  int64_t rows, k;
};
constexpr Matrix kLayer[] = {{2048, 2048}, {512, 2048},  {512, 2048}, {2048, 2048},
                             {8192, 2048}, {8192, 2048}, {2048, 8192}};
constexpr int kModelLayers = 16;
// Every working set is at least this many times the last-level cache.
constexpr int64_t kCacheMultiple = 4;

int64_t last_level_cache_bytes() {
  long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? l3 : int64_t{32} << 20;
}

// Runs fn repeatedly for about `seconds` and returns the fastest single run in seconds: the
// machine is shared, and the fastest run is the one least disturbed.
template <typename Fn>
double best_time(double seconds, Fn fn) {
  fn();  // warm-up: page faults, thread wake-up
  double best = 1e30;
  auto start = Clock::now();
  int runs = 0;
  while (runs < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    ++runs;
  }
  return best;
}

__attribute__((target("avx2"))) uint64_t sum_bytes(const uint8_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 128 <= n; i += 128) {
    // The same software prefetch as the kernels, so the bound is the best this loop can read.
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 2048, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 2048 + 64, _MM_HINT_T0);
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// Streaming read of a buffer far larger than the last-level cache, split over the pool's
// threads the same way the kernels split rows. The machine may be shared, so the bound is
// probed again before each weight type and the highest reading so far is the one used.
class BandwidthProbe {
 public:
  BandwidthProbe()
      : bytes_(std::max(int64_t{1} << 30, kCacheMultiple * last_level_cache_bytes()) / 4096 * 4096),
        buf_(static_cast<uint8_t*>(std::aligned_alloc(4096, static_cast<size_t>(bytes_)))) {
    ThreadPool::global().parallel_for(bytes_ / 4096, 64, [&](int, int64_t b, int64_t e) {
      std::memset(buf_ + b * 4096, 1, static_cast<size_t>((e - b) * 4096));
    });
  }
  ~BandwidthProbe() { std::free(buf_); }
  BandwidthProbe(const BandwidthProbe&) = delete;
  BandwidthProbe& operator=(const BandwidthProbe&) = delete;

  // Returns the best GB/s seen over all probes so far.
  double probe(double seconds) {
    ThreadPool& pool = ThreadPool::global();
    std::vector<uint64_t> sink(static_cast<size_t>(pool.num_threads()) * 8);
    double t = best_time(seconds, [&] {
      pool.parallel_for(bytes_ / 4096, 64, [&](int tid, int64_t b, int64_t e) {
        sink[static_cast<size_t>(tid) * 8] += sum_bytes(buf_ + b * 4096, (e - b) * 4096);
      });
    });
    double gbs = static_cast<double>(bytes_) / t / 1e9;
    lowest_ = std::min(lowest_, gbs);
    best_ = std::max(best_, gbs);
    return best_;
  }
  double lowest() const { return lowest_; }
  double best() const { return best_; }

 private:
  int64_t bytes_;
  uint8_t* buf_;
  double lowest_ = 1e30, best_ = 0;
};

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
uint64_t next_random() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

// Random packed blocks with small ordinary f16 scales, so no NaN slows anything down.
std::vector<uint8_t> random_matrix(DType t, int64_t rows, int64_t k) {
  std::vector<uint8_t> w(static_cast<size_t>(redhare::dtype_bytes(t, rows * k)));
  for (size_t i = 0; i + 8 <= w.size(); i += 8) {
    uint64_t r = next_random();
    std::memcpy(&w[i], &r, 8);
  }
  const redhare::DTypeInfo& info = redhare::dtype_info(t);
  const uint16_t scale = redhare::f32_to_f16(0.01f);
  const int offsets[2] = {t == DType::kQ6_K ? 208 : 0, 2};
  const int n_offsets =
      (t == DType::kQ4_1 || t == DType::kQ5_1 || t == DType::kQ4_K || t == DType::kQ5_K) ? 2 : 1;
  for (size_t b = 0; b < w.size(); b += static_cast<size_t>(info.block_bytes))
    for (int j = 0; j < n_offsets; ++j)
      std::memcpy(&w[b + static_cast<size_t>(offsets[j])], &scale, 2);
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  ThreadPool::set_global_threads(threads);
  ThreadPool& pool = ThreadPool::global();

  BandwidthProbe probe;
  std::printf(
      "threads %d, memory read bandwidth %.1f GB/s (streaming read of >= 4x L3, best run)\n",
      pool.num_threads(), probe.probe(seconds));
  std::printf("m = 1 over Llama-3.2-1B layers (>= 16 and >= 4x the %.0f MiB L3); GB/s of weights\n",
              static_cast<double>(last_level_cache_bytes()) / (1 << 20));
  std::printf(
      "(one big: a single k = 8192 matrix of >= 4x L3, one parallel loop per pass, which\n"
      " separates the kernels' speed from the cost of 112+ short parallel loops)\n");
  std::printf("%-6s %-12s %9s %10s %9s %8s %14s %8s\n", "type", "isa", "MB", "ms/pass", "GB/s",
              "of bw", "one big GB/s", "of bw");

  const DType types[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K,
                         DType::kQ5_0, DType::kQ5_1, DType::kQ5_K, DType::kBF16};
  std::vector<float> x(8192), y(8192);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(static_cast<int64_t>(next_random() % 2001) - 1000) / 1000.0f;

  for (DType t : types) {
    const double bw = probe.probe(seconds);
    std::vector<std::vector<uint8_t>> weights;
    std::vector<Matrix> shapes;
    int64_t total = 0;
    for (int l = 0; l < kModelLayers || total < kCacheMultiple * last_level_cache_bytes(); ++l)
      for (const Matrix& mx : kLayer) {
        weights.push_back(random_matrix(t, mx.rows, mx.k));
        shapes.push_back(mx);
        total += static_cast<int64_t>(weights.back().size());
      }
    const int64_t big_k = 8192;
    const int64_t big_rows =
        kCacheMultiple * last_level_cache_bytes() / redhare::dtype_bytes(t, big_k) + 1;
    std::vector<uint8_t> big = random_matrix(t, big_rows, big_k);
    std::vector<float> big_y(static_cast<size_t>(big_rows));
    for (QuantIsa isa : {QuantIsa::kAvx2, QuantIsa::kAvx512}) {
      if (!redhare::quant_isa_available(isa)) continue;
      double s = best_time(seconds, [&] {
        for (size_t i = 0; i < weights.size(); ++i)
          redhare::quant_matmul_isa(isa, t, weights[i].data(), shapes[i].rows, shapes[i].k,
                                    x.data(), 1, y.data());
      });
      double s_big = best_time(seconds, [&] {
        redhare::quant_matmul_isa(isa, t, big.data(), big_rows, big_k, x.data(), 1, big_y.data());
      });
      double gbs = static_cast<double>(total) / s / 1e9;
      double gbs_big = static_cast<double>(big.size()) / s_big / 1e9;
      std::printf("%-6s %-12s %9.1f %10.3f %9.1f %7.0f%% %14.1f %7.0f%%\n",
                  std::string(redhare::dtype_name(t)).c_str(),
                  std::string(redhare::quant_isa_name(isa)).c_str(), total / 1e6, s * 1e3, gbs,
                  100.0 * gbs / bw, gbs_big, 100.0 * gbs_big / bw);
    }
  }
  std::printf(
      "memory read bandwidth over %d probes: lowest %.1f, highest %.1f GB/s ('of bw' uses\n"
      "the highest so far at each row)\n",
      static_cast<int>(std::size(types)) + 1, probe.lowest(), probe.best());
  return 0;
}
