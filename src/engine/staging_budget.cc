#include "engine/staging_budget.h"

#include <algorithm>

namespace flashload::engine {

bool StagingBudget::Acquire(uint64_t bytes) {
  bytes = Clamp(bytes);
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return cancelled_ || used_ + bytes <= capacity_; });
  if (cancelled_) return false;
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return true;
}

bool StagingBudget::TryAcquire(uint64_t bytes) {
  bytes = Clamp(bytes);
  std::lock_guard lock(mu_);
  if (cancelled_ || used_ + bytes > capacity_) return false;
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return true;
}

void StagingBudget::Release(uint64_t bytes) {
  bytes = Clamp(bytes);
  {
    std::lock_guard lock(mu_);
    used_ -= std::min(used_, bytes);
  }
  cv_.notify_all();
}

void StagingBudget::Cancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

uint64_t StagingBudget::in_use() const {
  std::lock_guard lock(mu_);
  return used_;
}

uint64_t StagingBudget::peak() const {
  std::lock_guard lock(mu_);
  return peak_;
}

}  // namespace flashload::engine
