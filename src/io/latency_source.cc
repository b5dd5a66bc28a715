#include "io/latency_source.h"

#include <algorithm>
#include <thread>
#include <tuple>

namespace flashload {

LatencySource::LatencySource(std::unique_ptr<Source> target, LatencyOptions options)
    : SourceWrapper(std::move(target)), options_(options), scratch_(64) {}

SourceCaps LatencySource::caps() const {
  SourceCaps c = target().caps();
  c.latency_hint_ns += static_cast<uint64_t>(options_.per_request.count());
  return c;
}

LatencySource::Clock::time_point LatencySource::Schedule(uint64_t bytes) const {
  const Clock::time_point now = Clock::now();
  if (options_.bytes_per_second == 0) return now + options_.per_request;
  std::lock_guard lock(mu_);
  const auto transfer = std::chrono::nanoseconds(
      static_cast<int64_t>(static_cast<long double>(bytes) * 1e9L /
                           static_cast<long double>(options_.bytes_per_second)));
  link_free_ = std::max(now, link_free_) + transfer;
  return link_free_ + options_.per_request;
}

Result<size_t> LatencySource::ReadAt(uint64_t offset, std::span<std::byte> dst,
                                     const ReadOptions& options) const {
  const Clock::time_point due = Schedule(dst.size());
  Result<size_t> n = target().ReadAt(offset, dst, options);
  std::this_thread::sleep_until(due);
  return n;
}

Status LatencySource::Submit(std::span<const ReadRequest> requests) {
  std::vector<ReadRequest> forwarded(requests.begin(), requests.end());
  for (ReadRequest& r : forwarded) {
    const Clock::time_point due = Schedule(r.length);
    std::lock_guard lock(mu_);
    r.tag = pending_.Put(r.tag, due);
  }
  Status s = target().Submit(forwarded);
  if (!s.ok()) {
    std::lock_guard lock(mu_);
    for (const ReadRequest& r : forwarded) pending_.Take(r.tag);
  }
  return s;
}

Result<size_t> LatencySource::Reap(std::span<ReadResult> out, Deadline deadline) {
  if (out.empty()) return size_t{0};
  std::lock_guard reap_lock(reap_mu_);
  for (;;) {
    // Wait on the target until the earliest held completion is due, or the caller's deadline.
    Clock::time_point wake = deadline.when();
    if (!due_.empty()) wake = std::min(wake, due_.top().when);
    FL_ASSIGN_OR_RETURN(size_t got, target().Reap(scratch_, Deadline(wake)));
    for (size_t i = 0; i < got; ++i) {
      Due d;
      {
        std::lock_guard lock(mu_);
        std::tie(scratch_[i].tag, d.when) = pending_.Take(scratch_[i].tag);
      }
      d.result = std::move(scratch_[i]);
      due_.push(std::move(d));
    }
    const Clock::time_point now = Clock::now();
    size_t n = 0;
    while (n < out.size() && !due_.empty() && due_.top().when <= now) {
      out[n++] = std::move(const_cast<Due&>(due_.top()).result);
      due_.pop();
    }
    if (n > 0) return n;
    if (deadline.expired()) return size_t{0};
  }
}

std::unique_ptr<LatencySource> NewLatencySource(std::unique_ptr<Source> target,
                                                LatencyOptions options) {
  return std::make_unique<LatencySource>(std::move(target), options);
}

}  // namespace flashload
