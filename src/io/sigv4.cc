#include "io/sigv4.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>
#include <optional>

#include "common/strings.h"
#include "common/url.h"

namespace flashload {
namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr char kHexUpper[] = "0123456789ABCDEF";
constexpr char kHexLower[] = "0123456789abcdef";

using Digest = std::array<unsigned char, 32>;

bool IsUnreserved(unsigned char c) {
  return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~';
}

std::span<const unsigned char> AsUnsigned(std::string_view s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

std::string Hex(std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(kHexLower[b >> 4]);
    out.push_back(kHexLower[b & 0xf]);
  }
  return out;
}

Digest HmacSha256(std::span<const unsigned char> key, std::string_view data) {
  Digest out{};
  unsigned int len = 0;
  // HMAC-SHA256 over in-memory buffers cannot fail short of memory exhaustion; a failure leaves a
  // zero digest, which produces a signature the server rejects rather than a wrong success.
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  return out;
}

Status CheckCanonicalUri(std::string_view uri) {
  if (uri.empty() || uri.front() != '/') {
    return InvalidArgumentError(fmt::format(
        "SigV4: the canonical URI must start with '/' (got {} bytes not starting so)", uri.size()));
  }
  for (size_t i = 0; i < uri.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(uri[i]);
    if (IsUnreserved(c) || c == '/') continue;
    if (c == '%' && i + 2 < uri.size() &&
        std::string_view(kHexUpper).find(uri[i + 1]) != std::string_view::npos &&
        std::string_view(kHexUpper).find(uri[i + 2]) != std::string_view::npos) {
      i += 2;
      continue;
    }
    return InvalidArgumentError(fmt::format(
        "SigV4: the canonical URI \"{}\" is not encoded at byte {} (use UriEncodePath(): "
        "unreserved bytes, '/', and %XX with upper-case hex only)",
        uri, i));
  }
  return Status::Ok();
}

Status CheckPayloadHash(std::string_view hash) {
  if (hash == kUnsignedPayload) return Status::Ok();
  const bool hex = hash.size() == 64 && std::all_of(hash.begin(), hash.end(), [](char c) {
                     return std::string_view(kHexLower).find(c) != std::string_view::npos;
                   });
  if (!hex) {
    return InvalidArgumentError(
        "SigV4: the payload hash must be 64 lower-case hex digits (SHA-256) or UNSIGNED-PAYLOAD");
  }
  return Status::Ok();
}

Status CheckCredentials(const AwsCredentials& c) {
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return InvalidArgumentError(
        "SigV4: signing needs an access key id and a secret access key (anonymous access sends "
        "the request unsigned)");
  }
  for (unsigned char ch : c.access_key_id) {
    if (!std::isalnum(ch) && ch != '_' && ch != '-' && ch != '.') {
      return InvalidArgumentError(
          "SigV4: the access key id holds a character outside letters, digits, '_', '-', '.'");
    }
  }
  for (char ch : c.session_token) {
    if (ch == '\r' || ch == '\n' || ch == '\0') {
      return InvalidArgumentError("SigV4: the session token holds a line break or NUL byte");
    }
  }
  return Status::Ok();
}

}  // namespace

std::string FormatAmzDate(std::chrono::system_clock::time_point time) {
  const std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return std::string(buf, n);
}

std::string UriEncode(std::string_view raw, bool keep_slash) {
  std::string out;
  out.reserve(raw.size());
  for (char ch : raw) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHexUpper[c >> 4]);
      out.push_back(kHexUpper[c & 0xf]);
    }
  }
  return out;
}

std::string UriEncodePath(std::string_view raw_path) {
  std::string out = UriEncode(raw_path, /*keep_slash=*/true);
  if (out.empty() || out.front() != '/') out.insert(out.begin(), '/');
  return out;
}

std::string CanonicalQueryString(std::span<const QueryParam> query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) {
    encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
  }
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out.push_back('&');
    out += name;
    out.push_back('=');
    out += value;
  }
  return out;
}

std::string Sha256Hex(std::span<const std::byte> data) {
  Digest d{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), d.data(), &len, EVP_sha256(), nullptr);
  return Hex(d);
}

std::string Sha256Hex(std::string_view data) {
  return Sha256Hex(std::as_bytes(std::span<const char>(data.data(), data.size())));
}

Result<SigV4Signature> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                              std::chrono::system_clock::time_point time,
                              const SigV4Options& options) {
  FL_RETURN_IF_ERROR(CheckCredentials(credentials));
  FL_RETURN_IF_ERROR(CheckCanonicalUri(request.canonical_uri));
  FL_RETURN_IF_ERROR(CheckPayloadHash(request.payload_hash));
  for (const std::string* part : {&options.region, &options.service}) {
    const bool ok = !part->empty() && std::all_of(part->begin(), part->end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
    });
    if (!ok) {
      return InvalidArgumentError(
          fmt::format("SigV4: the {} \"{}\" must be non-empty letters, digits, '-' or '_'",
                      part == &options.region ? "region" : "service", *part));
    }
  }
  if (request.method.empty() || !std::all_of(request.method.begin(), request.method.end(),
                                             [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return InvalidArgumentError(
        fmt::format("SigV4: the method \"{}\" is not an upper-case HTTP method", request.method));
  }

  const std::string amz_date = FormatAmzDate(time);
  const std::string date = amz_date.substr(0, 8);

  // The headers the signer adds, then the caller's; names lower-cased, values trimmed.
  std::vector<HttpHeader> added;
  added.emplace_back("x-amz-date", amz_date);
  if (options.add_content_sha256_header) {
    added.emplace_back("x-amz-content-sha256", request.payload_hash);
  }
  if (!credentials.session_token.empty()) {
    added.emplace_back("x-amz-security-token", credentials.session_token);
  }
  std::vector<HttpHeader> canonical = added;
  bool has_host = false;
  for (const auto& [name, value] : request.headers) {
    if (!IsHttpToken(name)) {
      return InvalidArgumentError(
          fmt::format("SigV4: \"{}\" is not a valid HTTP header name", name));
    }
    if (value.find_first_of("\r\n", 0) != std::string::npos ||
        value.find('\0') != std::string::npos) {
      return InvalidArgumentError(
          fmt::format("SigV4: the value of header \"{}\" holds a line break or NUL byte", name));
    }
    std::string lower = ToLower(name);
    if (lower == "authorization" ||
        std::any_of(added.begin(), added.end(),
                    [&](const HttpHeader& h) { return h.first == lower; })) {
      return InvalidArgumentError(fmt::format(
          "SigV4: header \"{}\" is set by the signer and must not be given in the request", name));
    }
    has_host |= lower == "host";
    canonical.emplace_back(std::move(lower), CollapseSpaces(value));
  }
  if (!has_host) return InvalidArgumentError("SigV4: the request has no Host header");
  std::stable_sort(canonical.begin(), canonical.end(),
                   [](const HttpHeader& a, const HttpHeader& b) { return a.first < b.first; });

  SigV4Signature sig;
  sig.canonical_query = CanonicalQueryString(request.query);
  std::string canonical_headers;
  for (size_t i = 0; i < canonical.size(); ++i) {
    const bool repeat = i > 0 && canonical[i].first == canonical[i - 1].first;
    if (repeat) {
      canonical_headers.push_back(',');
    } else {
      if (i > 0) canonical_headers.push_back('\n');
      if (!sig.signed_headers.empty()) sig.signed_headers.push_back(';');
      sig.signed_headers += canonical[i].first;
      canonical_headers += canonical[i].first;
      canonical_headers.push_back(':');
    }
    canonical_headers += canonical[i].second;
  }
  canonical_headers.push_back('\n');

  sig.canonical_request =
      fmt::format("{}\n{}\n{}\n{}\n{}\n{}", request.method, request.canonical_uri,
                  sig.canonical_query, canonical_headers, sig.signed_headers, request.payload_hash);
  const std::string scope =
      fmt::format("{}/{}/{}/aws4_request", date, options.region, options.service);
  sig.string_to_sign =
      fmt::format("{}\n{}\n{}\n{}", kAlgorithm, amz_date, scope, Sha256Hex(sig.canonical_request));

  std::string secret = "AWS4" + credentials.secret_access_key;
  Digest key = HmacSha256(AsUnsigned(secret), date);
  key = HmacSha256(key, options.region);
  key = HmacSha256(key, options.service);
  key = HmacSha256(key, "aws4_request");
  const std::string signature = Hex(HmacSha256(key, sig.string_to_sign));
  OPENSSL_cleanse(key.data(), key.size());
  OPENSSL_cleanse(secret.data(), secret.size());

  sig.headers.emplace_back(
      "Authorization",
      fmt::format("{} Credential={}/{}, SignedHeaders={}, Signature={}", kAlgorithm,
                  credentials.access_key_id, scope, sig.signed_headers, signature));
  for (auto& h : added) sig.headers.push_back(std::move(h));
  return sig;
}

Result<SigV4Signature> SignV4Url(std::string_view method, std::string_view url,
                                 std::span<const HttpHeader> headers, std::string_view payload_hash,
                                 const AwsCredentials& credentials,
                                 std::chrono::system_clock::time_point time,
                                 const SigV4Options& options) {
  auto bad = [&](std::string_view why) {
    // The query may hold a presigned signature or token: only the part before it is shown.
    return InvalidArgumentError(
        fmt::format("SigV4: cannot sign URL \"{}\": {}", url.substr(0, url.find('?')), why));
  };
  const std::optional<UrlParts> parts = SplitUrl(url);
  if (!parts) return bad("no scheme");
  const std::string scheme = ToLower(parts->scheme);
  if (scheme != "http" && scheme != "https") return bad("the scheme is not http or https");
  if (parts->authority.empty() || parts->has_userinfo) {
    return bad("no host, or a user name in the URL");
  }
  // Drop the scheme's default port, as libcurl does in the Host header it sends.
  const std::string_view authority =
      parts->has_port && parts->port == (scheme == "https" ? "443" : "80") ? parts->host
                                                                           : parts->authority;
  std::string_view path = parts->path;
  std::string_view query = parts->query;

  SigV4Request request;
  request.method = std::string(method);
  request.canonical_uri = path.empty() ? "/" : std::string(path);
  request.payload_hash = std::string(payload_hash);
  while (!query.empty()) {
    const size_t amp = std::min(query.find('&'), query.size());
    const std::string_view pair = query.substr(0, amp);
    query.remove_prefix(std::min(amp + 1, query.size()));
    if (pair.empty()) continue;
    const size_t eq = std::min(pair.find('='), pair.size());
    std::optional<std::string> name = PercentDecode(pair.substr(0, eq), /*plus_is_space=*/false);
    std::optional<std::string> value =
        PercentDecode(pair.substr(std::min(eq + 1, pair.size())), /*plus_is_space=*/false);
    if (!name || !value) return bad("a bad %-escape in the query");
    request.query.emplace_back(*std::move(name), *std::move(value));
  }
  bool has_host = false;
  for (const HttpHeader& h : headers) has_host |= ToLower(h.first) == "host";
  if (!has_host) request.headers.emplace_back("Host", std::string(authority));
  request.headers.insert(request.headers.end(), headers.begin(), headers.end());
  return SignV4(request, credentials, time, options);
}

std::string RedactAuthorization(std::string_view header_value) {
  constexpr std::string_view kRedacted = "<redacted>";
  // Accepts exactly "AWS4-HMAC-SHA256 Credential=C, SignedHeaders=H, Signature=S" where C and H
  // hold no ',' or space and S is hex; anything else might hold a secret and is hidden whole.
  std::string_view v = header_value;
  auto take = [&v](std::string_view prefix) {
    if (v.substr(0, prefix.size()) != prefix) return false;
    v.remove_prefix(prefix.size());
    return true;
  };
  auto field = [&v]() {
    const size_t end = std::min(v.find(','), v.size());
    std::string_view f = v.substr(0, end);
    v.remove_prefix(end);
    return f;
  };
  if (!take(kAlgorithm) || !take(" Credential=")) return std::string(kRedacted);
  const std::string_view credential = field();
  if (!take(", SignedHeaders=")) return std::string(kRedacted);
  const std::string_view signed_headers = field();
  if (!take(", Signature=")) return std::string(kRedacted);
  const bool clean = credential.find(' ') == std::string_view::npos &&
                     signed_headers.find(' ') == std::string_view::npos &&
                     std::all_of(v.begin(), v.end(), [](char c) {
                       return std::string_view(kHexLower).find(c) != std::string_view::npos;
                     });
  if (!clean) return std::string(kRedacted);
  return fmt::format("{} Credential={}, SignedHeaders={}, Signature={}", kAlgorithm, credential,
                     signed_headers, kRedacted);
}

std::string RedactHeaderValue(std::string_view name, std::string_view value) {
  const std::string lower = ToLower(name);
  if (lower == "authorization") return RedactAuthorization(value);
  if (lower == "x-amz-security-token") return "<redacted>";
  return std::string(value);
}

}  // namespace flashload
