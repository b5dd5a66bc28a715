#include "io/s3_upload.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>
#include <utility>

#include "common/strings.h"
#include "io/s3_list.h"
#include "io/s3_source.h"
#include "io/sigv4.h"
#include "io/xml.h"

namespace flashload {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

bool Cancelled(const S3UploadOptions& options) {
  return options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
}

std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

Result<uint64_t> ChoosePartBytes(uint64_t size, uint64_t requested) {
  if (requested < kS3MinPartBytes || requested > kS3MaxPartBytes) {
    return InvalidArgumentError(fmt::format(
        "part size {} bytes is outside S3's limits ({} to {} bytes); choose --part-mib between 5 "
        "and 5120",
        requested, kS3MinPartBytes, kS3MaxPartBytes));
  }
  if (size > kS3MaxParts * kS3MaxPartBytes) {
    return InvalidArgumentError(
        fmt::format("{} bytes do not fit in one S3 object ({} parts of at most {} bytes)", size,
                    kS3MaxParts, kS3MaxPartBytes));
  }
  const uint64_t needed = (size + kS3MaxParts - 1) / kS3MaxParts;
  if (needed <= requested) return requested;
  return std::min(kS3MaxPartBytes, (needed + kMiB - 1) / kMiB * kMiB);
}

std::string CompleteMultipartXml(const std::vector<std::string>& etags) {
  std::string xml = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i) {
    xml += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", i + 1,
                       XmlEscape(etags[i]));
  }
  xml += "</CompleteMultipartUpload>";
  return xml;
}

Result<std::string> ParseCreateMultipartUploadXml(std::string_view xml, int http_status,
                                                  std::string_view what) {
  FL_ASSIGN_OR_RETURN(XmlElement root, ParseS3Xml(xml, what));
  if (root.local_name() == "Error") return S3ErrorToStatus(http_status, xml, what);
  if (root.local_name() != "InitiateMultipartUploadResult") {
    return DataLossError(fmt::format(
        "{}: expected an InitiateMultipartUploadResult document, got <{}> (byte offset {}); is the "
        "endpoint an S3-compatible store?",
        what, root.name, root.offset));
  }
  const XmlElement* id = root.Child("UploadId");
  if (id == nullptr || id->text.empty()) {
    return DataLossError(fmt::format(
        "{}: the InitiateMultipartUploadResult holds no UploadId (byte offset {}); the store did "
        "not start the upload",
        what, root.offset));
  }
  return id->text;
}

Result<std::string> ParseCompleteMultipartUploadXml(std::string_view xml, std::string_view what) {
  FL_ASSIGN_OR_RETURN(XmlElement root, ParseS3Xml(xml, what));
  if (root.local_name() == "Error") {
    return S3ErrorToStatus(200, xml, fmt::format("{} (an error inside a 200 answer)", what));
  }
  if (root.local_name() != "CompleteMultipartUploadResult") {
    return DataLossError(fmt::format(
        "{}: expected a CompleteMultipartUploadResult document, got <{}> (byte offset {}); the "
        "object may not exist: upload it again",
        what, root.name, root.offset));
  }
  const XmlElement* etag = root.Child("ETag");
  return etag == nullptr ? std::string() : etag->text;
}

S3Uploader::S3Uploader(S3Config config, HttpOptions http)
    : config_(std::move(config)), http_(std::move(http)) {
  http_.decorator = nullptr;  // requests are signed here, with their payload hash
  http_.error_decoder = DecodeS3Error;
}

Result<S3Uploader> S3Uploader::ForRemote(const RemoteOpenOptions& remote) {
  FL_ASSIGN_OR_RETURN(S3Config config, S3ConfigFor(remote, ProcessEnvironment()));
  HttpOptions http = S3HttpOptions(config, remote);
  return S3Uploader(std::move(config), std::move(http));
}

Result<HttpResponse> S3Uploader::Send(std::string_view method, const S3RequestTarget& target,
                                      std::string_view query, std::span<const std::byte> body,
                                      std::string_view content_type, std::string_view what,
                                      std::string_view payload_hash) const {
  const std::string url = query.empty() ? target.url : fmt::format("{}?{}", target.url, query);
  std::vector<HttpHeader> headers;
  if (!content_type.empty()) headers.emplace_back("Content-Type", std::string(content_type));
  std::vector<std::string> secrets;
  if (!config_.options.anonymous && !config_.credentials.anonymous()) {
    SigV4Options sign;
    sign.region = config_.options.region;
    sign.service = "s3";
    FL_ASSIGN_OR_RETURN(SigV4Signature signature,
                        SignV4Url(method, url, headers, payload_hash, config_.credentials,
                                  std::chrono::system_clock::now(), sign));
    for (HttpHeader& h : signature.headers) {
      if (EqualsIgnoreCase(h.first, "host")) continue;
      if (h.second.size() >= 6) secrets.push_back(h.second);
      headers.push_back(std::move(h));
    }
  }
  FL_ASSIGN_OR_RETURN(HttpResponse response,
                      SendHttpRequest(method, url, headers, body, http_, what));
  if (response.code >= 200 && response.code < 300) return response;
  const std::optional<ServiceError> said = DecodeS3Error(response.body);
  const std::string server =
      ScrubSecrets(said ? DescribeServiceError(*said) : ErrorBodySnippet(response.body), secrets);
  const StatusCode code = HttpErrorCode(static_cast<int>(response.code), said ? &*said : nullptr);
  std::string hint;
  if (code == StatusCode::kFailedPrecondition) {
    hint =
        "; check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE), the region and the bucket "
        "policy (s3:PutObject)";
  } else if (code == StatusCode::kNotFound) {
    hint = "; check that the bucket exists and the endpoint is the right one";
  }
  return Status(code, fmt::format("{}: HTTP {}{}{}{}", what, response.code,
                                  server.empty() ? "" : ": ", server, hint));
}

Result<HttpResponse> S3Uploader::SendRetried(std::string_view method, const S3RequestTarget& target,
                                             std::string_view query,
                                             std::span<const std::byte> body,
                                             std::string_view content_type, std::string_view what,
                                             const RetryPolicy& policy, Counters& counters) const {
  // Hashed once, whatever the attempts; unsigned (anonymous) requests carry no hash.
  const bool anonymous = config_.options.anonymous || config_.credentials.anonymous();
  const std::string payload_hash = anonymous ? std::string() : Sha256Hex(body);
  bool first = true;
  return RetryCalls(policy, [&]() -> Result<HttpResponse> {
    counters.requests.fetch_add(1, std::memory_order_relaxed);
    if (!first) counters.retries.fetch_add(1, std::memory_order_relaxed);
    first = false;
    return Send(method, target, query, body, content_type, what, payload_hash);
  });
}

Result<S3UploadResult> S3Uploader::PutObject(const std::string& uri,
                                             std::span<const std::byte> data,
                                             const S3UploadOptions& options) const {
  FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(uri));
  if (loc.is_prefix()) {
    return InvalidArgumentError(
        fmt::format("{} names a bucket or a prefix, not an object; give the object's full key "
                    "(s3://bucket/path/name)",
                    uri));
  }
  if (Cancelled(options)) return CancelledError(fmt::format("{}: upload cancelled", uri));
  FL_ASSIGN_OR_RETURN(S3RequestTarget target, S3ObjectTarget(config_.options, loc.bucket, loc.key));
  Counters counters;
  FL_ASSIGN_OR_RETURN(
      HttpResponse response,
      SendRetried("PUT", target, "", data, options.content_type,
                  fmt::format("PutObject {} ({} bytes from byte offset 0)", uri, data.size()),
                  options.retry, counters));
  if (options.progress) options.progress(data.size());
  S3UploadResult result;
  result.etag = response.etag;
  result.requests = counters.requests;
  result.retries = counters.retries;
  return result;
}

Result<S3UploadResult> S3Uploader::Upload(const std::string& uri, uint64_t size,
                                          const PartReader& read,
                                          const S3UploadOptions& options) const {
  FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(uri));
  if (loc.is_prefix()) {
    return InvalidArgumentError(
        fmt::format("{} names a bucket or a prefix, not an object; give the object's full key "
                    "(s3://bucket/path/name)",
                    uri));
  }
  FL_ASSIGN_OR_RETURN(S3RequestTarget target, S3ObjectTarget(config_.options, loc.bucket, loc.key));
  const uint64_t single_max =
      options.single_put_max > 0 ? options.single_put_max : options.part_bytes;
  if (size <= single_max) {
    std::vector<std::byte> data(size);
    if (size > 0) {
      Status s = read(0, data);
      if (!s.ok()) return s.WithContext(fmt::format("{}: reading bytes 0-{}", uri, size - 1));
    }
    return PutObject(uri, data, options);
  }
  return UploadMultipart(uri, target, size, read, options);
}

Result<S3UploadResult> S3Uploader::UploadMultipart(const std::string& uri,
                                                   const S3RequestTarget& target, uint64_t size,
                                                   const PartReader& read,
                                                   const S3UploadOptions& options) const {
  FL_ASSIGN_OR_RETURN(const uint64_t part_bytes, ChoosePartBytes(size, options.part_bytes));
  const uint32_t parts = static_cast<uint32_t>((size + part_bytes - 1) / part_bytes);
  if (Cancelled(options)) return CancelledError(fmt::format("{}: upload cancelled", uri));
  Counters counters;

  const std::string create_what = fmt::format("CreateMultipartUpload {}", uri);
  FL_ASSIGN_OR_RETURN(HttpResponse created,
                      SendRetried("POST", target, "uploads", {}, options.content_type, create_what,
                                  options.retry, counters));
  FL_ASSIGN_OR_RETURN(
      const std::string upload_id,
      ParseCreateMultipartUploadXml(created.body, static_cast<int>(created.code), create_what));
  const std::string id_query =
      CanonicalQueryString(std::vector<QueryParam>{{"uploadId", upload_id}});

  // Aborts the upload; `cause` gets the abort's own failure appended when it fails too.
  auto abort_with = [&](const Status& cause) -> Status {
    const std::string what = fmt::format("AbortMultipartUpload {} (upload id {})", uri, upload_id);
    Result<HttpResponse> aborted =
        SendRetried("DELETE", target, id_query, {}, "", what, options.retry, counters);
    if (!aborted.ok()) {
      return Status(cause.code(),
                    fmt::format("{}; aborting the upload failed too ({}): abort upload id {} of {} "
                                "by hand (aws s3api abort-multipart-upload), or let a lifecycle "
                                "rule remove it",
                                cause.message(), aborted.status().message(), upload_id, uri));
    }
    return Status(
        cause.code(),
        fmt::format("{} (the multipart upload was aborted; nothing was stored)", cause.message()));
  };

  std::vector<std::string> etags(parts);
  std::atomic<uint32_t> next_part{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first_error;       // guarded by mu
  uint64_t done_bytes = 0;  // guarded by mu
  auto fail = [&](Status s) {
    std::lock_guard lock(mu);
    // A reader stopped by another part's failure reports kCancelled: keep the failure itself.
    if (first_error.ok() || first_error.code() == StatusCode::kCancelled) {
      first_error = std::move(s);
    }
    failed = true;
  };
  auto worker = [&] {
    std::vector<std::byte> buffer;
    for (;;) {
      if (failed.load() || Cancelled(options)) return;
      const uint32_t p = next_part.fetch_add(1);
      if (p >= parts) return;
      const uint64_t offset = uint64_t{p} * part_bytes;
      const uint64_t length = std::min(part_bytes, size - offset);
      const std::string what =
          fmt::format("UploadPart {} part {} of {} (bytes {}-{}, byte offset {})", uri, p + 1,
                      parts, offset, offset + length - 1, offset);
      buffer.resize(length);
      Status s = read(offset, buffer);
      if (!s.ok()) {
        fail(s.WithContext(fmt::format("{}: reading part {} (bytes {}-{})", uri, p + 1, offset,
                                       offset + length - 1)));
        return;
      }
      const std::string query = CanonicalQueryString(
          std::vector<QueryParam>{{"partNumber", std::to_string(p + 1)}, {"uploadId", upload_id}});
      Result<HttpResponse> sent = SendRetried(
          "PUT", target, query, buffer, "application/octet-stream", what, options.retry, counters);
      if (!sent.ok()) {
        fail(sent.status());
        return;
      }
      if (sent->etag.empty()) {
        fail(DataLossError(fmt::format(
            "{}: the store answered without an ETag, which CompleteMultipartUpload needs; is the "
            "endpoint S3-compatible?",
            what)));
        return;
      }
      etags[p] = sent->etag;
      std::lock_guard lock(mu);
      done_bytes += length;
      if (options.progress) options.progress(done_bytes);
    }
  };
  const uint32_t threads = std::clamp<uint32_t>(options.parts_in_flight, 1, parts);
  {
    std::vector<std::jthread> pool;
    pool.reserve(threads);
    for (uint32_t i = 0; i < threads; ++i) pool.emplace_back(worker);
  }
  if (failed.load()) return abort_with(first_error);
  if (Cancelled(options)) {
    return abort_with(CancelledError(
        fmt::format("{}: upload cancelled after {} of {} bytes", uri, done_bytes, size)));
  }

  const std::string complete_what =
      fmt::format("CompleteMultipartUpload {} ({} parts, upload id {})", uri, parts, upload_id);
  const std::string xml = CompleteMultipartXml(etags);
  const std::string xml_hash = Sha256Hex(xml);
  bool first_complete = true;
  Result<std::string> etag = RetryCalls(options.retry, [&]() -> Result<std::string> {
    counters.requests.fetch_add(1);
    if (!std::exchange(first_complete, false)) counters.retries.fetch_add(1);
    FL_ASSIGN_OR_RETURN(HttpResponse completed, Send("POST", target, id_query, AsBytes(xml),
                                                     "application/xml", complete_what, xml_hash));
    return ParseCompleteMultipartUploadXml(completed.body, complete_what);
  });
  if (!etag.ok()) return abort_with(etag.status());

  S3UploadResult result;
  result.etag = *etag;
  result.parts = parts;
  result.part_bytes = part_bytes;
  result.requests = counters.requests;
  result.retries = counters.retries;
  return result;
}

}  // namespace flashload
