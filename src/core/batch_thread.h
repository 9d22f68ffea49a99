// The shape of group commit, shared by the spool's Committer and the Maildir writer: one worker
// thread takes every request waiting when it wakes as one batch and hands it to `process`, so
// requests that arrive while a batch is being made durable share the next batch's syncs.
//
// Requests are processed in submission order. `process` runs on the worker thread only and
// must complete every request of its batch (callbacks included) before it returns. stop() (and
// the destructor) processes everything queued, then joins the thread. The owner must keep what
// `process` uses alive until then: call stop() first in the owner's destructor.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tern {

template <typename Request>
class BatchThread {
 public:
  using Process = std::function<void(std::vector<Request>&)>;

  explicit BatchThread(Process process) : process_(std::move(process)), thread_([this] { run(); }) {}
  ~BatchThread() { stop(); }
  BatchThread(const BatchThread&) = delete;
  BatchThread& operator=(const BatchThread&) = delete;

  void push(Request request) {
    {
      std::lock_guard lock(mutex_);
      waiting_.push_back(std::move(request));
      ++submitted_;
    }
    wake_.notify_one();
  }

  // Blocks until every request pushed before the call has been processed.
  void drain() {
    std::unique_lock lock(mutex_);
    uint64_t target = submitted_;
    idle_.wait(lock, [&] { return completed_ >= target; });
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  struct Stats {
    uint64_t batches = 0;
    uint64_t requests = 0;
    uint64_t largest_batch = 0;
  };
  Stats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  void run() {
    for (;;) {
      std::vector<Request> batch;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
        if (waiting_.empty()) return;  // stopping, and nothing left to do
        batch.swap(waiting_);
      }
      process_(batch);
      {
        std::lock_guard lock(mutex_);
        completed_ += batch.size();
        ++stats_.batches;
        stats_.requests += batch.size();
        stats_.largest_batch = std::max<uint64_t>(stats_.largest_batch, batch.size());
      }
      idle_.notify_all();
    }
  }

  Process process_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::vector<Request> waiting_;
  uint64_t submitted_ = 0, completed_ = 0;
  bool stopping_ = false;
  Stats stats_;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace tern
