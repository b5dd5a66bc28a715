// Writing objects to S3 and S3-compatible stores (R2, MinIO): one PUT for a small object, a
// multipart upload for a large one.
//
// Multipart: CreateMultipartUpload, then UploadPart for parts 1..N with up to `parts_in_flight`
// parts in flight (one thread and one connection each; each thread fills its part buffer through
// the caller's PartReader, then sends it), then CompleteMultipartUpload listing every part's ETag
// in part order. On any failure, and on cancellation, the upload is aborted
// (AbortMultipartUpload), so no orphaned upload keeps its parts billed; the abort itself is tried
// with the same retry policy, and when even it fails the error says which upload id to abort.
//
// Parts: `part_bytes` each (default 64 MiB, at least 5 MiB, S3's minimum for every part but the
// last), the last one shorter. An object that would need more than 10,000 parts (S3's limit) gets
// larger parts: the smallest multiple of 1 MiB that fits it in 10,000. Memory: parts_in_flight ×
// part_bytes of buffers.
//
// Signing: SigV4 on every request (anonymous credentials: unsigned). The payload hash signed is the
// SHA-256 of the body (x-amz-content-sha256), not UNSIGNED-PAYLOAD: S3 then checks every part's
// bytes against the hash and refuses a part damaged in transit (XAmzContentSHA256Mismatch), over
// http:// endpoints (MinIO, test servers) as well as https://, for the cost of hashing each part
// once on its sending thread.
//
// Retries: every request (create, each part, complete, abort, PUT) is retried as a whole with the
// policy's full-jitter backoff (RetryCalls(), io/retry_source.h) while it fails with a retryable
// status: 5xx, 503 SlowDown, 408/429, RequestTimeout, a timeout, a reset or refused connection. A
// part keeps its buffer across attempts (it is read once). CompleteMultipartUpload may answer 200
// and still fail with an <Error> body: that body is decoded and is an error like any other (a
// retryable one, InternalError or SlowDown, is retried).
//
// Errors name the s3:// URI, the operation, and for parts the part number and byte range; HTTP
// errors carry the code HttpErrorCode() gives (io/http_status.h) with S3's <Error> decoded; no
// message holds a credential or a signature.
//
// Thread-safety: S3Uploader's methods may be called concurrently (each call has its own
// connections). The PartReader is called from several threads at once, one part each.
#ifndef FLASHLOAD_IO_S3_UPLOAD_H_
#define FLASHLOAD_IO_S3_UPLOAD_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/registry.h"
#include "flashload/status.h"
#include "io/aws_config.h"
#include "io/http_request.h"
#include "io/http_source.h"
#include "io/retry_source.h"
#include "io/s3_url.h"

namespace flashload {

inline constexpr uint64_t kS3MinPartBytes = uint64_t{5} << 20;
inline constexpr uint64_t kS3MaxPartBytes = uint64_t{5} << 30;
inline constexpr uint32_t kS3MaxParts = 10'000;
inline constexpr uint64_t kDefaultPartBytes = uint64_t{64} << 20;

// Fills `dst` with the object's bytes at [offset, offset + dst.size()). Called once per part,
// from the part's thread; a non-OK status fails (and aborts) the upload with it.
using PartReader = std::function<Status(uint64_t offset, std::span<std::byte> dst)>;

struct S3UploadOptions {
  uint64_t part_bytes = kDefaultPartBytes;  // at least kS3MinPartBytes
  uint32_t parts_in_flight = 4;             // at least 1
  // Objects up to this size go in one PUT; larger ones in a multipart upload. 0: part_bytes.
  uint64_t single_put_max = 0;
  RetryPolicy retry;
  // Called after each part (or the single PUT) is stored, with the bytes stored so far; from any
  // of the part threads, never two at once.
  std::function<void(uint64_t bytes_done)> progress;
  // Set by another thread to stop: parts not yet sent are not sent, the upload is aborted, and the
  // call returns kCancelled.
  const std::atomic<bool>* cancel = nullptr;
  std::string content_type = "application/octet-stream";
};

// What an upload did.
struct S3UploadResult {
  std::string etag;         // the object's ETag as S3 returned it
  uint32_t parts = 0;       // 0 for a single PUT
  uint64_t part_bytes = 0;  // the part size used (multipart)
  uint64_t requests = 0;    // HTTP requests sent, retries included
  uint64_t retries = 0;
};

// The part size for an object of `size` bytes: `requested`, raised to fit kS3MaxParts parts.
// kInvalidArgument for a requested size outside [kS3MinPartBytes, kS3MaxPartBytes] or an object
// larger than kS3MaxParts × kS3MaxPartBytes.
Result<uint64_t> ChoosePartBytes(uint64_t size, uint64_t requested);

// The body of CompleteMultipartUpload: the parts' ETags (1-based part numbers in order).
std::string CompleteMultipartXml(const std::vector<std::string>& etags);

// The UploadId of a CreateMultipartUpload answer (an InitiateMultipartUploadResult document).
// kDataLoss naming `what` for another document or a missing UploadId; an <Error> document is
// the Status S3ErrorToStatus() gives for it with `http_status`.
Result<std::string> ParseCreateMultipartUploadXml(std::string_view xml, int http_status,
                                                  std::string_view what);

// Checks a 200 answer to CompleteMultipartUpload: OK with the object's ETag for a
// CompleteMultipartUploadResult, the decoded error for an <Error> body (S3 sends those with 200
// once it has started answering), kDataLoss naming `what` for anything else.
Result<std::string> ParseCompleteMultipartUploadXml(std::string_view xml, std::string_view what);

// Writes objects to one store. Owns a copy of its settings.
class S3Uploader {
 public:
  S3Uploader(S3Config config, HttpOptions http);

  // The uploader for `remote` (endpoint, region, TLS, timeouts) with credentials and settings from
  // the process environment, as S3ConfigFor() finds them.
  static Result<S3Uploader> ForRemote(const RemoteOpenOptions& remote);

  // Uploads `size` bytes read through `read` to `uri` ("s3://bucket/key"; not a prefix).
  Result<S3UploadResult> Upload(const std::string& uri, uint64_t size, const PartReader& read,
                                const S3UploadOptions& options) const;

  // Uploads `data` (small: a manifest) with one PUT.
  Result<S3UploadResult> PutObject(const std::string& uri, std::span<const std::byte> data,
                                   const S3UploadOptions& options) const;

 private:
  struct Counters {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> retries{0};
  };

  // Sends one request, signed over `payload_hash` (the SHA-256 of `body`), and returns the
  // answer when it is 2xx; an HTTP error as its Status.
  Result<HttpResponse> Send(std::string_view method, const S3RequestTarget& target,
                            std::string_view query, std::span<const std::byte> body,
                            std::string_view content_type, std::string_view what,
                            std::string_view payload_hash) const;
  // Send() retried per `policy`, the payload hashed once; counts requests and retries.
  Result<HttpResponse> SendRetried(std::string_view method, const S3RequestTarget& target,
                                   std::string_view query, std::span<const std::byte> body,
                                   std::string_view content_type, std::string_view what,
                                   const RetryPolicy& policy, Counters& counters) const;
  Result<S3UploadResult> UploadMultipart(const std::string& uri, const S3RequestTarget& target,
                                         uint64_t size, const PartReader& read,
                                         const S3UploadOptions& options) const;

  S3Config config_;
  HttpOptions http_;
};

}  // namespace flashload

#endif  // FLASHLOAD_IO_S3_UPLOAD_H_
