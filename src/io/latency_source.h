// LatencySource: makes any source slower in a controlled way, for tests and benchmarks of the
// engine.
//
// Each request becomes visible `per_request` after it started transferring, and with
// `bytes_per_second` > 0 the requests share one link of that bandwidth: a request of L bytes
// occupies it for L / bytes_per_second, after the requests before it. So the completion time of a
// request issued at t is max(t, link free) + L / bandwidth + per_request.
// - ReadAt() sleeps on the caller's thread until that time.
// - Submit() never blocks: it forwards at once, and Reap() hands a completion out only once its
//   time has come (waiting on the target up to the earlier of that time and the caller's
//   deadline).
// Errors of the target pass through unchanged, at their due time. Thread-safety: all methods; one
// Reap() at a time is expected (concurrent ones are serialized).
#ifndef FLASHLOAD_IO_LATENCY_SOURCE_H_
#define FLASHLOAD_IO_LATENCY_SOURCE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <queue>
#include <vector>

#include "flashload/source.h"
#include "io/tag_table.h"

namespace flashload {

struct LatencyOptions {
  std::chrono::nanoseconds per_request{0};
  uint64_t bytes_per_second = 0;  // 0: no bandwidth cap
};

class LatencySource : public SourceWrapper {
 public:
  LatencySource(std::unique_ptr<Source> target, LatencyOptions options);

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override;
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override;

 protected:
  Status DoSubmit(std::span<const ReadRequest> requests) override;

 private:
  using Clock = Deadline::Clock;
  struct Due {
    Clock::time_point when;
    ReadResult result;
    bool operator>(const Due& o) const { return when > o.when; }
  };

  Clock::time_point Schedule(uint64_t bytes) const;  // locks mu_

  const LatencyOptions options_;
  mutable std::mutex mu_;
  mutable Clock::time_point link_free_{};
  io_internal::TagTable<Clock::time_point> pending_;  // guarded by mu_
  std::mutex reap_mu_;                                // serializes Reap(); guards the two below
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
  std::vector<ReadResult> scratch_;
};

std::unique_ptr<LatencySource> NewLatencySource(std::unique_ptr<Source> target,
                                                LatencyOptions options);

}  // namespace flashload

#endif  // FLASHLOAD_IO_LATENCY_SOURCE_H_
