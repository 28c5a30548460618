// A fixed pool of worker threads for data-parallel loops.
//
// Decode steps issue a hundred or more short parallel loops per token, so waking workers through a
// condition variable each time would cost a visible fraction of the step. Workers instead spin on a
// generation counter for a short while before they sleep. Work is split into chunks that the
// caller and the workers claim from one atomic counter: a worker that the OS has not scheduled
// yet simply claims nothing, and the caller does its share, so a busy machine slows a loop down
// but never stalls it on a sleeping thread.
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

  // Calls fn(thread_index, begin, end) over [0, n) split into contiguous chunks, each a multiple of
  // `grain` long (except the last), spread over the threads. Returns when all chunks are done.
  // thread_index < num_threads() is stable within one call. Not re-entrant: fn must not call
  // parallel_for on the same pool.
  void parallel_for(int64_t n, int64_t grain,
                    const std::function<void(int, int64_t, int64_t)>& fn);

  // The process-wide pool used by the CPU backend.
  static ThreadPool& global();
  // Sets the size of the global pool before its first use (0 = hardware threads).
  static void set_global_threads(int num_threads);

 private:
  void worker_loop(int index);
  // Claims and runs chunks of the loop of generation `gen` until none is left.
  void run_chunks(int index, uint32_t gen);

  std::vector<std::thread> workers_;
  const std::function<void(int, int64_t, int64_t)>* task_ = nullptr;
  int64_t task_n_ = 0;
  int64_t task_chunk_ = 1;
  uint32_t task_chunks_ = 0;
  // High 32 bits: the loop's generation; low 32 bits: the next unclaimed chunk.
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex call_mutex_;
};

}  // namespace redhare
