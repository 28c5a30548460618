#include "core/thread_pool.h"

#include <algorithm>
#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace redhare {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// About a millisecond of spinning before a worker sleeps: long enough to bridge the gap between
// the short loops of one decode step, short enough not to burn a core while idle.
constexpr int kSpinIterations = 20000;

int g_global_threads = 0;

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(int index, uint32_t gen) {
  uint64_t word = claim_.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<uint32_t>(word >> 32) != gen) return;  // a later loop already started
    uint32_t chunk = static_cast<uint32_t>(word);
    if (chunk >= task_chunks_) return;
    if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) continue;
    // The claimed chunk keeps the caller waiting, so task_ stays valid while it runs.
    int64_t begin = static_cast<int64_t>(chunk) * task_chunk_;
    int64_t end = std::min(task_n_, begin + task_chunk_);
    (*task_)(index, begin, end);
    done_.fetch_add(1, std::memory_order_acq_rel);
    word = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < kSpinIterations; ++spin) {
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load()) return;
    run_chunks(index, static_cast<uint32_t>(g));
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || n <= grain) {
    fn(0, 0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  // About four chunks per thread: enough to even out uneven progress, few enough that claiming
  // stays cheap.
  const int64_t threads = num_threads();
  int64_t chunk = (n + threads * 4 - 1) / (threads * 4);
  chunk = (chunk + grain - 1) / grain * grain;
  task_ = &fn;
  task_n_ = n;
  task_chunk_ = chunk;
  task_chunks_ = static_cast<uint32_t>((n + chunk - 1) / chunk);
  done_.store(0, std::memory_order_relaxed);
  uint32_t gen;
  {
    // Taking the mutex orders the generation bump against a worker about to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    gen = static_cast<uint32_t>(generation_.load(std::memory_order_relaxed) + 1);
    claim_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_chunks(0, gen);
  while (done_.load(std::memory_order_acquire) != task_chunks_) cpu_relax();
  // Close the loop before its fields change for the next one: a worker that still holds this
  // generation's counter value would otherwise claim a chunk against the next loop's size.
  claim_.store((static_cast<uint64_t>(gen) << 32) | 0xffffffffu, std::memory_order_release);
  task_ = nullptr;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(g_global_threads);
  return pool;
}

void ThreadPool::set_global_threads(int num_threads) { g_global_threads = num_threads; }

}  // namespace redhare
