// S3 addressing: "s3://bucket/key" URIs, bucket name rules, and the URL, Host header and canonical
// URI of a request to a bucket or an object on AWS or on an S3-compatible endpoint.
//
// Keys in an s3:// URI are taken literally, as the AWS CLI does: "s3://b/a%20b" names the key
// "a%20b", and '?' or '#' are part of the key. On the wire every key byte outside the RFC 3986
// unreserved set is percent-encoded, '/' kept (S3EncodeKey()), and that same string is the
// canonical URI that SigV4 signs.
//
// Addressing: virtual-hosted style (https://bucket.s3.REGION.amazonaws.com/key) unless path style
// (https://s3.REGION.amazonaws.com/bucket/key, or ENDPOINT/bucket/key) is asked for in S3Options,
// the bucket name has a dot (TLS certificates do not cover it), or the endpoint host is an IP
// address. A default port (80 for http, 443 for https) is dropped from both the URL and the Host
// header, so they match what an HTTP client sends. Keys may hold "." and ".." segments and "//",
// which S3 keeps as they are: a transport must send the path verbatim (libcurl:
// CURLOPT_PATH_AS_IS), or the server sees another key and the signature does not match.
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_IO_S3_URL_H_
#define FLASHLOAD_IO_S3_URL_H_

#include <string>
#include <string_view>

#include "flashload/status.h"
#include "io/aws_config.h"

namespace flashload {

struct S3Location {
  std::string bucket;
  std::string key;  // may be empty (the whole bucket)

  // An empty key or one ending in '/' names a folder prefix, not an object.
  bool is_prefix() const { return key.empty() || key.back() == '/'; }
};

// The longest key S3 accepts, in bytes.
inline constexpr size_t kMaxS3KeyBytes = 1024;

// Parses "s3://bucket", "s3://bucket/", "s3://bucket/key" or "s3://bucket/prefix/" (scheme case
// ignored). kInvalidArgument naming the URI for another scheme, an invalid bucket name, or a key
// over kMaxS3KeyBytes.
Result<S3Location> ParseS3Uri(std::string_view uri);

// "s3://bucket/key".
std::string S3Uri(const S3Location& location);

// Checks the S3 bucket naming rules: 3 to 63 bytes of a-z, 0-9, '.', '-'; starts and ends with a
// letter or digit; no "..", ".-" or "-."; not an IPv4 address; no reserved "xn--" / "sthree-"
// prefix or "-s3alias" / "--ol-s3" suffix. kInvalidArgument saying which rule is broken.
Status ValidateS3BucketName(std::string_view bucket);

// Percent-encodes every byte of `key` outside the unreserved set, keeping '/'.
std::string S3EncodeKey(std::string_view key);

// Everything a transport needs to address one request.
struct S3RequestTarget {
  std::string url;            // "scheme://host[:port]" + canonical_uri; no query
  std::string host;           // Host header value ("host" or "host:port")
  std::string canonical_uri;  // the encoded path, as sent and as signed
  bool path_style = false;
};

// The target of a request on object `key` of `bucket` (an empty key: the bucket itself, as
// ListObjectsV2 uses). kInvalidArgument for a bad bucket name, a key over kMaxS3KeyBytes, or an
// endpoint that is not "http[s]://host[:port][/base-path]".
Result<S3RequestTarget> S3ObjectTarget(const S3Options& options, std::string_view bucket,
                                       std::string_view key);

}  // namespace flashload

#endif  // FLASHLOAD_IO_S3_URL_H_
