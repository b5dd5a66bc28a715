#include "io/latency_source.h"

#include <algorithm>
#include <thread>
#include <tuple>

namespace flashload {

LatencySource::LatencySource(std::unique_ptr<Source> target, LatencyOptions options)
    : SourceWrapper(std::move(target)), options_(options), scratch_(64) {}

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

Status LatencySource::DoSubmit(std::span<const ReadRequest> requests) {
  std::vector<Clock::time_point> due;
  due.reserve(requests.size());
  for (const ReadRequest& r : requests) due.push_back(Schedule(r.length));
  return io_internal::ForwardTagged(
      mu_, pending_, requests, [&](size_t i) { return due[i]; },
      [this](std::span<const ReadRequest> batch) { return SubmitValidated(target(), batch); },
      [](size_t) {});
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
