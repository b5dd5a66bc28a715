#include "io/read_pool.h"

#include <fmt/format.h>

#include "common/completions.h"

namespace flashload::io_internal {

ReadPool::ReadPool(uint32_t threads, ReadFn read, std::string name)
    : read_(std::move(read)), name_(std::move(name)) {
  workers_.reserve(threads);
  for (uint32_t i = 0; i < threads; ++i) workers_.emplace_back([this, i] { Work(i); });
}

ReadPool::~ReadPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    queued_.clear();
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ReadPool::Enqueue(std::span<const ReadRequest> requests) {
  {
    std::lock_guard lock(mu_);
    queued_.insert(queued_.end(), requests.begin(), requests.end());
  }
  if (requests.size() == 1) {
    work_cv_.notify_one();
  } else {
    work_cv_.notify_all();
  }
}

Result<size_t> ReadPool::Reap(std::span<ReadResult> out, Deadline deadline) {
  if (out.empty()) return size_t{0};
  std::unique_lock lock(mu_);
  return common_internal::TakeCompletions(lock, done_cv_, done_, out, deadline);
}

void ReadPool::Cancel() {
  {
    std::lock_guard lock(mu_);
    if (queued_.empty()) return;
    for (const ReadRequest& r : queued_) {
      done_.push_back(ReadResult{
          r.tag, 0,
          CancelledError(fmt::format("{}: read at byte offset {} cancelled", name_, r.offset))});
    }
    queued_.clear();
  }
  done_cv_.notify_all();
}

void ReadPool::Work(uint32_t worker) {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queued_.empty(); });
    if (stop_) return;
    const ReadRequest r = queued_.front();
    queued_.pop_front();
    lock.unlock();
    Result<size_t> n = read_(r, worker);
    ReadResult result{r.tag, n.ok() ? *n : 0, n.status()};
    lock.lock();
    done_.push_back(std::move(result));
    done_cv_.notify_one();
  }
}

}  // namespace flashload::io_internal
