// StatsSource: counts what goes through a source: requests, bytes, errors, requests in flight (the
// most at once), and a log2 histogram of per-request latency (ReadAt() call to return; Submit() to
// the Reap() that hands the completion out). Thread-safety: all methods, from any thread.
#ifndef FLASHLOAD_IO_STATS_SOURCE_H_
#define FLASHLOAD_IO_STATS_SOURCE_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>

#include "flashload/source.h"
#include "io/tag_table.h"

namespace flashload {

struct SourceStats {
  static constexpr int kLatencyBuckets = 32;
  uint64_t requests = 0;       // ReadAt() calls plus submitted requests
  uint64_t completed = 0;      // of those, finished (OK or not)
  uint64_t bytes = 0;          // bytes delivered by OK reads
  uint64_t errors = 0;         // reads that finished with a non-OK status
  uint64_t in_flight = 0;      // started and not finished now
  uint64_t max_in_flight = 0;  // the most at once
  uint64_t total_latency_ns = 0;
  // latency_histogram[i] counts reads that took [2^i, 2^(i+1)) microseconds (i = 0 includes < 1 µs;
  // the last bucket everything longer).
  std::array<uint64_t, kLatencyBuckets> latency_histogram{};
};

class StatsSource : public SourceWrapper {
 public:
  explicit StatsSource(std::unique_ptr<Source> target) : SourceWrapper(std::move(target)) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override;
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override;

  SourceStats stats() const;

 protected:
  Status DoSubmit(std::span<const ReadRequest> requests) override;

 private:
  using Clock = Deadline::Clock;
  void StartLocked(uint64_t count) const;
  void FinishLocked(Clock::time_point start, const Status& status, uint64_t bytes) const;

  mutable std::mutex mu_;
  mutable SourceStats stats_;                         // guarded by mu_
  io_internal::TagTable<Clock::time_point> pending_;  // guarded by mu_
};

std::unique_ptr<StatsSource> NewStatsSource(std::unique_ptr<Source> target);

}  // namespace flashload

#endif  // FLASHLOAD_IO_STATS_SOURCE_H_
