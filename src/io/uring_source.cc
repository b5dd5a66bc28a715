// Design of the io_uring completion loop.
//
// State: a ring of `depth` entries and one slot per entry in `ops_` (slot index = SQE user_data),
// holding the caller's request and how many of its bytes are done. Requests beyond the free slots
// wait in `queued_` and take a slot when one frees. `mu_` guards the SQ, the slots and the queues
// (Submit, Cancel and the reaper all touch them); the CQ is consumed only by the one thread that
// `reaper_` admits. Waiting on the CQ (io_uring_wait_cqe[_timeout], which with IORING_FEAT_EXT_ARG
// never touches the SQ) happens without `mu_`, so a waiting Reap() never blocks Submit(), and the
// timeout is the caller's Deadline.
//
// Per CQE of a read (res = bytes or -errno):
// - res > 0 and the request is not yet full: a short read, or one piece of a request larger than
// one
//   SQE carries (UringTuning::max_bytes_per_sqe). If the bytes reach the size measured at open, it
//   is end of file: complete OK with the bytes so far. Otherwise resubmit the remainder; with
//   O_DIRECT from the block boundary below the bytes done (re-reading part of a block into the same
//   place keeps the SQE aligned).
// - res == 0: end of file; complete OK with the bytes so far (fewer than asked).
// - -EAGAIN, -EINTR: resubmit the same remainder (at most kMaxIoRetries times without progress).
// - -ECANCELED, or -EAGAIN/-EINTR of a request marked by Cancel(): complete with kCancelled.
// - any other -errno: complete that request alone with ErrnoToStatus("read", file, offset of the
//   failing piece); other requests are unaffected.
// Cancellation: Cancel() completes queued requests with kCancelled at once, marks every busy slot
// so it completes (kCancelled unless already full) at its next CQE instead of resubmitting, and
// submits one IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_ANY. Reads already at the device
// finish normally; the CQE of the cancel itself is consumed silently (and wakes a reaper waiting
// without a deadline). Capacity: at most `depth` reads plus one cancel are in the kernel and the CQ
// has 2 × depth entries, so it cannot overflow. io_uring_submit() failing with
// -EINTR/-EAGAIN/-EBUSY leaves the SQEs in the SQ; the next Submit() or Reap() submits them. Other
// submit errors are returned (the ring is then unusable). Destruction: Cancel(), then reap until no
// SQE is in the kernel, so no read lands in freed memory.
#include "io/uring_source.h"

#include <fmt/format.h>
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "flashload/defaults.h"
#include "io/local_file.h"

namespace flashload {
namespace {

using io_internal::LocalFd;
using io_internal::LocalFile;

constexpr uint64_t kCancelUserData = ~uint64_t{0};
constexpr uint32_t kDefaultDepth = defaults::kUringQueueDepth;
constexpr uint32_t kMaxDepth = 4096;
constexpr unsigned kCqeBatch = 64;

// Admits one CQ consumer at a time, giving up at a deadline. (A std::timed_mutex would do, but its
// timed lock uses pthread_mutex_clocklock, which ThreadSanitizer does not see.)
class ReaperGate {
 public:
  bool Enter(Deadline deadline) {
    std::unique_lock lock(mu_);
    auto free = [&] { return !busy_; };
    if (deadline.infinite()) {
      cv_.wait(lock, free);
    } else if (!cv_.wait_until(lock, deadline.when(), free)) {
      return false;
    }
    busy_ = true;
    return true;
  }
  void Leave() {
    {
      std::lock_guard lock(mu_);
      busy_ = false;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
};

class UringSource final : public Source {
 public:
  UringSource(std::string name, LocalFile file, LocalFd buffered, bool direct, uint32_t depth,
              uint64_t max_bytes_per_sqe)
      : name_(std::move(name)),
        file_(std::move(file)),
        buffered_(std::move(buffered)),
        direct_(direct),
        depth_(depth),
        max_bytes_per_sqe_(max_bytes_per_sqe),
        ops_(depth) {
    free_.reserve(depth);
    for (uint32_t i = depth; i > 0; --i) free_.push_back(i - 1);
  }

  ~UringSource() override {
    if (!ring_ready_) return;
    Cancel();
    reaper_.Enter(Deadline::Infinite());
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (in_kernel_ == 0) break;
        FlushLocked().IgnoreError();
      }
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r < 0 && r != -EINTR) break;  // the ring is broken; nothing more will complete
      ReadResult discard[kCqeBatch];
      ReapAvailable(discard);
    }
    io_uring_queue_exit(&ring_);
  }

  Status Init() {
    if (const char* env = std::getenv("FLASHLOAD_DISABLE_IO_URING");
        env && std::strcmp(env, "1") == 0) {
      return UnimplementedError("io_uring disabled by FLASHLOAD_DISABLE_IO_URING=1");
    }
    io_uring_params params{};
    const int r = io_uring_queue_init_params(depth_, &ring_, &params);
    if (r < 0) {
      return UnimplementedError(
          fmt::format("io_uring unavailable for {}: io_uring_setup: {} (errno {})", name_,
                      std::strerror(-r), -r));
    }
    if ((params.features & IORING_FEAT_EXT_ARG) == 0) {
      io_uring_queue_exit(&ring_);
      return UnimplementedError(
          "io_uring unavailable: the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11 or newer "
          "needed)");
    }
    ring_ready_ = true;
    return Status();
  }

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return file_.size; }
  std::string_view backend() const override { return direct_ ? "io_uring+direct" : "io_uring"; }
  SourceCaps caps() const override {
    SourceCaps c;
    c.direct_io = direct_;
    c.alignment = direct_ ? file_.direct_alignment : 1;
    c.max_in_flight = depth_;
    return c;
  }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    return io_internal::LocalReadAt(file_, buffered_, direct_, offset, dst, name_);
  }

  Status DoSubmit(std::span<const ReadRequest> requests) override {
    std::lock_guard lock(mu_);
    for (const ReadRequest& r : requests) {
      if (free_.empty()) {
        queued_.push_back(r);
      } else {
        const uint32_t slot = free_.back();
        free_.pop_back();
        StartLocked(slot, r);
      }
    }
    return FlushLocked();
  }

  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    if (out.empty()) return size_t{0};
    if (!reaper_.Enter(deadline)) return size_t{0};
    Result<size_t> n = ReapEntered(out, deadline);
    reaper_.Leave();
    return n;
  }

  void Cancel() override {
    std::lock_guard lock(mu_);
    for (const ReadRequest& r : queued_) {
      ready_.push_back(ReadResult{r.tag, 0, CancelledStatus(r.offset)});
    }
    queued_.clear();
    if (free_.size() == depth_) return;
    for (Op& op : ops_) op.cancelled = op.busy;
    if (cancel_in_kernel_) return;
    io_uring_sqe* sqe = GetSqeLocked();
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, kCancelUserData);
    cancel_in_kernel_ = true;
    ++in_kernel_;
    FlushLocked().IgnoreError();
  }

 private:
  // Reap() once admitted by reaper_.
  Result<size_t> ReapEntered(std::span<ReadResult> out, Deadline deadline) {
    for (;;) {
      size_t n = 0;
      {
        std::lock_guard lock(mu_);
        while (n < out.size() && !ready_.empty()) {
          out[n++] = std::move(ready_.front());
          ready_.pop_front();
        }
        if (Status s = FlushLocked(); !s.ok() && n == 0) return s;
      }
      n += ReapAvailable(out.subspan(n));
      if (n > 0) return n;
      if (deadline.expired()) return size_t{0};

      io_uring_cqe* cqe = nullptr;
      int r;
      if (deadline.infinite()) {
        r = io_uring_wait_cqe(&ring_, &cqe);
      } else {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
            deadline.when() - Deadline::Clock::now());
        if (left.count() <= 0) continue;  // one last look, then expired() returns
        __kernel_timespec ts{};
        ts.tv_sec = left.count() / 1'000'000'000;
        ts.tv_nsec = left.count() % 1'000'000'000;
        r = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
      }
      if (r < 0 && r != -ETIME && r != -EINTR) {
        return ErrnoToStatus(-r, "io_uring_wait_cqe", name_);
      }
    }
  }

  struct Op {
    ReadRequest request;
    uint64_t done = 0;       // bytes of the request known good
    uint64_t issued_at = 0;  // where (relative to request.offset) the SQE in the kernel starts
    int retries = 0;         // consecutive resubmits without progress
    bool busy = false;
    bool cancelled = false;
  };

  Status CancelledStatus(uint64_t offset) const {
    return CancelledError(fmt::format("{}: read at byte offset {} cancelled", name_, offset));
  }

  io_uring_sqe* GetSqeLocked() {
    // The SQ has >= depth entries and at most depth + 1 SQEs are in flight, so one submit frees
    // room.
    for (int i = 0; i < 3; ++i) {
      if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
      io_uring_submit(&ring_);
    }
    std::fprintf(stderr, "flashload: io_uring SQ of %s stays full; invariant broken\n",
                 name_.c_str());
    std::abort();
  }

  void StartLocked(uint32_t slot, const ReadRequest& r) {
    ops_[slot] = Op{r, 0, 0, 0, true, false};
    IssueLocked(slot);
  }

  void IssueLocked(uint32_t slot) {
    Op& op = ops_[slot];
    const uint64_t start =
        direct_ ? op.done & ~static_cast<uint64_t>(file_.direct_alignment - 1) : op.done;
    op.issued_at = start;
    const uint64_t length = std::min(op.request.length - start, max_bytes_per_sqe_);
    io_uring_sqe* sqe = GetSqeLocked();
    io_uring_prep_read(sqe, file_.fd.get(), op.request.dst + start, static_cast<unsigned>(length),
                       op.request.offset + start);
    io_uring_sqe_set_data64(sqe, slot);
    ++in_kernel_;
  }

  void ReleaseLocked(uint32_t slot) {
    ops_[slot].busy = false;
    if (queued_.empty()) {
      free_.push_back(slot);
      return;
    }
    const ReadRequest next = queued_.front();
    queued_.pop_front();
    StartLocked(slot, next);
  }

  // Handles one CQE; returns true and fills *result when it completed a request.
  bool CompleteLocked(uint64_t user_data, int res, ReadResult* result) {
    --in_kernel_;
    if (user_data == kCancelUserData) {
      cancel_in_kernel_ = false;
      return false;
    }
    const uint32_t slot = static_cast<uint32_t>(user_data);
    Op& op = ops_[slot];
    const ReadRequest& r = op.request;
    Status status;
    if (res > 0) {
      const uint64_t end = op.issued_at + static_cast<uint64_t>(res);
      if (end > op.done) {
        op.done = std::min(end, r.length);
        op.retries = 0;
      } else if (++op.retries >= io_internal::kMaxIoRetries) {
        status =
            IoError(fmt::format("read {} at byte offset {}: no progress after {} partial reads",
                                name_, r.offset + op.done, op.retries));
      }
      const bool finished = op.done >= r.length || r.offset + op.done >= file_.size;
      if (status.ok() && !finished) {
        if (!op.cancelled) {
          IssueLocked(slot);
          return false;
        }
        status = CancelledStatus(r.offset);
      }
    } else if (res < 0) {
      const bool transient = res == -EAGAIN || res == -EINTR;
      if (transient && !op.cancelled && ++op.retries < io_internal::kMaxIoRetries) {
        IssueLocked(slot);
        return false;
      }
      status =
          res == -ECANCELED || (transient && op.cancelled)
              ? CancelledStatus(r.offset)
              : ErrnoToStatus(-res, "read", name_, static_cast<int64_t>(r.offset + op.issued_at));
    }
    // res == 0: end of file, OK with the bytes so far.
    *result = ReadResult{r.tag, status.ok() ? op.done : 0, std::move(status)};
    ReleaseLocked(slot);
    return true;
  }

  Status FlushLocked() {
    if (io_uring_sq_ready(&ring_) == 0) return Status();
    const int r = io_uring_submit(&ring_);
    if (r >= 0 || r == -EINTR || r == -EAGAIN || r == -EBUSY) return Status();
    return ErrnoToStatus(-r, "io_uring_submit", name_);
  }

  // Handles the CQEs already there, up to out.size() completions. Caller is admitted by reaper_.
  size_t ReapAvailable(std::span<ReadResult> out) {
    io_uring_cqe* cqes[kCqeBatch];
    size_t n = 0;
    while (n < out.size()) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(kCqeBatch, out.size() - n));
      const unsigned got = io_uring_peek_batch_cqe(&ring_, cqes, want);
      if (got == 0) break;
      {
        std::lock_guard lock(mu_);
        for (unsigned i = 0; i < got; ++i) {
          if (CompleteLocked(cqes[i]->user_data, cqes[i]->res, &out[n])) ++n;
        }
        FlushLocked().IgnoreError();  // a lasting failure surfaces at the next Submit()/Reap()
      }
      io_uring_cq_advance(&ring_, got);
    }
    return n;
  }

  const std::string name_;
  const LocalFile file_;
  const LocalFd buffered_;  // direct only: serves unaligned ReadAt()
  const bool direct_;
  const uint32_t depth_;
  const uint64_t max_bytes_per_sqe_;

  io_uring ring_{};
  bool ring_ready_ = false;
  ReaperGate reaper_;  // one CQ consumer at a time
  std::mutex mu_;      // SQ, slots, queues
  std::vector<Op> ops_;
  std::vector<uint32_t> free_;
  std::deque<ReadRequest> queued_;
  std::deque<ReadResult> ready_;  // completions made outside the CQ (cancelled while queued)
  uint32_t in_kernel_ = 0;        // SQEs prepared and not yet completed, reads and cancel
  bool cancel_in_kernel_ = false;
};

}  // namespace

Result<std::unique_ptr<Source>> OpenUringSource(const std::string& path,
                                                const LocalOpenOptions& options) {
  return OpenUringSource(path, options, UringTuning{});
}

Result<std::unique_ptr<Source>> OpenUringSource(const std::string& path,
                                                const LocalOpenOptions& options,
                                                const UringTuning& tuning) {
  FL_ASSIGN_OR_RETURN(LocalFile file, io_internal::OpenLocal(path, options.direct));
  LocalFd buffered;
  if (options.direct) {
    FL_ASSIGN_OR_RETURN(buffered, io_internal::ReopenLocal(path, /*direct=*/false));
  }
  const uint32_t depth =
      options.queue_depth > 0 ? std::min(options.queue_depth, kMaxDepth) : kDefaultDepth;
  const uint64_t unit = options.direct ? file.direct_alignment : 1;
  const uint64_t per_sqe =
      std::max(unit, std::min(tuning.max_bytes_per_sqe, uint64_t{1} << 30) / unit * unit);
  auto source = std::make_unique<UringSource>(path, std::move(file), std::move(buffered),
                                              options.direct, depth, per_sqe);
  FL_RETURN_IF_ERROR(source->Init());
  return std::unique_ptr<Source>(std::move(source));
}

}  // namespace flashload
