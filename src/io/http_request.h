// One HTTP request with a body, sent synchronously (the writes of the S3 uploader: PUT, POST,
// DELETE), and the libcurl setup every flashload transfer shares with the ranged reads of
// HttpSource (io/http_source.h): the one place that sets timeouts, TLS, protocols and verbatim
// paths on a handle, and turns a libcurl failure into a Status.
//
// SendHttpRequest() sends exactly the request it is given: no decorator runs (the caller signs
// first, since a signature covers the payload hash), redirects are not followed (a write is never
// replayed at another origin), and no retry happens here (callers retry whole requests with
// RetryCalls(), io/retry_source.h). Any HTTP answer, 2xx or not, is a successful Result: the caller
// reads the status code and decides, through HttpErrorCode() (io/http_status.h).
//
// Errors: only transport failures, from CurlTransportError(): a timeout, a refused or reset
// connection, a body cut short → kUnavailable (retryable); a TLS verification failure →
// kFailedPrecondition; a malformed URL → kInvalidArgument. Messages name the URL as RedactUrl()
// shows it, plus the caller's `what` (object, part and byte offset), never a header value.
//
// Thread-safety: every function is reentrant; each call uses its own easy handle.
#ifndef FLASHLOAD_IO_HTTP_REQUEST_H_
#define FLASHLOAD_IO_HTTP_REQUEST_H_

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"
#include "io/http_source.h"

namespace flashload {

// curl_global_init(), once per process; kInternal when it failed.
Status CurlGlobalInit();

// Sets the transport options of `options` on `easy`: verbatim paths (S3 keys keep "." and "//"),
// HTTP/1.1, http and https only, no signals, keep-alive, the connect and whole-request timeouts,
// the low-speed abort, TLS verification and the CA bundle. Redirects are left off.
void ApplyCurlTransport(CURL* easy, const HttpOptions& options);

// The Status of a transfer libcurl ended with `rc` != CURLE_OK. `errbuf` is the handle's
// CURLOPT_ERRORBUFFER (may be empty), `where` names the URL and what was being done, `bytes` how
// far the transfer got.
Status CurlTransportError(CURLcode rc, const char* errbuf, std::string_view where, uint64_t bytes,
                          const HttpOptions& options);

// `message` with every occurrence of each of `secrets` (header values sent with a request, in
// case the server echoes them) replaced by "<redacted>".
std::string ScrubSecrets(std::string message, const std::vector<std::string>& secrets);

// An HTTP answer.
struct HttpResponse {
  long code = 0;          // the status code of the final response
  std::string etag;       // its ETag header, quotes included ("" when none)
  std::string body;       // up to the `body_limit` first bytes of its body
  bool body_cut = false;  // the body was longer than `body_limit`
};

// Sends `method` to `url` with `headers` (sent as given, in order) and `body` (sent with a
// Content-Length, also when empty, for methods other than GET, HEAD and DELETE). `what` is added
// to transport errors. The body must stay valid during the call. See the top of this file.
Result<HttpResponse> SendHttpRequest(
    std::string_view method, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    std::span<const std::byte> body, const HttpOptions& options, std::string_view what,
    size_t body_limit = 1 << 20);

}  // namespace flashload

#endif  // FLASHLOAD_IO_HTTP_REQUEST_H_
