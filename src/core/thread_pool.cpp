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

void ThreadPool::run_range(int index) {
  int64_t threads = num_threads();
  int64_t blocks = (task_n_ + task_grain_ - 1) / task_grain_;
  int64_t per = blocks / threads, extra = blocks % threads;
  int64_t b0 = index * per + std::min<int64_t>(index, extra);
  int64_t b1 = b0 + per + (index < extra ? 1 : 0);
  int64_t begin = b0 * task_grain_, end = std::min(task_n_, b1 * task_grain_);
  if (begin < end) (*task_)(index, begin, end);
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
    run_range(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
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
  task_ = &fn;
  task_n_ = n;
  task_grain_ = grain;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_release);
  {
    // Taking the mutex orders the generation bump against a worker about to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_range(0);
  while (pending_.load(std::memory_order_acquire) != 0) cpu_relax();
  task_ = nullptr;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(g_global_threads);
  return pool;
}

void ThreadPool::set_global_threads(int num_threads) { g_global_threads = num_threads; }

}  // namespace redhare
