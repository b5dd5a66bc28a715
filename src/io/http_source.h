// HttpSource: an object behind an http:// or https:// URL, read with ranged GETs over libcurl's
// multi interface.
//
// Opening: one speculative ranged GET of the first `prefix_bytes` (Range: bytes=0-1048575 by
// default) gives the object size (Content-Range "bytes 0-N/SIZE", or the body length when a small
// object comes back whole with 200), its ETag, and the first bytes, which are kept: a read that
// lies inside them (the safetensors header, typically) is served from memory without a request,
// and a read that starts inside them only fetches the rest. There is no HEAD and no second round
// trip. A retryable failure of the opening GET is retried per `open_retry`.
//
// Every later range carries `If-Match: <etag>` when the server gave a strong ETag, and a response
// whose ETag differs from the pinned one is refused too, so an object replaced during the load is a
// kDataLoss error ("object changed during the load (ETag ... no longer matches)"), never a mix of
// old and new bytes.
//
// Errors (each names the URL as RedactUrl() shows it, and the byte offset):
// - 404 → kNotFound; 401/403 → kFailedPrecondition with the server's <Code>/<Message> (S3 XML) or
//   the first 200 bytes of its body, sanitized; other 4xx → kFailedPrecondition;
// - 412, a different ETag, more bytes than requested, or a Content-Range that does not match the
//   request → kDataLoss;
// - more than `max_redirects` redirects → kFailedPrecondition;
// - a 200 answer to a ranged GET (the server ignores Range) → kFailedPrecondition, unless the whole
//   object fitted in the opening response;
// - 5xx (503 SlowDown included), 429, a connection reset or refused, a timeout, the low-speed
//   abort, a body shorter than promised → kUnavailable (retryable). The completion's `bytes` then
//   counts the intact leading bytes placed at dst, so RetrySource can resume after them.
// Header values (Authorization, signatures) never appear in messages; values of request headers
// are also scrubbed from the server's error text before it is quoted.
//
// Transport: one event thread per source runs curl_multi_poll()/curl_multi_perform() over at most
// `connections` transfers at once, each on an easy handle taken from a pool (connections are kept
// alive in the multi handle's cache and reused). The write callback copies body bytes straight
// into the request's dst. Submit() queues and wakes the thread; Reap() waits on a condition
// variable until the deadline; ReadAt() submits one transfer and waits for it (its completion never
// reaches Reap()). Cancel() aborts every queued and running transfer; they complete with
// kCancelled. The destructor waits for transfers in flight, then cleans up.
//
// Thread-safety: all methods, from any thread. The decorator runs on the event thread.
#ifndef FLASHLOAD_IO_HTTP_SOURCE_H_
#define FLASHLOAD_IO_HTTP_SOURCE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/retry_source.h"

namespace flashload {

// One HTTP request about to be sent, as a decorator sees it.
struct HttpRequest {
  std::string method = "GET";
  std::string url;  // the full URL, query string included
  // Header lines to send, in order (name, value); the decorator may add to them (e.g. SigV4's
  // Authorization, x-amz-date, x-amz-content-sha256). Range and If-Match are already here.
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t range_begin = 0;  // the requested bytes [range_begin, range_end], inclusive
  uint64_t range_end = 0;
};

// Called for every request right before it is sent (the opening GET and every range, retries
// included). A non-OK status fails that request with it.
using RequestDecorator = std::function<Status(HttpRequest& request)>;

struct HttpOptions {
  // Extra headers sent with every request to the URL's origin, e.g. {"Authorization", "Bearer
  // ..."}. Never printed. Redirects are followed by the source itself (not by libcurl), so that a
  // redirect to another origin (scheme, host or port) sends neither these headers nor the
  // decorator's (credentials are bound to the host they were given for), unless
  // `header_on_redirect` is set. A same-origin redirect keeps them, and the decorator runs again
  // with the new URL (a SigV4 signature covers the path).
  std::vector<std::pair<std::string, std::string>> headers;
  bool header_on_redirect = false;
  std::string ca_bundle;  // PEM file of trusted CAs; empty: the system's
  bool verify_tls = true;
  uint32_t connections = 16;                // transfers in flight (and connections per host)
  uint64_t chunk_size = uint64_t{8} << 20;  // caps().preferred_chunk (the least, when adapted)
  // Adapt the range size to the link measured on the opening request: 4 × first-byte latency ×
  // one connection's rate, rounded up to a power of two, between chunk_size and max_chunk.
  bool adapt_chunk = false;
  uint64_t max_chunk = uint64_t{64} << 20;
  uint64_t prefix_bytes = uint64_t{1} << 20;  // the opening speculative GET
  std::chrono::milliseconds connect_timeout{10'000};
  // A transfer slower than `low_speed_bytes_per_second` for `low_speed_time` is aborted
  // (kUnavailable). 0 bytes/s: never.
  uint64_t low_speed_bytes_per_second = 1024;
  std::chrono::seconds low_speed_time{30};
  std::chrono::milliseconds request_timeout{0};  // whole request; 0: none
  bool follow_redirects = true;
  uint32_t max_redirects = 5;
  RequestDecorator decorator;
  RetryPolicy open_retry;  // retries of the opening GET
};

// What an HttpSource has done, for tests and reports.
struct HttpCounters {
  uint64_t requests = 0;        // GETs sent (the opening one included)
  uint64_t prefix_hits = 0;     // reads served entirely from the cached prefix
  uint64_t bytes_received = 0;  // body bytes placed into buffers
};

class HttpSource : public Source {
 public:
  // The URL as shown in messages (RedactUrl(): no user info, no credential in the query).
  virtual const std::string& display_url() const = 0;
  // The ETag pinned at open, quotes included ("" when the server sent none).
  virtual const std::string& etag() const = 0;
  // Bytes of the object kept from the opening GET.
  virtual uint64_t prefix_size() const = 0;
  virtual HttpCounters counters() const = 0;
};

// Opens `url` (http:// or https://) with one GET; see above.
Result<std::unique_ptr<HttpSource>> OpenHttpObject(const std::string& url,
                                                   const HttpOptions& options);
Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options);

// HttpOptions for the remote options given to OpenSource() (connections, chunk, TLS, headers
// "Name: value", retries of the opening GET).
HttpOptions HttpOptionsFrom(const RemoteOpenOptions& remote);

// Registers "http" and "https" in the URI registry: sources (an HttpSource inside a RetrySource
// with the remote options' retry policy) and model stores (a single file per URL: plain HTTP cannot
// list folders). Idempotent. OpenSource(), OpenModelStore() and RegisteredSourceSchemes() call it
// themselves (not a static initializer, which the linker may drop from a static library), so a
// program linking fl_io never needs to.
void RegisterHttpSchemes();

// Checks request headers before anything is sent: a name must be a non-empty HTTP token, and
// neither a name nor a value may hold CR, LF or NUL (which would inject another header line).
// kInvalidArgument naming the header (never its value) and `url` (redacted).
Status CheckRequestHeaders(const std::vector<std::pair<std::string, std::string>>& headers,
                           const std::string& url);

}  // namespace flashload

#endif  // FLASHLOAD_IO_HTTP_SOURCE_H_
