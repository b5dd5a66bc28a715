// RetrySource: retries reads that failed with a retryable status (kUnavailable, kDeadlineExceeded:
// 5xx, 503 SlowDown, connection resets, timeouts, short bodies), with full-jitter exponential
// backoff (the AWS standard: 3 attempts, 100 ms base, 20 s cap).
//
// Backoff: before retry r (r = 1 for the first retry) it waits uniform(0, min(cap, base × 2^(r-1)))
// drawn from a generator seeded with `seed`, so a seed gives the same delays every run.
//
// Resuming: a failed completion reports the intact leading bytes it placed at dst (the Source
// contract), so the retry asks only for the rest: offset + bytes, dst + bytes, length - bytes. The
// caller gets one completion with its own tag and the total bytes. ReadAt() errors carry no byte
// count, so the ReadAt() path re-reads the whole range.
//
// Errors: a non-retryable error passes through at once, unchanged. After the last attempt, the
// error keeps its code and message and adds how many attempts were made ("... (gave up after 3
// attempts)"). A wait for a retry never outlives the caller's deadline on ReadAt().
//
// Paths:
// - ReadAt() retries on the caller's thread, sleeping between attempts; with `per_attempt` > 0
//   each attempt gets the earlier of the caller's deadline and now + per_attempt.
// - Submit() forwards the (validated) batch; Reap() takes the target's completions and, for one to
//   retry, puts it in a timer queue, and resubmits the rest of its range to the target (through
//   the target's Submit(), which checks the new request) from a later Reap() once its time has
//   come, so a request waiting for its retry never blocks other completions. Reap() returns when it has
//   completions for the caller or the caller's deadline passed. On this path an attempt is bounded
//   by the target's own request timeout (HttpOptions::request_timeout), not by `per_attempt`.
// - Cancel() cancels the target and completes every request waiting for a retry with kCancelled.
//
// Who applies it: the registry wraps every source of a remote scheme (flashload/registry.h) with
// RetryPolicyFor(RemoteOpenOptions); RetryCalls() retries whole operations (opens, store calls)
// with the same backoff.
//
// Thread-safety: all methods, from any thread; concurrent Reap() calls are serialized. Owns the
// target; buffers of requests waiting for a retry must stay valid until their completion is
// reaped, as for any source.
#ifndef FLASHLOAD_IO_RETRY_SOURCE_H_
#define FLASHLOAD_IO_RETRY_SOURCE_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <thread>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/tag_table.h"

namespace flashload {

struct RetryPolicy {
  uint32_t max_attempts = defaults::kRemoteMaxAttempts;  // attempts in all, the first included
  std::chrono::nanoseconds base = std::chrono::milliseconds(defaults::kRetryBaseMs);
  std::chrono::nanoseconds cap = std::chrono::milliseconds(defaults::kRetryCapMs);
  uint64_t seed = 0;                        // 0: a random seed
  std::chrono::nanoseconds per_attempt{0};  // ReadAt() attempt deadline; 0: none
};

// The policy of RemoteOpenOptions (max_attempts, at least 1; retry_base_ms; retry_cap_ms): what
// the registry applies to every remote scheme.
RetryPolicy RetryPolicyFor(const RemoteOpenOptions& remote);

// The largest wait before retry `retry` (1-based): min(cap, base × 2^(retry-1)).
std::chrono::nanoseconds BackoffCeiling(const RetryPolicy& policy, uint32_t retry);

// Draws full-jitter backoff delays for one policy. Not thread-safe.
class Backoff {
 public:
  explicit Backoff(const RetryPolicy& policy);
  // uniform(0, BackoffCeiling(policy, retry)).
  std::chrono::nanoseconds Next(uint32_t retry);

 private:
  RetryPolicy policy_;
  std::mt19937_64 rng_;
};

// `s` after its last attempt: the same code and message, plus "(gave up after N attempts)".
Status GaveUp(const Status& s, uint32_t attempts);

// Calls `attempt` (a Result<T>()) until it succeeds, fails with a non-retryable status, or
// policy.max_attempts calls were made, sleeping a full-jitter backoff between calls on the calling
// thread. For whole operations that have no bytes to resume: opening a source, listing a prefix,
// reading an index.
template <typename Attempt>
auto RetryCalls(const RetryPolicy& policy, Attempt&& attempt) -> decltype(attempt()) {
  const uint32_t max_attempts = std::max<uint32_t>(policy.max_attempts, 1);
  Backoff backoff(policy);
  for (uint32_t n = 1;; ++n) {
    auto result = attempt();
    if (result.ok() || !result.status().IsRetryable()) return result;
    if (n >= max_attempts) return GaveUp(result.status(), n);
    std::this_thread::sleep_for(backoff.Next(n));
  }
}

struct RetryCounters {
  uint64_t attempts = 0;        // reads sent to the target (first attempts and retries)
  uint64_t retries = 0;         // of those, retries
  uint64_t bytes_resumed = 0;   // bytes a retry did not read again because they had arrived
  uint64_t exhausted = 0;       // requests that failed after their last attempt
  uint64_t backoff_ns = 0;      // total of the waits chosen
  uint64_t max_backoff_ns = 0;  // the longest wait chosen
};

class RetrySource : public SourceWrapper {
 public:
  RetrySource(std::unique_ptr<Source> target, RetryPolicy policy);

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override;
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override;
  void Cancel() override;

  RetryCounters counters() const;
  const RetryPolicy& policy() const { return policy_; }

 protected:
  Status DoSubmit(std::span<const ReadRequest> requests) override;

 private:
  using Clock = Deadline::Clock;
  struct Pending {
    uint64_t offset = 0;
    uint64_t length = 0;
    std::byte* dst = nullptr;
    uint64_t done = 0;      // intact leading bytes already at dst
    uint32_t attempts = 0;  // attempts sent so far
    uint64_t epoch = 0;     // cancel_epoch_ when submitted
  };
  struct Timer {
    Clock::time_point when;
    uint64_t slot;  // substitute tag in pending_
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  // Decides what to do with a target completion of the request in `slot`: returns true and fills
  // `out` when the caller gets it now, false when it was scheduled for a retry. Locks mu_.
  bool Settle(uint64_t slot, const ReadResult& r, ReadResult* out);
  // Resubmits the retries that are due; those whose Submit() fails complete into ready_.
  void ResubmitDue(Clock::time_point now);
  std::chrono::nanoseconds DrawBackoff(uint32_t retry) const;  // locks mu_, counts

  const RetryPolicy policy_;
  mutable std::mutex mu_;
  mutable Backoff backoff_;                 // guarded by mu_
  mutable RetryCounters counters_;          // guarded by mu_
  io_internal::TagTable<Pending> pending_;  // guarded by mu_
  uint64_t cancel_epoch_ = 0;               // guarded by mu_; Cancel() increments it
  std::mutex reap_mu_;                      // serializes Reap(); guards the four below
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::deque<ReadResult> ready_;
  std::vector<ReadResult> scratch_;
  uint64_t timers_epoch_ = 0;  // cancel_epoch_ when timers_ was last swept
};

std::unique_ptr<RetrySource> NewRetrySource(std::unique_ptr<Source> target,
                                            RetryPolicy policy = {});

}  // namespace flashload

#endif  // FLASHLOAD_IO_RETRY_SOURCE_H_
