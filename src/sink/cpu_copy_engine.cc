#include "sink/cpu_copy_engine.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "flashload/convert.h"

namespace flashload::sink {

CpuCopyEngine::CpuCopyEngine(CpuCopyEngineOptions options)
    : options_(options),
      streams_(std::max<uint32_t>(options.streams, 1)),
      live_(std::make_shared<std::atomic<int64_t>>(0)),
      device_in_use_(std::make_shared<std::atomic<uint64_t>>(0)) {
  for (uint32_t i = 0; i < streams_.size(); ++i) {
    streams_[i].worker = std::thread([this, i] { Work(i); });
  }
}

CpuCopyEngine::~CpuCopyEngine() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (Stream& s : streams_) s.worker.join();
}

std::string CpuCopyEngine::name() const {
  return fmt::format("cpu ({} stream{}{})", streams_.size(), streams_.size() == 1 ? "" : "s",
                     options_.device_is_host ? "" : ", device stand-in");
}

// Workers drain their queue before stopping, so destroying the engine waits for pending work.
void CpuCopyEngine::Work(uint32_t index) {
  Stream& s = streams_[index];
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || !s.queue.empty(); });
    if (s.queue.empty()) return;  // stopping, nothing left
    std::function<Status()> op = std::move(s.queue.front());
    s.queue.pop_front();
    const bool failed = !error_.ok();
    lock.unlock();
    if (options_.op_delay.count() > 0) std::this_thread::sleep_for(options_.op_delay);
    // After a failure the remaining work is skipped (as a failed CUDA context does nothing more).
    Status st = failed ? Status() : op();
    lock.lock();
    if (!st.ok() && error_.ok()) error_ = std::move(st);
    ++s.executed;
    done_cv_.notify_all();
  }
}

Status CpuCopyEngine::Enqueue(uint32_t stream, std::function<Status()> op) {
  if (stream >= streams_.size()) {
    return InvalidArgumentError(
        fmt::format("stream {} out of range: the engine has {}", stream, streams_.size()));
  }
  {
    std::lock_guard lock(mu_);
    if (!error_.ok()) return error_;
    streams_[stream].queue.push_back(std::move(op));
    ++streams_[stream].enqueued;
  }
  work_cv_.notify_all();
  return Status();
}

Result<std::shared_ptr<void>> CpuCopyEngine::Allocate(uint64_t bytes, bool device) {
  const uint64_t mapped = std::max<uint64_t>((bytes + 4095) & ~uint64_t{4095}, 4096);
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return ResourceExhaustedError(fmt::format("cannot allocate {} bytes of {} memory ({})", bytes,
                                              device ? "device" : "pinned", std::strerror(errno)));
  }
  live_->fetch_add(1);
  if (device) {
    const uint64_t now = device_in_use_->fetch_add(mapped) + mapped;
    uint64_t peak = peak_device_.load();
    while (now > peak && !peak_device_.compare_exchange_weak(peak, now)) {
    }
  }
  std::shared_ptr<std::atomic<int64_t>> live = live_;
  std::shared_ptr<std::atomic<uint64_t>> in_use = device ? device_in_use_ : nullptr;
  return std::shared_ptr<void>(p, [live, in_use, mapped](void* q) {
    munmap(q, mapped);
    live->fetch_sub(1);
    if (in_use) in_use->fetch_sub(mapped);
  });
}

Result<std::shared_ptr<void>> CpuCopyEngine::AllocatePinned(uint64_t bytes) {
  return Allocate(bytes, false);
}

Result<std::shared_ptr<void>> CpuCopyEngine::AllocateDevice(uint64_t bytes) {
  return Allocate(bytes, true);
}

Status CpuCopyEngine::CopyToDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return Status();
  if (dst == nullptr || src == nullptr) {
    return InvalidArgumentError(fmt::format("copy of {} bytes with a null buffer", bytes));
  }
  uint64_t index;
  {
    std::lock_guard lock(mu_);
    index = copies_++;
  }
  const bool fail = options_.fail_copy_at >= 0 && index == uint64_t(options_.fail_copy_at);
  const bool verify = options_.verify_staging;
  const uint64_t sum = verify ? XXH3_64bits(src, bytes) : 0;
  return Enqueue(stream, [=]() -> Status {
    if (fail) {
      return IoError(
          fmt::format("injected fault: copy #{} of {} bytes on stream {}", index, bytes, stream));
    }
    if (verify && XXH3_64bits(src, bytes) != sum) {
      return InternalError(fmt::format(
          "staging buffer at {} was written while copy #{} of {} bytes from it was pending on "
          "stream {} (a staging slot was reused before its copy completed)",
          src, index, bytes, stream));
    }
    std::memcpy(dst, src, bytes);
    return Status();
  });
}

Status CpuCopyEngine::CopyOnDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return Status();
  if (dst == nullptr || src == nullptr) {
    return InvalidArgumentError(fmt::format("device copy of {} bytes with a null buffer", bytes));
  }
  uint64_t index;
  {
    std::lock_guard lock(mu_);
    index = copies_++;
  }
  const bool fail = options_.fail_copy_at >= 0 && index == uint64_t(options_.fail_copy_at);
  return Enqueue(stream, [=]() -> Status {
    if (fail) {
      return IoError(fmt::format("injected fault: device copy #{} of {} bytes on stream {}", index,
                                 bytes, stream));
    }
    std::memcpy(dst, src, bytes);
    return Status();
  });
}

Status CpuCopyEngine::Convert(uint32_t stream, Dtype from, Dtype to, const void* src, void* dst,
                              uint64_t count) {
  if (!CanConvert(from, to)) {
    return InvalidArgumentError(
        fmt::format("cannot convert {} to {}", DtypeName(from), DtypeName(to)));
  }
  {
    std::lock_guard lock(mu_);
    ++conversions_;
  }
  return Enqueue(stream, [=] { return ConvertElements(from, to, src, dst, count); });
}

Result<CopyEngine::Event> CpuCopyEngine::CreateEvent() {
  std::lock_guard lock(mu_);
  events_.push_back(EventState{});
  return static_cast<Event>(events_.size() - 1);
}

Status CpuCopyEngine::RecordEvent(Event event, uint32_t stream) {
  std::lock_guard lock(mu_);
  if (event >= events_.size() || stream >= streams_.size()) {
    return InvalidArgumentError(fmt::format("event {} or stream {} out of range", event, stream));
  }
  if (!error_.ok()) return error_;
  events_[event] = EventState{stream, options_.signal_events_early ? 0 : streams_[stream].enqueued};
  return Status();
}

bool CpuCopyEngine::EventCompleteLocked(const EventState& e) const {
  return streams_[e.stream].executed >= e.target;
}

Result<bool> CpuCopyEngine::EventDone(Event event) {
  std::lock_guard lock(mu_);
  if (event >= events_.size()) {
    return InvalidArgumentError(fmt::format("event {} out of range", event));
  }
  if (!error_.ok()) return error_;
  return EventCompleteLocked(events_[event]);
}

Status CpuCopyEngine::WaitEvent(Event event) {
  std::unique_lock lock(mu_);
  if (event >= events_.size()) {
    return InvalidArgumentError(fmt::format("event {} out of range", event));
  }
  const EventState e = events_[event];
  done_cv_.wait(lock, [&] { return EventCompleteLocked(e); });
  return error_;
}

Status CpuCopyEngine::Synchronize() {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] {
    for (const Stream& s : streams_) {
      if (s.executed < s.enqueued) return false;
    }
    return true;
  });
  return error_;
}

uint64_t CpuCopyEngine::copies_enqueued() const {
  std::lock_guard lock(mu_);
  return copies_;
}

uint64_t CpuCopyEngine::conversions_enqueued() const {
  std::lock_guard lock(mu_);
  return conversions_;
}

}  // namespace flashload::sink
