#include "io/retry_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>
#include <tuple>

namespace flashload {
namespace {

uint64_t SeedOf(const RetryPolicy& policy) {
  if (policy.seed != 0) return policy.seed;
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

}  // namespace

std::chrono::nanoseconds BackoffCeiling(const RetryPolicy& policy, uint32_t retry) {
  const int64_t base = std::max<int64_t>(policy.base.count(), 0);
  const int64_t cap = std::max<int64_t>(policy.cap.count(), 0);
  const uint32_t shift = retry == 0 ? 0 : retry - 1;
  if (base == 0) return std::chrono::nanoseconds(0);
  // base × 2^shift, saturating at cap without overflow.
  if (shift >= 62 || base > (cap >> shift)) return std::chrono::nanoseconds(cap);
  return std::chrono::nanoseconds(std::min(cap, base << shift));
}

Backoff::Backoff(const RetryPolicy& policy) : policy_(policy), rng_(SeedOf(policy)) {}

std::chrono::nanoseconds Backoff::Next(uint32_t retry) {
  const int64_t ceiling = BackoffCeiling(policy_, retry).count();
  if (ceiling <= 0) return std::chrono::nanoseconds(0);
  std::uniform_int_distribution<int64_t> draw(0, ceiling);
  return std::chrono::nanoseconds(draw(rng_));
}

RetrySource::RetrySource(std::unique_ptr<Source> target, RetryPolicy policy)
    : SourceWrapper(std::move(target)), policy_(policy), backoff_(policy), scratch_(64) {}

RetryCounters RetrySource::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

std::chrono::nanoseconds RetrySource::DrawBackoff(uint32_t retry) const {
  std::lock_guard lock(mu_);
  const std::chrono::nanoseconds d = backoff_.Next(retry);
  counters_.backoff_ns += static_cast<uint64_t>(d.count());
  counters_.max_backoff_ns = std::max(counters_.max_backoff_ns, static_cast<uint64_t>(d.count()));
  return d;
}

RetryPolicy RetryPolicyFor(const RemoteOpenOptions& remote) {
  return RetryPolicy{.max_attempts = std::max<uint32_t>(remote.max_attempts, 1),
                     .base = std::chrono::milliseconds(remote.retry_base_ms),
                     .cap = std::chrono::milliseconds(remote.retry_cap_ms)};
}

Status GaveUp(const Status& s, uint32_t attempts) {
  return Status(s.code(), fmt::format("{} (gave up after {} attempt{})", s.message(), attempts,
                                      attempts == 1 ? "" : "s"));
}

Result<size_t> RetrySource::ReadAt(uint64_t offset, std::span<std::byte> dst,
                                   const ReadOptions& options) const {
  const uint32_t max_attempts = std::max<uint32_t>(policy_.max_attempts, 1);
  for (uint32_t attempt = 1;; ++attempt) {
    ReadOptions attempt_options = options;
    if (policy_.per_attempt.count() > 0) {
      const Clock::time_point limit = Clock::now() + policy_.per_attempt;
      if (limit < options.deadline.when()) attempt_options.deadline = Deadline(limit);
    }
    {
      std::lock_guard lock(mu_);
      ++counters_.attempts;
      if (attempt > 1) ++counters_.retries;
    }
    Result<size_t> n = target().ReadAt(offset, dst, attempt_options);
    if (n.ok() || !n.status().IsRetryable()) return n;
    if (attempt >= max_attempts) {
      std::lock_guard lock(mu_);
      ++counters_.exhausted;
      return GaveUp(n.status(), attempt);
    }
    const Clock::time_point wake = Clock::now() + DrawBackoff(attempt);
    if (!options.deadline.infinite() && wake >= options.deadline.when()) {
      std::lock_guard lock(mu_);
      ++counters_.exhausted;
      return Status(n.status().code(),
                    fmt::format("{} (gave up after {} attempt{}: the deadline comes before the "
                                "next retry)",
                                n.status().message(), attempt, attempt == 1 ? "" : "s"));
    }
    std::this_thread::sleep_until(wake);
  }
}

Status RetrySource::DoSubmit(std::span<const ReadRequest> requests) {
  return io_internal::ForwardTagged(
      mu_, pending_, requests,
      [&](size_t i) {
        ++counters_.attempts;
        const ReadRequest& r = requests[i];
        return Pending{r.offset, r.length, r.dst, 0, 1, cancel_epoch_};
      },
      [this](std::span<const ReadRequest> batch) { return SubmitValidated(target(), batch); },
      [this](size_t refused) { counters_.attempts -= refused; });
}

bool RetrySource::Settle(uint64_t slot, const ReadResult& r, ReadResult* out) {
  uint32_t retry = 0;
  {
    std::lock_guard lock(mu_);
    auto [tag, p] = pending_.Take(slot);
    const uint64_t got = std::min(r.bytes, p.length - p.done);
    const uint32_t max_attempts = std::max<uint32_t>(policy_.max_attempts, 1);
    if (r.status.ok() || !r.status.IsRetryable() || p.epoch != cancel_epoch_ ||
        p.attempts >= max_attempts) {
      out->tag = tag;
      out->bytes = p.done + got;
      out->status = r.status;
      if (!r.status.ok() && r.status.IsRetryable() && p.epoch == cancel_epoch_) {
        ++counters_.exhausted;
        out->status = GaveUp(r.status, p.attempts);
      }
      return true;
    }
    p.done += got;
    counters_.bytes_resumed += got;
    retry = p.attempts;  // the retry about to be scheduled is retry number `attempts`
    const std::chrono::nanoseconds d = backoff_.Next(retry);
    counters_.backoff_ns += static_cast<uint64_t>(d.count());
    counters_.max_backoff_ns = std::max(counters_.max_backoff_ns, static_cast<uint64_t>(d.count()));
    const uint64_t new_slot = pending_.Put(tag, p);
    timers_.push(Timer{Clock::now() + d, new_slot});
  }
  return false;
}

void RetrySource::ResubmitDue(Clock::time_point now) {
  // After Cancel(), the retries waiting in the queue complete at once instead of at their time.
  uint64_t epoch;
  {
    std::lock_guard lock(mu_);
    epoch = cancel_epoch_;
  }
  if (epoch != timers_epoch_) {
    timers_epoch_ = epoch;
    std::vector<Timer> all;
    while (!timers_.empty()) {
      all.push_back(timers_.top());
      timers_.pop();
    }
    for (Timer& t : all) {
      t.when = Clock::time_point::min();
      timers_.push(t);
    }
  }
  while (!timers_.empty() && timers_.top().when <= now) {
    const uint64_t slot = timers_.top().slot;
    timers_.pop();
    ReadRequest req;
    {
      std::lock_guard lock(mu_);
      auto [tag, p] = pending_.Take(slot);
      if (p.epoch != cancel_epoch_) {
        ready_.push_back(ReadResult{
            tag, p.done,
            CancelledError(fmt::format("{}: read of {} bytes at byte offset {} cancelled while "
                                       "waiting for a retry",
                                       name(), p.length, p.offset))});
        continue;
      }
      ++p.attempts;
      ++counters_.attempts;
      ++counters_.retries;
      req = ReadRequest{p.offset + p.done, p.length - p.done, p.dst + p.done, 0};
      req.tag = pending_.Put(tag, p);
    }
    // A new request (the rest of a range): checked by the target's Submit() like any batch.
    Status s = target().Submit(std::span<const ReadRequest>(&req, 1));
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      auto [tag, p] = pending_.Take(req.tag);
      ready_.push_back(ReadResult{tag, p.done, s});
    }
  }
}

Result<size_t> RetrySource::Reap(std::span<ReadResult> out, Deadline deadline) {
  if (out.empty()) return size_t{0};
  std::lock_guard reap_lock(reap_mu_);
  for (;;) {
    ResubmitDue(Clock::now());
    size_t n = 0;
    while (n < out.size() && !ready_.empty()) {
      out[n++] = std::move(ready_.front());
      ready_.pop_front();
    }
    if (n > 0) return n;

    // Wait on the target until the earliest retry is due, or the caller's deadline.
    Clock::time_point wake = deadline.when();
    if (!timers_.empty()) wake = std::min(wake, timers_.top().when);
    {
      std::lock_guard lock(mu_);
      if (cancel_epoch_ != timers_epoch_) wake = Clock::now();
    }
    FL_ASSIGN_OR_RETURN(size_t got, target().Reap(scratch_, Deadline(wake)));
    for (size_t i = 0; i < got; ++i) {
      ReadResult settled;
      if (Settle(scratch_[i].tag, scratch_[i], &settled)) ready_.push_back(std::move(settled));
    }
    if (ready_.empty() && deadline.expired()) return size_t{0};
  }
}

void RetrySource::Cancel() {
  {
    std::lock_guard lock(mu_);
    ++cancel_epoch_;
  }
  target().Cancel();
}

std::unique_ptr<RetrySource> NewRetrySource(std::unique_ptr<Source> target, RetryPolicy policy) {
  return std::make_unique<RetrySource>(std::move(target), policy);
}

}  // namespace flashload
