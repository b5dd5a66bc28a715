// HttpSource: an object behind an http:// or https:// URL, read with ranged GETs over libcurl's
// multi interface.
//
// Opening: one speculative ranged GET of the first `prefix_bytes` (Range: bytes=0-1048575 by
// default) gives the object size (Content-Range "bytes 0-N/SIZE", or the body length when a small
// object comes back whole with 200), its ETag, and the first bytes, which are kept: a read that
// lies inside them (the safetensors header, typically) is served from memory without a request,
// and a read that starts inside them only fetches the rest. There is no HEAD and no second round
// trip. The opening GET is tried once: retries are the registry's policy (a RetrySource around the
// source, the open itself retried; see flashload/registry.h).
//
// Every later range carries `If-Match: <etag>` when the server gave a strong ETag, and a response
// whose ETag differs from the pinned one is refused too, so an object replaced during the load is a
// kDataLoss error ("object changed during the load (ETag ... no longer matches)"), never a mix of
// old and new bytes.
//
// Errors (each names the URL as RedactUrl() shows it, and the byte offset; the code of an HTTP
// error status comes from HttpErrorCode(), io/http_status.h, with the server's error body decoded
// by `error_decoder` or quoted as at most 200 printable bytes):
// - 404 → kNotFound; 401/403 → kFailedPrecondition; other 4xx → kInvalidArgument;
// - 412, a 416 after the open (the object shrank), a different ETag, more bytes than requested, or
//   a Content-Range that does not match the request → kDataLoss;
// - more than `max_redirects` redirects → kFailedPrecondition;
// - a 200 answer to a ranged GET (the server ignores Range) → kFailedPrecondition, unless the whole
//   object fitted in the opening response;
// - 5xx (503 SlowDown included), 408, 429, a connection reset or refused, a timeout, the low-speed
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
// Caps: max_in_flight = `connections`; preferred_chunk = `chunk_size`; first_byte_ns and
// request_bytes_per_second as measured on the opening GET (when it carried at least 512 KiB). The
// backend sizes nothing itself: the strategy code (engine/strategy.h) picks the range size from
// these. No direct I/O, no alignment.
//
// Thread-safety: all methods, from any thread. The decorator and the error decoder run on the
// event thread. Lifetime: the destructor waits for the transfers in flight; buffers of requests
// not yet reaped must outlive it.
#ifndef FLASHLOAD_IO_HTTP_SOURCE_H_
#define FLASHLOAD_IO_HTTP_SOURCE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/http_status.h"

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
  uint32_t connections =
      defaults::kRemoteConnections;                   // transfers in flight (connections per host)
  uint64_t chunk_size = defaults::kRemoteChunkBytes;  // caps().preferred_chunk
  uint64_t prefix_bytes = uint64_t{1} << 20;          // the opening speculative GET
  std::chrono::milliseconds connect_timeout{10'000};
  // A transfer slower than `low_speed_bytes_per_second` for `low_speed_time` is aborted
  // (kUnavailable). 0 bytes/s: never.
  uint64_t low_speed_bytes_per_second = 1024;
  std::chrono::seconds low_speed_time{30};
  std::chrono::milliseconds request_timeout{0};  // whole request; 0: none
  bool follow_redirects = true;
  uint32_t max_redirects = 5;
  RequestDecorator decorator;
  // Reads the server's error bodies for messages and for what the service's error code means
  // (DecodeS3Error for S3 and for HttpOptionsFrom()); empty: bodies are only quoted.
  ServiceErrorDecoder error_decoder;
};

class HttpSource : public Source {
 public:
  // The URL as shown in messages (RedactUrl(): no user info, no credential in the query).
  virtual const std::string& display_url() const = 0;
  // The ETag pinned at open, quotes included ("" when the server sent none).
  virtual const std::string& etag() const = 0;
  // Bytes of the object kept from the opening GET.
  virtual uint64_t prefix_size() const = 0;
};

// Opens `url` (http:// or https://) with one GET; see above.
Result<std::unique_ptr<HttpSource>> OpenHttpObject(const std::string& url,
                                                   const HttpOptions& options);
Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options);

// HttpOptions for the remote options given to OpenSource() (connections, chunk, TLS, headers
// "Name: value", S3's error bodies decoded).
HttpOptions HttpOptionsFrom(const RemoteOpenOptions& remote);

// The factories RegisterBuiltinSchemes() registers for "http" and "https": an HttpSource with
// HttpOptionsFrom(options.remote), and a model store of single files (plain HTTP cannot list
// folders) whose ReadText() reads through ReadTextFile() (io/read_text.h).
Result<std::unique_ptr<Source>> OpenHttpUri(const std::string& uri, const OpenOptions& options);
Result<std::unique_ptr<ModelStore>> OpenHttpModelStore(const std::string& uri,
                                                       const OpenOptions& options);

// Checks request headers before anything is sent: a name must be a non-empty HTTP token, and
// neither a name nor a value may hold CR, LF or NUL (which would inject another header line).
// kInvalidArgument naming the header (never its value) and `url` (redacted).
Status CheckRequestHeaders(const std::vector<std::pair<std::string, std::string>>& headers,
                           const std::string& url);

}  // namespace flashload

#endif  // FLASHLOAD_IO_HTTP_SOURCE_H_
