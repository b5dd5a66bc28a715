// ReadPool: the completion machinery of the thread-pool backends (pread, mmap, cuFile). Worker threads take
// queued requests in order, run a read function on them, and post completions that Reap() waits
// for.
//
// Thread-safety: every method may be called from any thread. Cancel() completes every request not
// yet started with kCancelled; requests already running finish normally. The destructor cancels
// what is queued and joins the workers, so no read touches a buffer after it returns.
#ifndef FLASHLOAD_IO_READ_POOL_H_
#define FLASHLOAD_IO_READ_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "flashload/deadline.h"
#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload::io_internal {

class ReadPool {
 public:
  // Reads one request on worker `worker` (0..threads-1); returns the bytes placed at dst.
  using ReadFn = std::function<Result<size_t>(const ReadRequest& request, uint32_t worker)>;

  ReadPool(uint32_t threads, ReadFn read, std::string name);
  ~ReadPool();
  ReadPool(const ReadPool&) = delete;
  ReadPool& operator=(const ReadPool&) = delete;

  void Enqueue(std::span<const ReadRequest> requests);
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline);
  void Cancel();

 private:
  void Work(uint32_t worker);

  const ReadFn read_;
  const std::string name_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<ReadRequest> queued_;
  std::deque<ReadResult> done_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// A source whose batches run on a ReadPool (pread, mmap, cuFile backends): Submit/Reap/Cancel go
// to pool(). The derived class owns the pool as its last member, so the pool's workers are joined
// before anything they use is destroyed.
class PooledSource : public Source {
 public:
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    return pool().Reap(out, deadline);
  }
  void Cancel() override { pool().Cancel(); }

 protected:
  virtual ReadPool& pool() = 0;
  Status DoSubmit(std::span<const ReadRequest> requests) override {
    pool().Enqueue(requests);
    return Status();
  }
};

}  // namespace flashload::io_internal

#endif  // FLASHLOAD_IO_READ_POOL_H_
