// Why this file exists: decoding calls hundreds of small parallel loops per token, so threads must be
// created once and woken cheaply; Highway 1.0.3 has no pool, and the result must not depend on the
// thread count (work is split by output rows, each computed by exactly one thread the same way).
#ifndef BORA_BASE_THREAD_POOL_HPP
#define BORA_BASE_THREAD_POOL_HPP

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace bora {

// A host's own job system (a game engine's workers, say), to run the parallel loops instead of
// bora's threads. run(host, parts, task, job) must call task(job, part) once for every part in
// [0, parts), on any threads, and return when all calls have returned.
struct HostThreads {
  void (*run)(void* host, int parts, void (*task)(void* job, int part), void* job) = nullptr;
  void* host = nullptr;
  int n_threads = 1;  // parts a loop is split into at most
};

class ThreadPool {
 public:
  // `n_threads` counts the calling thread: 1 means "run everything on the caller", no workers.
  explicit ThreadPool(int n_threads = 1) {
    if (n_threads < 1) n_threads = 1;
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }
  // Parallel loops go to the host's job system; the pool starts no threads of its own.
  explicit ThreadPool(const HostThreads& host) : host_(host) {
    n_threads_ = host.run != nullptr && host.n_threads > 1 ? host.n_threads : 1;
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  int size() const { return n_threads_; }

  // Calls body(begin, end, thread_index) on contiguous, disjoint parts of [0, n) — one part per
  // thread — and returns when all are done. No allocation: the body is passed by pointer.
  // `max_threads` (0 = all) lets one pool serve both the prefill and the decode thread counts.
  template <class Body>
  void parallel_for(int64_t n, const Body& body, int max_threads = 0) {
    if (n <= 0) return;
    int threads = n_threads_;
    if (max_threads > 0 && max_threads < threads) threads = max_threads;
    const int parts = static_cast<int>(n < threads ? n : threads);
    if (parts == 1) {
      body(int64_t{0}, n, 0);
      return;
    }
    if (host_.run != nullptr) {
      HostJob<Body> job{&body, n, parts};
      host_.run(host_.host, parts, &HostJob<Body>::run_part, &job);
      return;
    }
    job_.context = &body;
    job_.invoke = [](const void* context, int64_t begin, int64_t end, int thread) {
      (*static_cast<const Body*>(context))(begin, end, thread);
    };
    job_.n = n;
    job_.parts = parts;
    // Every worker acknowledges every job (even with no part of it), so none can lag into the next.
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_part(0);
    // Workers finish within microseconds on balanced loops: spin first, then yield.
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin > 4096) std::this_thread::yield();
    }
  }

 private:
  template <class Body>
  struct HostJob {
    const Body* body;
    int64_t n;
    int parts;
    static void run_part(void* self, int part) {
      const HostJob& job = *static_cast<const HostJob*>(self);
      if (part < 0 || part >= job.parts) return;
      (*job.body)(job.n * part / job.parts, job.n * (part + 1) / job.parts, part);
    }
  };

  struct Job {
    const void* context = nullptr;
    void (*invoke)(const void*, int64_t, int64_t, int) = nullptr;
    int64_t n = 0;
    int parts = 0;
  };

  void run_part(int part) {
    const int64_t begin = job_.n * part / job_.parts;
    const int64_t end = job_.n * (part + 1) / job_.parts;
    job_.invoke(job_.context, begin, end, part);
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      // Spin briefly for the next job (the next matmul of the same token follows at once),
      // then sleep on the condition variable so idle sessions cost no CPU.
      uint64_t now = generation_.load(std::memory_order_acquire);
      for (int spin = 0; now == seen && spin < 20000; ++spin) {
        now = generation_.load(std::memory_order_acquire);
      }
      if (now == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        now = generation_.load(std::memory_order_acquire);
      }
      seen = now;
      if (stopping_) return;
      if (index < job_.parts) run_part(index);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  Job job_;
  bool stopping_ = false;
  HostThreads host_;
};

}  // namespace bora

#endif  // BORA_BASE_THREAD_POOL_HPP
