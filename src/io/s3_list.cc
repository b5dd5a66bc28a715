#include "io/s3_list.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "common/strings.h"
#include "io/http_status.h"

namespace flashload {
namespace {
Result<std::string> UrlDecode(std::string_view s, const XmlElement& at, std::string_view what) {
  // "+" and %XX, as S3 encodes keys for EncodingType=url.
  std::optional<std::string> out = PercentDecode(s, /*plus_is_space=*/true);
  if (!out) {
    return DataLossError(fmt::format("{}: <{}> at byte {} has a bad %-escape (EncodingType=url)",
                                     what, at.name, at.offset));
  }
  return *std::move(out);
}

Result<uint64_t> ParseU64(const XmlElement& e, std::string_view what) {
  const std::optional<uint64_t> v = ParseDecimal(e.text);
  if (!v) {
    return DataLossError(fmt::format("{}: <{}> at byte {} is \"{}\", not a decimal uint64", what,
                                     e.name, e.offset, e.text.substr(0, 40)));
  }
  return *v;
}

// What an S3 error code means where it says more than the HTTP status.
std::optional<StatusCode> S3CodeMeaning(std::string_view s3_code) {
  for (std::string_view c : {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound"}) {
    if (s3_code == c) return StatusCode::kNotFound;
  }
  for (std::string_view c :
       {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
        "ThrottlingException", "RequestLimitExceeded", "OperationAborted"}) {
    if (s3_code == c) return StatusCode::kUnavailable;
  }
  for (std::string_view c :
       {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
        "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
        "AuthorizationHeaderMalformed", "PermanentRedirect", "RequestTimeTooSkewed"}) {
    if (s3_code == c) return StatusCode::kFailedPrecondition;
  }
  return std::nullopt;  // InvalidRange, PreconditionFailed...: the HTTP status says it all
}

}  // namespace

std::vector<QueryParam> ListObjectsV2Query(const S3ListRequest& request) {
  std::vector<QueryParam> q = {{"list-type", "2"}};
  if (!request.prefix.empty()) q.emplace_back("prefix", request.prefix);
  if (!request.continuation_token.empty()) {
    q.emplace_back("continuation-token", request.continuation_token);
  }
  if (!request.delimiter.empty()) q.emplace_back("delimiter", request.delimiter);
  if (request.max_keys > 0) q.emplace_back("max-keys", std::to_string(request.max_keys));
  return q;
}

Result<S3ListPage> ParseListObjectsV2(std::string_view xml, std::string_view what) {
  FL_ASSIGN_OR_RETURN(XmlElement root, ParseS3Xml(xml, what));
  if (root.local_name() == "Error") return S3ErrorToStatus(200, xml, what);
  if (root.local_name() != "ListBucketResult") {
    return DataLossError(
        fmt::format("{}: the root element is <{}>, not <ListBucketResult>", what, root.name));
  }
  bool url_encoded = false;
  if (const XmlElement* enc = root.Child("EncodingType")) url_encoded = enc->text == "url";
  auto decoded = [&](const XmlElement& e) -> Result<std::string> {
    if (!url_encoded) return e.text;
    return UrlDecode(e.text, e, what);
  };

  S3ListPage page;
  for (const XmlElement& c : root.children) {
    const std::string_view n = c.local_name();
    if (n == "Contents") {
      const XmlElement* key = c.Child("Key");
      const XmlElement* size = c.Child("Size");
      if (key == nullptr || size == nullptr) {
        return DataLossError(fmt::format("{}: <Contents> at byte {} has no <{}>", what, c.offset,
                                         key == nullptr ? "Key" : "Size"));
      }
      S3Object o;
      FL_ASSIGN_OR_RETURN(o.key, decoded(*key));
      FL_ASSIGN_OR_RETURN(o.size, ParseU64(*size, what));
      if (const XmlElement* e = c.Child("ETag")) o.etag = e->text;
      if (const XmlElement* e = c.Child("LastModified")) o.last_modified = e->text;
      page.objects.push_back(std::move(o));
    } else if (n == "CommonPrefixes") {
      const XmlElement* p = c.Child("Prefix");
      if (p == nullptr) {
        return DataLossError(
            fmt::format("{}: <CommonPrefixes> at byte {} has no <Prefix>", what, c.offset));
      }
      FL_ASSIGN_OR_RETURN(std::string prefix, decoded(*p));
      page.common_prefixes.push_back(std::move(prefix));
    } else if (n == "IsTruncated") {
      if (c.text != "true" && c.text != "false") {
        return DataLossError(
            fmt::format("{}: <IsTruncated> at byte {} is \"{}\", not true or false", what, c.offset,
                        c.text.substr(0, 40)));
      }
      page.is_truncated = c.text == "true";
    } else if (n == "NextContinuationToken") {
      page.next_continuation_token = c.text;
    } else if (n == "KeyCount") {
      FL_ASSIGN_OR_RETURN(page.key_count, ParseU64(c, what));
    }
  }
  if (page.is_truncated && page.next_continuation_token.empty()) {
    return DataLossError(fmt::format(
        "{}: the listing is truncated but has no <NextContinuationToken> to continue it", what));
  }
  return page;
}

Result<S3ErrorInfo> ParseS3ErrorXml(std::string_view xml) {
  FL_ASSIGN_OR_RETURN(XmlElement root, ParseS3Xml(xml, "S3 error response"));
  if (root.local_name() != "Error") {
    return DataLossError(
        fmt::format("S3 error response: the root element is <{}>, not <Error>", root.name));
  }
  S3ErrorInfo info;
  auto text = [&root](std::string_view name) {
    const XmlElement* e = root.Child(name);
    return e == nullptr ? std::string() : e->text;
  };
  info.code = text("Code");
  info.message = text("Message");
  info.resource = text("Resource");
  info.request_id = text("RequestId");
  info.region = text("Region");
  info.endpoint = text("Endpoint");
  return info;
}

std::optional<ServiceError> DecodeS3Error(std::string_view body) {
  Result<S3ErrorInfo> info = ParseS3ErrorXml(body);
  if (!info.ok()) return std::nullopt;
  ServiceError said;
  said.code = info->code;
  said.message = info->message;
  if (!info->region.empty())
    said.hints += fmt::format(" (the bucket is in region {})", info->region);
  if (!info->endpoint.empty()) said.hints += fmt::format(" (use endpoint {})", info->endpoint);
  if (!info->request_id.empty()) said.hints += fmt::format(" (request id {})", info->request_id);
  said.status = S3CodeMeaning(info->code);
  return said;
}

StatusCode S3ErrorStatusCode(int http_status, std::string_view s3_code) {
  return S3CodeMeaning(s3_code).value_or(HttpStatusCode(http_status));
}

Status S3ErrorToStatus(int http_status, std::string_view body, std::string_view what) {
  const std::optional<ServiceError> said = DecodeS3Error(body);
  if (!said) {
    const std::string snippet = ErrorBodySnippet(body);
    return Status(HttpStatusCode(http_status), fmt::format("{}: HTTP {}{}{}", what, http_status,
                                                           snippet.empty() ? "" : ": ", snippet));
  }
  std::string message = fmt::format("{}: HTTP {} {}", what, http_status,
                                    said->code.empty() ? "(no error code)" : said->code);
  if (!said->message.empty()) message += ": " + said->message;
  return Status(HttpErrorCode(http_status, &*said), message + said->hints);
}

}  // namespace flashload
