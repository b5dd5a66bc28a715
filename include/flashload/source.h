// Source: random-access bytes of one object (a local file, an HTTP object, a tar member...).
//
// Two ways to read:
// - ReadAt(): a positional, synchronous, thread-safe read. Returns the number of bytes read, which
//   is less than requested only at end of file (a short read inside the object is retried
//   internally).
// - Submit()/Reap(): completion-based batches, so io_uring, a thread pool and libcurl's multi
//   interface all fit and the engine never blocks per request. The default implementation runs
//   each request through ReadAt() inside Submit() and queues its completion.
//
// Contracts of the batch interface:
// - Validation: Submit() checks the whole batch once, before any backend sees it (a destination
//   for every byte, offset + length within uint64, and the alignment below); a bad batch is
//   kInvalidArgument naming the source and the first bad request, and none of it is queued.
//   Backends implement DoSubmit(), which only ever sees validated batches.
// - Thread-safety: all methods may be called from any thread. A completion is delivered to exactly
//   one Reap() call. The engine drives a source from one thread.
// - Ownership: `dst` of a request is owned by the caller and must stay valid, and not be read or
//   written by the caller, until the request's completion has been reaped.
// - Alignment: when caps().direct_io is set, `offset`, `length` and `dst` must be multiples of
//   caps().alignment; otherwise any values are accepted.
// - Short reads: a completion with status OK may carry fewer bytes than requested only when the
//   read reached the end of the object. Backends handle EINTR, EAGAIN and partial transfers
//   themselves.
// - Errors: a failed request completes with a non-OK status naming the object and byte offset.
//   Its `bytes` then counts the leading bytes at `dst` that did arrive intact (0 when unknown), so
//   a retry may resume after them; the rest of `dst` is unspecified. A failure of Submit() itself
//   means none of the batch was queued.
// - Cancellation: Cancel() asks every request in flight to complete soon (possibly with
//   kCancelled); the caller must still Reap() every submitted request before freeing their
//   buffers.
// - Lifetime: destroying a source with requests in flight first waits for them.
#ifndef FLASHLOAD_SOURCE_H_
#define FLASHLOAD_SOURCE_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/deadline.h"
#include "flashload/defaults.h"
#include "flashload/status.h"

namespace flashload {

// What a source can do. A backend reports these and nothing more; the strategies of the engine
// choose chunk sizes and queue depths from them.
struct SourceCaps {
  bool direct_io = false;      // reads bypass the page cache (O_DIRECT); alignment applies
  uint32_t alignment = 1;      // offset/length/buffer alignment when direct_io (a power of two)
  uint32_t max_in_flight = 1;  // requests worth keeping in flight at once
  uint64_t preferred_chunk = defaults::kChunkBytes;  // bytes per request that reach full speed
  // What the link was measured to do (remote objects, on the opening request; 0: not measured):
  // the time to the first byte of a request, and the rate one request's body arrived at. The
  // strategy code sizes requests from these (larger ranges on a long, fast link).
  uint64_t first_byte_ns = 0;
  uint64_t request_bytes_per_second = 0;
};

struct ReadRequest {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::byte* dst = nullptr;
  uint64_t tag = 0;  // returned unchanged in the completion
};

struct ReadResult {
  uint64_t tag = 0;
  uint64_t bytes = 0;  // bytes placed at dst (on error: the intact leading bytes, see above)
  Status status;
};

struct ReadOptions {
  Deadline deadline = Deadline::Infinite();
};

class Source {
 public:
  virtual ~Source() = default;
  Source() = default;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  // The path or URI, for messages.
  virtual const std::string& name() const = 0;
  virtual uint64_t size() const = 0;
  virtual SourceCaps caps() const = 0;
  // A short name of the backend ("io_uring+direct", "pread", "mmap", ...).
  virtual std::string_view backend() const = 0;

  // Synchronous positional read; see the contract above. Returns bytes read (< dst.size() only
  // at EOF).
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                                const ReadOptions& options = {}) const = 0;

  // Queues a batch: validates it against caps() (see "Validation" above), then hands it to
  // DoSubmit(). Not virtual, so no backend can skip the check or repeat it.
  Status Submit(std::span<const ReadRequest> requests);
  // Waits until at least one completion is available or `deadline` passes, then moves up to
  // out.size() completions into `out`. Returns how many (0 when the deadline passed first).
  virtual Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline);
  // Asks requests in flight to finish early. Default: nothing to cancel (requests complete in
  // Submit).
  virtual void Cancel() {}

 protected:
  // Queues a batch Submit() validated. Default: runs each request through ReadAt() now and queues
  // its completion for Reap(). A non-OK return means none of the batch was queued.
  virtual Status DoSubmit(std::span<const ReadRequest> requests);
  // Hands a batch that was validated already (one a wrapper was given, tags substituted) to
  // `target`'s DoSubmit() without checking it again. A wrapper that builds new requests (a retry of
  // the rest of a range) submits them through target.Submit() instead, so they are checked.
  static Status SubmitValidated(Source& target, std::span<const ReadRequest> requests) {
    return target.DoSubmit(requests);
  }

 private:
  // State of the default Submit()/Reap().
  std::mutex default_mu_;
  std::condition_variable default_cv_;
  std::deque<ReadResult> default_done_;
};

// Reads exactly dst.size() bytes at `offset` through ReadAt(), or fails with kDataLoss
// ("unexpected end of file") naming the source and offset.
Status ReadExact(const Source& source, uint64_t offset, std::span<std::byte> dst);

// Forwards every call to a wrapped source. Policy (retries, statistics, fault and latency
// injection) derives from this and overrides what it changes; a wrapper that substitutes tags
// forwards batches with io_internal::ForwardTagged() (src/io/tag_table.h). Owns the wrapped
// source, which lives as long as the wrapper. Thread-safety: as the wrapped source.
class SourceWrapper : public Source {
 public:
  explicit SourceWrapper(std::unique_ptr<Source> target) : target_(std::move(target)) {}
  const std::string& name() const override { return target_->name(); }
  uint64_t size() const override { return target_->size(); }
  SourceCaps caps() const override { return target_->caps(); }
  std::string_view backend() const override { return target_->backend(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    return target_->ReadAt(offset, dst, options);
  }
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    return target_->Reap(out, deadline);
  }
  void Cancel() override { target_->Cancel(); }

  Source& target() const { return *target_; }

 protected:
  // The outermost Submit() validated the batch against caps(), which are the target's unless a
  // wrapper changes them.
  Status DoSubmit(std::span<const ReadRequest> requests) override {
    return SubmitValidated(*target_, requests);
  }

 private:
  std::unique_ptr<Source> target_;
};

// What a message, a report or an exception may show of `uri`: a URL without its user info
// ("http://user:password@host/k" → "http://host/k"), the values of query parameters that carry
// credentials replaced by "<redacted>" (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token,
// sig, token, and any name holding "token", "secret", "signature", "password" or "credential"),
// and without its fragment; s3:// URIs lose only user info (their '?' and '#' belong to the key).
// A local path comes back unchanged. Every message that names a URI passes it through this.
std::string RedactUrl(std::string_view uri);

}  // namespace flashload

#endif  // FLASHLOAD_SOURCE_H_
