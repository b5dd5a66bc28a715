#include "io/stats_source.h"

#include <algorithm>
#include <bit>
#include <tuple>

namespace flashload {

void StatsSource::StartLocked(uint64_t count) const {
  stats_.requests += count;
  stats_.in_flight += count;
  stats_.max_in_flight = std::max(stats_.max_in_flight, stats_.in_flight);
}

void StatsSource::FinishLocked(Clock::time_point start, const Status& status,
                               uint64_t bytes) const {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  const uint64_t us = static_cast<uint64_t>(std::max<int64_t>(ns, 0)) / 1000;
  const int bucket = us == 0 ? 0 : std::bit_width(us) - 1;
  ++stats_.latency_histogram[std::min(bucket, SourceStats::kLatencyBuckets - 1)];
  stats_.total_latency_ns += static_cast<uint64_t>(std::max<int64_t>(ns, 0));
  --stats_.in_flight;
  ++stats_.completed;
  if (status.ok()) {
    stats_.bytes += bytes;
  } else {
    ++stats_.errors;
  }
}

Result<size_t> StatsSource::ReadAt(uint64_t offset, std::span<std::byte> dst,
                                   const ReadOptions& options) const {
  const Clock::time_point start = Clock::now();
  {
    std::lock_guard lock(mu_);
    StartLocked(1);
  }
  Result<size_t> n = target().ReadAt(offset, dst, options);
  std::lock_guard lock(mu_);
  FinishLocked(start, n.status(), n.ok() ? *n : 0);
  return n;
}

Status StatsSource::DoSubmit(std::span<const ReadRequest> requests) {
  const Clock::time_point start = Clock::now();
  return io_internal::ForwardTagged(
      mu_, pending_, requests,
      [&](size_t) {
        StartLocked(1);
        return start;
      },
      [this](std::span<const ReadRequest> batch) { return SubmitValidated(target(), batch); },
      [this](size_t refused) {
        stats_.requests -= refused;
        stats_.in_flight -= refused;
      });
}

Result<size_t> StatsSource::Reap(std::span<ReadResult> out, Deadline deadline) {
  FL_ASSIGN_OR_RETURN(size_t n, target().Reap(out, deadline));
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < n; ++i) {
    Clock::time_point start;
    std::tie(out[i].tag, start) = pending_.Take(out[i].tag);
    FinishLocked(start, out[i].status, out[i].bytes);
  }
  return n;
}

SourceStats StatsSource::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::unique_ptr<StatsSource> NewStatsSource(std::unique_ptr<Source> target) {
  return std::make_unique<StatsSource>(std::move(target));
}

}  // namespace flashload
