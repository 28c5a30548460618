// A fixed pool of worker threads for data-parallel loops.
//
// Decode steps issue a hundred or more short parallel loops per token, so waking workers through a
// condition variable each time would cost a visible fraction of the step. Workers instead spin on a
// generation counter for a short while before they sleep; the calling thread takes a share of the
// work itself.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace redhare {

class ThreadPool {
 public:
  // num_threads counts the caller; 0 means one per hardware thread.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(thread_index, begin, end) over [0, n) split into one contiguous range per thread,
  // each range a multiple of `grain` (except the last). Returns when all ranges are done. Not
  // re-entrant: fn must not call parallel_for on the same pool.
  void parallel_for(int64_t n, int64_t grain,
                    const std::function<void(int, int64_t, int64_t)>& fn);

  // The process-wide pool used by the CPU backend.
  static ThreadPool& global();
  // Sets the size of the global pool before its first use (0 = hardware threads).
  static void set_global_threads(int num_threads);

 private:
  void worker_loop(int index);
  void run_range(int index);

  std::vector<std::thread> workers_;
  const std::function<void(int, int64_t, int64_t)>* task_ = nullptr;
  int64_t task_n_ = 0;
  int64_t task_grain_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex call_mutex_;
};

}  // namespace redhare
