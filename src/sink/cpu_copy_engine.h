// CpuCopyEngine: a CopyEngine whose "device" is host memory and whose streams are worker threads.
//
// Two uses:
// - The host destination of CPU loads that convert dtypes (device_is_host: the sink converts
//   straight from the staging buffer into the final host memory with the CPU convert code).
// - The stand-in for a GPU in tests: the same pipeline (staging ring, events, conversion scratch)
//   runs against it, with knobs to make timing adversarial and faults reproducible.
//
// Each stream is one thread executing its queue in order; an event completes once its stream has
// executed everything enqueued before its recording. After a failure the rest of the queued work is
// skipped, not run. With `verify_staging`, every host-to-device copy remembers a checksum of its
// source bytes when enqueued and checks them again when it runs: a staging buffer written while a
// copy from it is pending (a slot recycled too early) fails the engine with kInternal. With
// `fail_copy_at`, the N-th copy (0-based, host-to-device and device-to-device, counted over all
// streams in call order) fails with kIoError when it runs. Failures are sticky (copy_engine.h).
//
// Errors checked at enqueue (kInvalidArgument, nothing enqueued): a stream or event out of range, a
// null buffer for a copy of more than 0 bytes, a dtype pair Convert() cannot do. A conversion's
// other bad arguments (null or overlapping buffers) fail when it runs, which fails the engine.
//
// Memory: AllocatePinned/AllocateDevice return 4096-byte aligned host memory (anonymous mappings,
// kResourceExhausted when mmap fails); allocations still alive can be counted (live_allocations()),
// to check that a sink freed everything. Destroying the engine drains the queues first.
// Thread-safety: as CopyEngine.
#ifndef FLASHLOAD_SINK_CPU_COPY_ENGINE_H_
#define FLASHLOAD_SINK_CPU_COPY_ENGINE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sink/copy_engine.h"

namespace flashload::sink {

struct CpuCopyEngineOptions {
  uint32_t streams = 2;
  // Memory from AllocateDevice is real host memory that the caller may hand out as host tensors.
  // False makes it a stand-in for device memory (the sink then uses device-side scratch, exactly
  // as with a GPU).
  bool device_is_host = true;
  // Each queued operation sleeps this long before running (tests: makes copies lag behind).
  std::chrono::microseconds op_delay{0};
  // The copy with this 0-based index fails when it runs (-1: none).
  int64_t fail_copy_at = -1;
  // Checksums each copy's source at enqueue and verifies it when the copy runs.
  bool verify_staging = true;
  // Deliberately wrong (tests only): events complete as soon as they are recorded, without
  // waiting for the stream. Exists to show that the staging check catches early recycling.
  bool signal_events_early = false;
};

class CpuCopyEngine final : public CopyEngine {
 public:
  explicit CpuCopyEngine(CpuCopyEngineOptions options = {});
  ~CpuCopyEngine() override;
  CpuCopyEngine(const CpuCopyEngine&) = delete;
  CpuCopyEngine& operator=(const CpuCopyEngine&) = delete;

  std::string name() const override;
  Device device() const override { return Device{}; }
  uint32_t stream_count() const override { return static_cast<uint32_t>(streams_.size()); }
  bool device_is_host() const override { return options_.device_is_host; }

  Result<std::shared_ptr<void>> AllocatePinned(uint64_t bytes) override;
  Result<std::shared_ptr<void>> AllocateDevice(uint64_t bytes) override;

  Status CopyToDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) override;
  Status CopyOnDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) override;
  Status Convert(uint32_t stream, Dtype from, Dtype to, const void* src, void* dst,
                 uint64_t count) override;

  Result<Event> CreateEvent() override;
  Status RecordEvent(Event event, uint32_t stream) override;
  Result<bool> EventDone(Event event) override;
  Status WaitEvent(Event event) override;
  Status Synchronize() override;
  Status BindThread() override { return Status(); }
  uint64_t peak_device_bytes() const override { return peak_device_.load(); }

  // Counters for tests.
  uint64_t copies_enqueued() const;  // host-to-device and device-to-device
  uint64_t conversions_enqueued() const;
  // Allocations (pinned and device) not yet freed, including ones held by tensors.
  int64_t live_allocations() const { return live_->load(); }

 private:
  struct Stream {
    std::deque<std::function<Status()>> queue;
    uint64_t enqueued = 0;  // operations ever enqueued
    uint64_t executed = 0;  // operations finished (failed ones included)
    std::thread worker;
  };
  struct EventState {
    uint32_t stream = 0;
    uint64_t target = 0;  // complete when the stream has executed this many operations
  };

  Status Enqueue(uint32_t stream, std::function<Status()> op);
  void Work(uint32_t stream);
  Result<std::shared_ptr<void>> Allocate(uint64_t bytes, bool device);
  bool EventCompleteLocked(const EventState& e) const;

  const CpuCopyEngineOptions options_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // a queue got work, or stopping
  std::condition_variable done_cv_;  // an operation finished
  std::vector<Stream> streams_;
  std::vector<EventState> events_;
  Status error_;  // the first failure (sticky)
  bool stop_ = false;
  uint64_t copies_ = 0;
  uint64_t conversions_ = 0;
  std::shared_ptr<std::atomic<int64_t>> live_;
  std::shared_ptr<std::atomic<uint64_t>> device_in_use_;
  std::atomic<uint64_t> peak_device_{0};
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_CPU_COPY_ENGINE_H_
