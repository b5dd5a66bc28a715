#include "io/s3_url.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "common/strings.h"
#include "common/url.h"
#include "io/sigv4.h"

namespace flashload {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool IsIpv4(std::string_view host) {
  int parts = 0;
  size_t digits = 0;
  for (char c : host) {
    if (c == '.') {
      if (digits == 0) return false;
      ++parts;
      digits = 0;
    } else if (c >= '0' && c <= '9') {
      if (++digits > 3) return false;
    } else {
      return false;
    }
  }
  return digits > 0 && parts == 3;
}

struct Endpoint {
  std::string scheme;     // "http" or "https"
  std::string host;       // lower case; IPv6 literals keep their brackets
  std::string port;       // "" when the scheme's default
  std::string base_path;  // "" or "/base" (no trailing '/')
  bool ip_literal = false;
};

Result<Endpoint> ParseEndpoint(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "S3 endpoint \"{}\": {} (expected http[s]://host[:port][/base-path])", url, why));
  };
  Endpoint e;
  const std::optional<UrlParts> parts = SplitUrl(url);
  if (!parts) {
    const std::optional<UriScheme> scheme = SchemeOf(url);
    if (!scheme || !scheme->has_slashes) return bad("no scheme");
    return bad(url.substr(scheme->name.size() + 3).starts_with('[')
                   ? "text after the IPv6 address"
                   : "the scheme is not http or https");
  }
  e.scheme = ToLower(parts->scheme);
  if (e.scheme != "http" && e.scheme != "https") return bad("the scheme is not http or https");
  if (parts->has_userinfo || parts->has_query || parts->has_fragment ||
      url.substr(parts->scheme.size()).find_first_of(" \t\r\n") != std::string_view::npos) {
    return bad("a query, fragment, user name or space");
  }
  if (!parts->path.empty()) {
    std::string_view base = parts->path;
    while (!base.empty() && base.back() == '/') base.remove_suffix(1);
    for (char c : base) {
      if (!IsLowerAlnum(c) && !std::isupper(static_cast<unsigned char>(c)) &&
          std::string_view("/-._~").find(c) == std::string_view::npos) {
        return bad("the base path holds a byte that would need percent-encoding");
      }
    }
    e.base_path = std::string(base);
  }
  const std::string_view host = parts->host;
  const std::string_view port = parts->port;
  if (!host.empty() && host.front() == '[') {
    if (host.back() != ']') return bad("an IPv6 address without ']'");
    e.ip_literal = true;
  }
  if (host.empty()) return bad("no host");
  e.host = ToLower(host);
  if (!e.ip_literal) {
    for (char c : e.host) {
      if (!IsLowerAlnum(c) && c != '.' && c != '-' && c != '_') return bad("a bad host name");
    }
    e.ip_literal = IsIpv4(e.host);
  }
  if (parts->has_port) {
    const std::optional<uint64_t> p = ParseDecimal(port);
    if (!p || port.size() > 5 || *p == 0 || *p > 65535) return bad("a bad port");
    const bool is_default = (e.scheme == "http" && *p == 80) || (e.scheme == "https" && *p == 443);
    if (!is_default) e.port = std::to_string(*p);
  }
  return e;
}

}  // namespace

Status ValidateS3BucketName(std::string_view bucket) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("\"{}\" is not a valid S3 bucket name: {}", bucket, why));
  };
  if (bucket.size() < 3 || bucket.size() > 63) return bad("it must be 3 to 63 characters long");
  for (char c : bucket) {
    if (!IsLowerAlnum(c) && c != '.' && c != '-') {
      return bad("only lower-case letters, digits, '.' and '-' are allowed");
    }
  }
  if (!IsLowerAlnum(bucket.front()) || !IsLowerAlnum(bucket.back())) {
    return bad("it must start and end with a letter or digit");
  }
  for (std::string_view pair : {"..", ".-", "-."}) {
    if (bucket.find(pair) != std::string_view::npos) {
      return bad(fmt::format("it must not contain \"{}\"", pair));
    }
  }
  if (IsIpv4(bucket)) return bad("it must not look like an IP address");
  for (std::string_view prefix : {"xn--", "sthree-"}) {
    if (bucket.substr(0, prefix.size()) == prefix) {
      return bad(fmt::format("the prefix \"{}\" is reserved", prefix));
    }
  }
  for (std::string_view suffix : {"-s3alias", "--ol-s3"}) {
    if (bucket.size() >= suffix.size() && bucket.substr(bucket.size() - suffix.size()) == suffix) {
      return bad(fmt::format("the suffix \"{}\" is reserved", suffix));
    }
  }
  return Status::Ok();
}

Result<S3Location> ParseS3Uri(std::string_view uri) {
  const std::optional<UrlParts> parts = SplitUrl(uri);
  if (!parts || !EqualsIgnoreCase(parts->scheme, "s3")) {
    return InvalidArgumentError(
        fmt::format("\"{}\" is not an S3 URI (expected s3://bucket/key)", uri));
  }
  // The key is literal: '?' and '#' after the bucket belong to it, and any before the first '/'
  // make the bucket name invalid.
  const std::string_view rest = parts->after_authority;
  const size_t slash = rest.find('/');
  S3Location loc;
  loc.bucket = std::string(parts->authority) + std::string(rest.substr(0, slash));
  if (slash != std::string_view::npos) loc.key = std::string(rest.substr(slash + 1));
  if (loc.bucket.empty()) {
    return InvalidArgumentError(
        fmt::format("\"{}\" names no bucket (expected s3://bucket/key)", uri));
  }
  if (Status s = ValidateS3BucketName(loc.bucket); !s.ok()) return s.WithContext(uri);
  if (loc.key.size() > kMaxS3KeyBytes) {
    return InvalidArgumentError(
        fmt::format("\"{}...\": the key is {} bytes, more than the {} S3 allows", uri.substr(0, 80),
                    loc.key.size(), kMaxS3KeyBytes));
  }
  return loc;
}

std::string S3Uri(const S3Location& location) {
  return fmt::format("s3://{}/{}", location.bucket, location.key);
}

std::string S3EncodeKey(std::string_view key) { return UriEncode(key, /*keep_slash=*/true); }

Result<S3RequestTarget> S3ObjectTarget(const S3Options& options, std::string_view bucket,
                                       std::string_view key) {
  FL_RETURN_IF_ERROR(ValidateS3BucketName(bucket));
  if (key.size() > kMaxS3KeyBytes) {
    return InvalidArgumentError(
        fmt::format("s3://{}/{}...: the key is {} bytes, more than the {} S3 allows", bucket,
                    key.substr(0, 80), key.size(), kMaxS3KeyBytes));
  }
  Endpoint e;
  if (options.endpoint.empty()) {
    if (options.region.empty() ||
        !std::all_of(options.region.begin(), options.region.end(),
                     [](char c) { return IsLowerAlnum(c) || c == '-'; })) {
      return InvalidArgumentError(fmt::format(
          "the AWS region \"{}\" is not a region name (lower-case letters, digits, '-')",
          options.region));
    }
    e.scheme = "https";
    const bool china = options.region.rfind("cn-", 0) == 0;
    e.host = fmt::format("s3.{}.amazonaws.com{}", options.region, china ? ".cn" : "");
  } else {
    FL_ASSIGN_OR_RETURN(e, ParseEndpoint(options.endpoint));
  }

  S3RequestTarget t;
  t.path_style = options.path_style || e.ip_literal || bucket.find('.') != std::string_view::npos;
  std::string host = e.host;
  if (t.path_style) {
    t.canonical_uri = fmt::format("{}/{}", e.base_path, bucket);
    if (!key.empty()) t.canonical_uri += "/" + S3EncodeKey(key);
  } else {
    host = fmt::format("{}.{}", bucket, e.host);
    t.canonical_uri = e.base_path + "/" + S3EncodeKey(key);
  }
  t.host = e.port.empty() ? host : fmt::format("{}:{}", host, e.port);
  t.url = fmt::format("{}://{}{}", e.scheme, t.host, t.canonical_uri);
  return t;
}

}  // namespace flashload
