// StagingBudget: a byte budget for reads in flight and staging buffers, with back-pressure.
//
// Acquire() blocks while the budget is spent, so a fast source cannot run ahead of a slow sink and
// memory stays bounded. Cancel() wakes every waiter (they return false) and is final: every later
// Acquire() and TryAcquire() returns false too.
//
// Thread-safety: every member may be called from any thread at once. Lifetime: the budget must
// outlive every thread that may still wait in Acquire() (cancel it, then join them). Each
// successful acquisition is given back with Release() of the same byte count; sizes are clamped
// to the capacity on both sides, so they match.
#ifndef FLASHLOAD_ENGINE_STAGING_BUDGET_H_
#define FLASHLOAD_ENGINE_STAGING_BUDGET_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace flashload::engine {

class StagingBudget {
 public:
  explicit StagingBudget(uint64_t bytes) : capacity_(bytes) {}

  // Takes `bytes` (clamped to the capacity, so one oversized request can always proceed alone).
  // Returns false when cancelled.
  bool Acquire(uint64_t bytes);
  // Takes `bytes` (clamped likewise) only if available now; false otherwise or when cancelled.
  bool TryAcquire(uint64_t bytes);
  // Gives back `bytes` (clamped; never below zero in use) and wakes the waiters.
  void Release(uint64_t bytes);
  void Cancel();

  uint64_t capacity() const { return capacity_; }
  uint64_t in_use() const;
  uint64_t peak() const;  // the most ever in use at once

 private:
  uint64_t Clamp(uint64_t bytes) const { return bytes < capacity_ ? bytes : capacity_; }

  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t used_ = 0;
  uint64_t peak_ = 0;
  bool cancelled_ = false;
};

}  // namespace flashload::engine

#endif  // FLASHLOAD_ENGINE_STAGING_BUDGET_H_
