// StagingRing: a fixed set of pinned staging buffers (slots) that storage reads land in before a
// copy engine moves them to their destination.
//
// Life of a slot: Acquire() hands out a free slot (held: the caller fills it and enqueues work
// reading it on the slot's stream); Submit() records the slot's event behind that work and puts the
// slot in flight; the slot becomes free again only once that event has completed, so a staging
// buffer is never overwritten while a copy (or conversion) from it is pending. Release() returns a
// held slot that got no work (error paths). A held slot goes back through one Submit() or one
// Release(), or stays held until the ring is destroyed.
//
// Back-pressure: when no slot is free, Acquire() waits for the oldest slot in flight (its event),
// or, when every slot is held, for a Submit()/Release(), so the memory never grows beyond the
// slots. The caller must not hold every slot in one thread while acquiring another (it would wait
// for itself); the loader bounds the chunks in flight to the slot count.
//
// Streams: each Acquire() gives the slot the next stream round-robin, so consecutive chunks copy on
// different streams and storage reads, copies and conversions overlap.
//
// Memory and alignment: one pinned allocation of slots x slot_bytes (each slot 4096-byte aligned,
// as O_DIRECT reads need), plus a pinned patch area of kPatchBytes per slot (bytes the sink
// assembles itself), plus, when asked, one device allocation of slot_bytes of scratch per slot
// (converted tensors are copied there, then converted into place), each slot's scratch a multiple
// of 4096 bytes from its start. Lifetime: the engine must outlive the ring; destroying the ring
// waits for the engine's queued work (Synchronize), then frees the memory.
//
// Errors: Create() returns kInvalidArgument for zero slots or bytes, and the engine's errors
// (kResourceExhausted when memory is denied). A failure of the engine's work (a copy fault) comes
// back from Acquire() and Drain(), and stays. Cancel() makes Acquire() return kCancelled from then
// on, and wakes the callers waiting for a Submit()/Release() (one already waiting for an event
// returns once the event completes).
//
// Thread-safety: all members may be called concurrently.
#ifndef FLASHLOAD_SINK_STAGING_RING_H_
#define FLASHLOAD_SINK_STAGING_RING_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "sink/copy_engine.h"

namespace flashload::sink {

struct StagingSlot {
  uint32_t index = 0;
  std::byte* host = nullptr;     // slot_bytes of pinned memory
  std::byte* patch = nullptr;    // kPatchBytes of pinned memory
  std::byte* scratch = nullptr;  // slot_bytes of device memory, or nullptr without scratch
  uint32_t stream = 0;           // the stream this use of the slot enqueues on
  CopyEngine::Event event = 0;
};

class StagingRing {
 public:
  static constexpr uint64_t kPatchBytes = 256;

  // A ring of `slots` slots of `slot_bytes` each (rounded up to 4096), with device scratch when
  // `device_scratch`. kResourceExhausted when the engine cannot allocate them.
  static Result<std::unique_ptr<StagingRing>> Create(CopyEngine& engine, uint64_t slot_bytes,
                                                     uint32_t slots, bool device_scratch);
  // Waits for the engine's queued work (which may still read the slots), then frees them.
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // A free slot (blocks as described above).
  Result<StagingSlot*> Acquire();
  // Records the slot's event on its stream and puts it in flight. On failure the slot is released
  // (and the error returned).
  Status Submit(StagingSlot* slot);
  // Gives back a held slot without work.
  void Release(StagingSlot* slot);
  // Waits for every slot in flight; returns the first error seen.
  Status Drain();
  // Wakes every waiter; Acquire() returns kCancelled from now on.
  void Cancel();

  uint32_t slot_count() const { return static_cast<uint32_t>(slots_.size()); }
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint64_t pinned_bytes() const;
  uint64_t scratch_bytes() const { return scratch_ ? slot_bytes_ * slots_.size() : 0; }
  // The device scratch of every slot, one allocation (nullptr without scratch).
  void* scratch_base() const { return scratch_.get(); }
  // Times a slot was handed out again after a previous use (tests and reports).
  uint64_t reuses() const;
  // Largest number of slots held or in flight at once.
  uint32_t peak_busy() const;

 private:
  StagingRing(CopyEngine& engine, uint64_t slot_bytes) : engine_(engine), slot_bytes_(slot_bytes) {}

  CopyEngine& engine_;
  const uint64_t slot_bytes_;
  std::shared_ptr<void> pinned_;
  std::shared_ptr<void> patches_;
  std::shared_ptr<void> scratch_;
  std::vector<StagingSlot> slots_;
  std::vector<bool> used_before_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StagingSlot*> free_;
  std::deque<StagingSlot*> in_flight_;  // oldest first
  uint32_t busy_ = 0;                   // held + in flight
  uint32_t peak_busy_ = 0;
  uint32_t next_stream_ = 0;
  uint64_t reuses_ = 0;
  uint32_t waiters_on_events_ = 0;  // Acquire() calls waiting for an in-flight slot's event
  bool cancelled_ = false;
  Status error_;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_STAGING_RING_H_
