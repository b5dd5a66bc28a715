#include "io/http_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "common/strings.h"
#include "common/url.h"

namespace flashload {
namespace {

struct Exchange {
  HttpResponse response;
  size_t body_limit = 0;
};

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t n = size * nmemb;
  std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    x->response.etag.clear();  // a new response (after a 100 Continue): start over
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  if (EqualsIgnoreCase(Trim(line.substr(0, colon)), "ETag")) {
    x->response.etag = std::string(Trim(line.substr(colon + 1)));
  }
  return n;
}

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t n = size * nmemb;
  const size_t room = x->body_limit - std::min(x->body_limit, x->response.body.size());
  if (n > room) x->response.body_cut = true;
  x->response.body.append(data, std::min(n, room));
  return n;
}

struct EasyDeleter {
  void operator()(CURL* e) const { curl_easy_cleanup(e); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

Status CurlGlobalInit() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) {
    return InternalError(fmt::format("curl_global_init failed: {}", curl_easy_strerror(rc)));
  }
  return Status();
}

void ApplyCurlTransport(CURL* e, const HttpOptions& options) {
  // Object keys may hold ".", ".." and "//" segments, which S3 keeps: send the path as given.
  curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  // Redirects are the caller's: libcurl would send every custom header to whatever host a
  // Location names.
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options.connect_timeout.count()));
  if (options.low_speed_bytes_per_second > 0 && options.low_speed_time.count() > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                     static_cast<long>(options.low_speed_bytes_per_second));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.low_speed_time.count()));
  }
  if (options.request_timeout.count() > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(options.request_timeout.count()));
  }
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, options.verify_tls ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
  if (!options.ca_bundle.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, options.ca_bundle.c_str());
}

Status CurlTransportError(CURLcode rc, const char* errbuf, std::string_view where, uint64_t bytes,
                          const HttpOptions& options) {
  const std::string detail = errbuf != nullptr && errbuf[0] != '\0'
                                 ? std::string(errbuf)
                                 : std::string(curl_easy_strerror(rc));
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return UnavailableError(fmt::format(
          "{}: timed out after {} bytes ({}; connect timeout {} ms, request timeout {} ms, "
          "low-speed abort below {} B/s for {} s)",
          where, bytes, PrintableSnippet(detail, 200), options.connect_timeout.count(),
          options.request_timeout.count(), options.low_speed_bytes_per_second,
          options.low_speed_time.count()));
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return FailedPreconditionError(fmt::format(
          "{}: TLS verification failed: {}; give a CA bundle (ca_bundle) that trusts this server",
          where, PrintableSnippet(detail, 200)));
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return InvalidArgumentError(fmt::format("{}: {}", where, PrintableSnippet(detail, 200)));
    case CURLE_OUT_OF_MEMORY:
      return ResourceExhaustedError(fmt::format("{}: {}", where, PrintableSnippet(detail, 200)));
    default:
      return UnavailableError(
          fmt::format("{}: {} after {} bytes", where, PrintableSnippet(detail, 200), bytes));
  }
}

std::string ScrubSecrets(std::string msg, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (size_t p = msg.find(secret); p != std::string::npos; p = msg.find(secret, p)) {
      msg.replace(p, secret.size(), "<redacted>");
    }
  }
  return msg;
}

Result<HttpResponse> SendHttpRequest(
    std::string_view method, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    std::span<const std::byte> body, const HttpOptions& options, std::string_view what,
    size_t body_limit) {
  FL_RETURN_IF_ERROR(CheckRequestHeaders(headers, url));
  FL_RETURN_IF_ERROR(CurlGlobalInit());
  const std::string where = fmt::format("{}: {} {}", RedactUrl(url), method, what);
  std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
  if (easy == nullptr) return InternalError(fmt::format("{}: curl_easy_init failed", where));
  std::unique_ptr<curl_slist, SlistDeleter> list;
  for (const auto& [name, value] : headers) {
    const std::string line =
        value.empty() ? fmt::format("{};", name) : fmt::format("{}: {}", name, value);
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next == nullptr) {
      return ResourceExhaustedError(fmt::format("{}: out of memory building headers", where));
    }
    (void)list.release();
    list.reset(next);
  }
  // Large bodies are sent at once: no "Expect: 100-continue" round trip. A body sent without a
  // Content-Type goes without one, not as the form data libcurl would label it (which some
  // servers then parse as a form).
  bool has_type = false;
  for (const auto& h : headers) has_type = has_type || EqualsIgnoreCase(h.first, "Content-Type");
  for (const char* line : {"Expect:", has_type ? "" : "Content-Type:"}) {
    if (line[0] == '\0') continue;
    curl_slist* next = curl_slist_append(list.get(), line);
    if (next == nullptr) {
      return ResourceExhaustedError(fmt::format("{}: out of memory building headers", where));
    }
    (void)list.release();
    list.reset(next);
  }

  Exchange x;
  x.body_limit = body_limit;
  char errbuf[CURL_ERROR_SIZE] = {};
  CURL* e = easy.get();
  const std::string method_text(method);
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  ApplyCurlTransport(e, options);
  if (method == "GET") {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (method == "HEAD") {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method_text.c_str());
    if (method != "DELETE" || !body.empty()) {
      static const char kEmpty[] = "";
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                       body.empty() ? kEmpty : reinterpret_cast<const char*>(body.data()));
    }
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(e);
  if (rc != CURLE_OK) {
    curl_off_t sent = 0;
    curl_easy_getinfo(e, CURLINFO_SIZE_UPLOAD_T, &sent);
    return CurlTransportError(rc, errbuf, where,
                              static_cast<uint64_t>(std::max<curl_off_t>(sent, 0)), options);
  }
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x.response.code);
  return std::move(x.response);
}

}  // namespace flashload
