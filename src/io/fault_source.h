// FaultSource: seeded fault injection around any source, on both ReadAt() and Submit()/Reap().
//
// Which requests fault: every request gets an index in call order (ReadAt() calls and submitted
// requests share one counter). A request faults when all the set conditions hold: its index is at
// least `after_requests`; with `one_in` = N > 0, a seeded draw on (seed, index) hits 1 in N; with
// `at_offsets` non-empty, its byte range contains one of them; fewer than `max_faults` (0: no
// limit) faults were planned. The same seed and request sequence give the same faults.
//
// What a fault does (an injected fault never comes back as an OK read with the right bytes):
// - kIoError: the request fails with kIoError (EIO), naming the source and offset.
// - kInterrupted: the request fails with kUnavailable (EINTR), which is retryable.
// - kShortRead: the request is OK but reports half the bytes it read (not at end of file), which
//   the contract reserves for end of file; the engine must treat it as an unexpected EOF or read
//   the rest.
// - kCorrupt: the request is OK with all its bytes, but one of them is flipped; only verification
//   (a checksum, or comparing bytes in tests) can catch it.
// Short reads and corruption need bytes to act on: a read that returned none is left alone and not
// counted. injected() counts the faults really applied.
//
// On the async path the request still goes to the target (so its buffer is written as usual) and
// the fault is applied to its completion. A batch the target refuses is refused whole, as the
// target refused it. Thread-safety: all methods, from any thread. Owns the target.
#ifndef FLASHLOAD_IO_FAULT_SOURCE_H_
#define FLASHLOAD_IO_FAULT_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "flashload/source.h"
#include "io/tag_table.h"

namespace flashload {

enum class FaultKind { kIoError, kShortRead, kInterrupted, kCorrupt };

struct FaultOptions {
  FaultKind kind = FaultKind::kIoError;
  uint64_t seed = 0;
  uint32_t one_in = 0;                 // 0: every eligible request; N: a seeded 1-in-N draw
  std::vector<uint64_t> at_offsets{};  // non-empty: only requests whose range contains one of these
  uint64_t after_requests = 0;         // the first K requests never fault
  uint64_t max_faults = 0;             // 0: no limit
};

class FaultSource : public SourceWrapper {
 public:
  FaultSource(std::unique_ptr<Source> target, FaultOptions options);

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override;
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override;

  // Faults applied so far, and requests seen so far.
  uint64_t injected() const { return injected_.load(); }
  uint64_t requests() const;

 protected:
  Status DoSubmit(std::span<const ReadRequest> requests) override;

 private:
  struct Planned {
    uint64_t index = 0;
    uint64_t offset = 0;
    std::byte* dst = nullptr;
    bool fault = false;
  };

  Planned Plan(uint64_t offset, uint64_t length, std::byte* dst) const;  // locks mu_
  // Applies a planned fault to a finished read of `n` bytes; returns the result to report.
  Result<size_t> Apply(const Planned& p, Result<size_t> n) const;

  const FaultOptions options_;
  mutable std::mutex mu_;
  mutable uint64_t next_index_ = 0;
  mutable uint64_t planned_ = 0;
  mutable std::atomic<uint64_t> injected_{0};
  io_internal::TagTable<Planned> pending_;  // guarded by mu_
};

std::unique_ptr<FaultSource> NewFaultSource(std::unique_ptr<Source> target, FaultOptions options);

}  // namespace flashload

#endif  // FLASHLOAD_IO_FAULT_SOURCE_H_
