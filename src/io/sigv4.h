// AWS Signature Version 4: signs an HTTP request described as data, for S3 and any other service.
//
// SignV4() is a pure function of its inputs (the time is passed in), so it is testable against the
// published test vectors and usable by any HTTP transport: the transport sends the request exactly
// as described (method, the encoded path, the encoded query from CanonicalQueryString(), the given
// headers) plus the headers SignV4() returns.
//
// Encoding contract:
// - `canonical_uri` is the path as it goes on the request line, already percent-encoded: '/' kept
//   and every byte outside the RFC 3986 unreserved set (A-Z a-z 0-9 - . _ ~) written as %XX with
//   upper-case hex. UriEncodePath() builds it from a raw path; S3 signs that single encoding as is
//   (no normalization of "." or "//" segments, no second encoding).
// - Query parameters are given raw (decoded); the signer encodes names and values with the
//   unreserved set (' ' becomes %20, never '+') and sorts by encoded name, then encoded value.
// - Headers are given as sent; names are compared case-insensitively. The canonical form lowercases
//   names, trims values and collapses runs of spaces into one, and joins repeated names with ','
//   in the order given. Every given header is signed; "host" is required.
//
// Secrets: the secret key and the signature never appear in a Status this code builds. Callers that
// log a request pass header values through RedactHeaderValue() / RedactAuthorization().
//
// Thread-safety: every function is reentrant; there is no shared state.
#ifndef FLASHLOAD_IO_SIGV4_H_
#define FLASHLOAD_IO_SIGV4_H_

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flashload/status.h"

namespace flashload {

// A long-term or temporary AWS key pair. An empty access key means anonymous (unsigned) access.
struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // non-empty: temporary credentials, sent as x-amz-security-token

  bool anonymous() const { return access_key_id.empty(); }
};

using HttpHeader = std::pair<std::string, std::string>;  // name, value
using QueryParam = std::pair<std::string, std::string>;  // raw name, raw value

// The payload hash S3 accepts when the body is not hashed (reads and streamed uploads over TLS).
inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
// Hex SHA-256 of the empty string: the payload hash of a request without a body.
inline constexpr std::string_view kEmptyPayloadSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct SigV4Request {
  std::string method = "GET";       // upper case, as sent
  std::string canonical_uri = "/";  // encoded path, see the encoding contract above
  std::vector<QueryParam> query;    // raw names and values, any order
  std::vector<HttpHeader> headers;  // as sent; must include Host; signed, all of them
  std::string payload_hash =
      std::string(kEmptyPayloadSha256);  // lower-case hex, or UNSIGNED-PAYLOAD
};

struct SigV4Options {
  std::string region = "us-east-1";
  std::string service = "s3";
  // Adds (and signs) x-amz-content-sha256 with the payload hash. S3 requires it; the generic
  // SigV4 test suite does not use it.
  bool add_content_sha256_header = true;
};

struct SigV4Signature {
  // Headers to add to the request: Authorization, x-amz-date, then x-amz-content-sha256 and
  // x-amz-security-token when they apply.
  std::vector<HttpHeader> headers;
  std::string canonical_query;    // the query string to send, '?' excluded (may be empty)
  std::string signed_headers;     // "host;x-amz-date"
  std::string canonical_request;  // for tests and debugging; holds no secret
  std::string string_to_sign;     // for tests and debugging; holds no secret
};

// Signs `request` with `credentials` at `time` (UTC). Fails with kInvalidArgument when the request
// is malformed (no Host, a header the signer owns given twice, a bad canonical URI or payload
// hash, empty region/service, anonymous or incomplete credentials); the message names the part at
// fault and never holds the secret.
Result<SigV4Signature> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                              std::chrono::system_clock::time_point time,
                              const SigV4Options& options = {});

// Signs a request a transport holds as a URL, "http[s]://host[:port]/path[?query]" (an HTTP
// client's request decorator, typically). The path must already be encoded (S3ObjectTarget() and
// UriEncodePath() build such paths) and is signed as is. The query is split on '&' and '=' and
// percent-decoded ('+' is kept as a literal plus), then signed canonically; the server does the
// same with what it receives, so the order on the wire does not matter. The Host header is the
// URL's host, with the port unless it is the scheme's default (as libcurl sends it), unless
// `headers` already has one. kInvalidArgument for a URL of another shape or a bad %-escape, and
// for everything SignV4() rejects.
Result<SigV4Signature> SignV4Url(std::string_view method, std::string_view url,
                                 std::span<const HttpHeader> headers, std::string_view payload_hash,
                                 const AwsCredentials& credentials,
                                 std::chrono::system_clock::time_point time,
                                 const SigV4Options& options = {});

// "20150830T123600Z" for `time` (UTC, seconds truncated).
std::string FormatAmzDate(std::chrono::system_clock::time_point time);

// Percent-encodes every byte outside the unreserved set; '/' is kept when `keep_slash`.
std::string UriEncode(std::string_view raw, bool keep_slash);
// UriEncode(raw_path, /*keep_slash=*/true), with a leading '/' added when missing.
std::string UriEncodePath(std::string_view raw_path);
// The canonical (and wire) query string: encoded name=value pairs sorted and joined with '&'.
std::string CanonicalQueryString(std::span<const QueryParam> query);

// Lower-case hex SHA-256 of `data` (OpenSSL libcrypto).
std::string Sha256Hex(std::span<const std::byte> data);
std::string Sha256Hex(std::string_view data);

// An Authorization header value safe to log: the algorithm, credential scope and signed headers
// are kept, the signature is replaced by "<redacted>". A value of another shape becomes
// "<redacted>" entirely.
std::string RedactAuthorization(std::string_view header_value);
// The value to log for header `name`: Authorization goes through RedactAuthorization(),
// x-amz-security-token becomes "<redacted>", anything else is returned as is.
std::string RedactHeaderValue(std::string_view name, std::string_view value);

}  // namespace flashload

#endif  // FLASHLOAD_IO_SIGV4_H_
