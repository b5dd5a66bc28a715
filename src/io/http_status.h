// HTTP answers as Status codes: the one mapping for every HTTP request flashload sends (object
// ranges, S3 listings, index files), and what a message may quote of an error body, decoded
// through a service's hook (S3's XML <Error>, io/s3_list.h).
//
// HttpStatusCode(http_status, size_known):
//   404                → kNotFound
//   401, 403           → kFailedPrecondition: credentials, a header or a policy must change
//   408, 429, 5xx      → kUnavailable: retryable (RetrySource retries it)
//   412                → kDataLoss: If-Match failed, the object changed since it was opened
//   416                → kDataLoss when the object's size was known (it shrank during the load),
//                        else kOutOfRange (a range past the end of an object of unknown size)
//   other 4xx          → kInvalidArgument: the request itself is wrong (URL, key, headers); the
//                        same request can never succeed, whatever the state of the server
//   anything else      → kIoError (1xx, or a 2xx/3xx where an error was expected)
// A service's own error code overrides this where it says more (S3's RequestTimeout is a 400 but
// retryable; PermanentRedirect is a 301 that needs another endpoint).
//
// Thread-safety: pure functions; a decoder must be callable from any thread.
#ifndef FLASHLOAD_IO_HTTP_STATUS_H_
#define FLASHLOAD_IO_HTTP_STATUS_H_

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "flashload/status.h"

namespace flashload {

// What a service said in an error body.
struct ServiceError {
  std::string code;     // the service's error code ("NoSuchKey", "SlowDown"); may be empty
  std::string message;  // its text for people; may be empty
  std::string hints;    // what to do, ready to append (" (the bucket is in region eu-west-1)")
  std::optional<StatusCode> status;  // what `code` means, where it says more than the HTTP status
};

// Decodes an error body; std::nullopt when the body is not the service's error format.
using ServiceErrorDecoder = std::function<std::optional<ServiceError>(std::string_view body)>;

// The StatusCode of an HTTP answer that failed a request; see the table above.
StatusCode HttpStatusCode(int http_status, bool size_known = false);

// The StatusCode of a failed request: `said->status` when set, else HttpStatusCode().
StatusCode HttpErrorCode(int http_status, const ServiceError* said, bool size_known = false);

// How many bytes of an error body a message quotes.
inline constexpr size_t kQuotedBodyBytes = 200;

// What a message may quote of a body that no decoder understood: at most kQuotedBodyBytes
// printable bytes, and nothing when it mentions a signature (S3 echoes the string it signed).
std::string ErrorBodySnippet(std::string_view body);

// "Code: Message hints" of a decoded error, each part cut to kQuotedBodyBytes printable bytes.
std::string DescribeServiceError(const ServiceError& said);

}  // namespace flashload

#endif  // FLASHLOAD_IO_HTTP_STATUS_H_
