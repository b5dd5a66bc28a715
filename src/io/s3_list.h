// S3 XML: ListObjectsV2 pages and error bodies, read with the XML reader of io/xml.h.
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_IO_S3_LIST_H_
#define FLASHLOAD_IO_S3_LIST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"
#include "io/http_status.h"
#include "io/sigv4.h"
#include "io/xml.h"

namespace flashload {

// ---- ListObjectsV2 ----------------------------------------------------------------------------

struct S3ListRequest {
  std::string prefix;
  std::string continuation_token;  // from the previous page; empty for the first
  std::string delimiter;           // "/" to list one folder level (CommonPrefixes)
  uint32_t max_keys = 0;           // 0: the server's default (1000)
};

// The query of a ListObjectsV2 request: list-type=2 plus the set fields, raw (SignV4() and
// CanonicalQueryString() encode and sort them).
std::vector<QueryParam> ListObjectsV2Query(const S3ListRequest& request);

struct S3Object {
  std::string key;  // decoded (also from EncodingType=url responses)
  uint64_t size = 0;
  std::string etag;           // as sent, quotes included
  std::string last_modified;  // ISO 8601 as sent
};

struct S3ListPage {
  std::vector<S3Object> objects;
  std::vector<std::string> common_prefixes;
  bool is_truncated = false;
  std::string next_continuation_token;  // non-empty whenever is_truncated
  uint64_t key_count = 0;               // as reported (objects + common prefixes), 0 if absent
};

// Parses one ListObjectsV2 response body. kDataLoss (naming `what` and the byte offset) for
// malformed XML, a root other than ListBucketResult, a Contents without Key or with a Size that
// is not a decimal uint64, IsTruncated not "true"/"false", or a truncated page without
// NextContinuationToken (which could never be continued). An <Error> body is turned into the
// Status S3ErrorToStatus() gives for it.
Result<S3ListPage> ParseListObjectsV2(std::string_view xml, std::string_view what);

// ---- Errors -----------------------------------------------------------------------------------

struct S3ErrorInfo {
  std::string code;  // "NoSuchKey", "AccessDenied", ...
  std::string message;
  std::string resource;
  std::string request_id;
  std::string region;    // the bucket's region, in AuthorizationHeaderMalformed answers
  std::string endpoint;  // where to go instead, in PermanentRedirect answers
};

// Parses an <Error> body. kDataLoss when it is not XML or its root is not Error. Fields S3 sends
// for signature mismatches (StringToSign, SignatureProvided, CanonicalRequest...) are not kept.
Result<S3ErrorInfo> ParseS3ErrorXml(std::string_view xml);

// The StatusCode for an S3 error: by `s3_code` where it says more than the HTTP status
// (NoSuchKey → kNotFound, SlowDown and RequestTimeout → kUnavailable, AccessDenied and
// PermanentRedirect → kFailedPrecondition...), else HttpStatusCode(http_status) (io/http_status.h).
StatusCode S3ErrorStatusCode(int http_status, std::string_view s3_code);

// The ServiceErrorDecoder of S3 (io/http_status.h): an <Error> body as its code, message, the
// region, endpoint and request id it names, and what its code means; std::nullopt for any other
// body.
std::optional<ServiceError> DecodeS3Error(std::string_view body);

// A readable Status for a failed S3 request: "<what>: HTTP 404 NoSuchKey: The specified key does
// not exist. (request id X)", plus the region or endpoint to use when S3 names one. A body that is
// not an S3 error shows at most 200 printable bytes of it (none when it mentions a signature).
Status S3ErrorToStatus(int http_status, std::string_view body, std::string_view what);

}  // namespace flashload

#endif  // FLASHLOAD_IO_S3_LIST_H_
