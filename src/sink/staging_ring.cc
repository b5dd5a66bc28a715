#include "sink/staging_ring.h"

#include <fmt/format.h>

#include <algorithm>

namespace flashload::sink {

Result<std::unique_ptr<StagingRing>> StagingRing::Create(CopyEngine& engine, uint64_t slot_bytes,
                                                         uint32_t slots, bool device_scratch) {
  if (slots == 0 || slot_bytes == 0) {
    return InvalidArgumentError(
        fmt::format("staging ring of {} slots of {} bytes", slots, slot_bytes));
  }
  slot_bytes = (slot_bytes + 4095) & ~uint64_t{4095};
  std::unique_ptr<StagingRing> ring(new StagingRing(engine, slot_bytes));
  Result<std::shared_ptr<void>> pinned = engine.AllocatePinned(slot_bytes * slots);
  if (!pinned.ok()) {
    return pinned.status().WithContext(
        fmt::format("staging ring ({} slots of {} bytes)", slots, slot_bytes));
  }
  ring->pinned_ = *std::move(pinned);
  FL_ASSIGN_OR_RETURN(ring->patches_, engine.AllocatePinned(kPatchBytes * slots));
  if (device_scratch) {
    Result<std::shared_ptr<void>> scratch = engine.AllocateDevice(slot_bytes * slots);
    if (!scratch.ok()) {
      return scratch.status().WithContext(
          fmt::format("device scratch ({} slots of {} bytes)", slots, slot_bytes));
    }
    ring->scratch_ = *std::move(scratch);
  }
  ring->slots_.resize(slots);
  ring->used_before_.assign(slots, false);
  auto* host = static_cast<std::byte*>(ring->pinned_.get());
  auto* patch = static_cast<std::byte*>(ring->patches_.get());
  auto* scratch = static_cast<std::byte*>(ring->scratch_.get());
  for (uint32_t i = 0; i < slots; ++i) {
    StagingSlot& s = ring->slots_[i];
    s.index = i;
    s.host = host + i * slot_bytes;
    s.patch = patch + i * kPatchBytes;
    s.scratch = scratch == nullptr ? nullptr : scratch + i * slot_bytes;
    FL_ASSIGN_OR_RETURN(s.event, engine.CreateEvent());
  }
  for (uint32_t i = slots; i > 0; --i) ring->free_.push_back(&ring->slots_[i - 1]);
  return ring;
}

StagingRing::~StagingRing() { engine_.Synchronize().IgnoreError(); }

Result<StagingSlot*> StagingRing::Acquire() {
  std::unique_lock lock(mu_);
  while (true) {
    if (cancelled_) return CancelledError("staging ring cancelled");
    if (!error_.ok()) return error_;
    if (!free_.empty()) {
      StagingSlot* s = free_.back();
      free_.pop_back();
      ++busy_;
      peak_busy_ = std::max(peak_busy_, busy_);
      s->stream = next_stream_++ % engine_.stream_count();
      if (used_before_[s->index]) ++reuses_;
      used_before_[s->index] = true;
      return s;
    }
    if (!in_flight_.empty()) {
      // Recycle the oldest slot in flight once its copies have run.
      StagingSlot* s = in_flight_.front();
      in_flight_.pop_front();
      ++waiters_on_events_;
      lock.unlock();
      Status st = engine_.WaitEvent(s->event);
      lock.lock();
      --waiters_on_events_;
      free_.push_back(s);
      --busy_;
      if (!st.ok() && error_.ok()) error_ = st;
      cv_.notify_all();
      continue;
    }
    cv_.wait(lock);  // every slot is held by a caller: wait for a Submit or Release
  }
}

Status StagingRing::Submit(StagingSlot* slot) {
  Status st = engine_.RecordEvent(slot->event, slot->stream);
  std::lock_guard lock(mu_);
  if (!st.ok()) {
    free_.push_back(slot);
    --busy_;
    if (error_.ok()) error_ = st;
  } else {
    in_flight_.push_back(slot);
  }
  cv_.notify_all();
  return st;
}

void StagingRing::Release(StagingSlot* slot) {
  std::lock_guard lock(mu_);
  free_.push_back(slot);
  --busy_;
  cv_.notify_all();
}

Status StagingRing::Drain() {
  std::unique_lock lock(mu_);
  while (!in_flight_.empty() || waiters_on_events_ > 0) {
    if (in_flight_.empty()) {  // another thread is waiting for the last events
      cv_.wait(lock);
      continue;
    }
    StagingSlot* s = in_flight_.front();
    in_flight_.pop_front();
    lock.unlock();
    Status st = engine_.WaitEvent(s->event);
    lock.lock();
    free_.push_back(s);
    --busy_;
    if (!st.ok() && error_.ok()) error_ = st;
    cv_.notify_all();
  }
  return error_;
}

void StagingRing::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  cv_.notify_all();
}

uint64_t StagingRing::pinned_bytes() const { return (slot_bytes_ + kPatchBytes) * slots_.size(); }

uint64_t StagingRing::reuses() const {
  std::lock_guard lock(mu_);
  return reuses_;
}

uint32_t StagingRing::peak_busy() const {
  std::lock_guard lock(mu_);
  return peak_busy_;
}

}  // namespace flashload::sink
