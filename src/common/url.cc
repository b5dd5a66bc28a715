#include "common/url.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "common/strings.h"

namespace flashload {
namespace {

constexpr std::string_view kRedacted = "<redacted>";

bool ValidScheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
}

std::string_view DefaultPort(std::string_view scheme_lower) {
  if (scheme_lower == "http") return "80";
  if (scheme_lower == "https") return "443";
  return "";
}

}  // namespace

std::optional<UriScheme> SchemeOf(std::string_view uri) {
  const size_t colon = uri.find(':');
  // At least two characters: "C:x" and ":x" are paths.
  if (colon == std::string_view::npos || colon < 2 || !ValidScheme(uri.substr(0, colon))) {
    return std::nullopt;
  }
  return UriScheme{ToLower(uri.substr(0, colon)), uri.substr(colon).starts_with("://")};
}

std::optional<UrlParts> SplitUrl(std::string_view url) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos || !ValidScheme(url.substr(0, sep))) return std::nullopt;
  UrlParts p;
  p.scheme = url.substr(0, sep);
  const size_t authority_begin = sep + 3;
  size_t authority_end = url.find_first_of("/?#", authority_begin);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  std::string_view authority = url.substr(authority_begin, authority_end - authority_begin);
  p.authority = authority;
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    p.userinfo = authority.substr(0, at);
    p.has_userinfo = true;
    authority.remove_prefix(at + 1);
  }
  // host, "[v6]" or "[v6]:port", or "host:port".
  size_t host_end = authority.size();
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    host_end = close == std::string_view::npos ? authority.size() : close + 1;
    if (host_end < authority.size() && authority[host_end] != ':') return std::nullopt;
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host_end = colon;
  }
  p.host = authority.substr(0, host_end);
  if (host_end < authority.size()) {
    p.port = authority.substr(host_end + 1);
    p.has_port = true;
  }
  std::string_view rest = url.substr(authority_end);
  p.after_authority = rest;
  const size_t hash = rest.find('#');
  if (hash != std::string_view::npos) {
    p.fragment = rest.substr(hash + 1);
    p.has_fragment = true;
    rest = rest.substr(0, hash);
  }
  const size_t q = rest.find('?');
  if (q != std::string_view::npos) {
    p.query = rest.substr(q + 1);
    p.has_query = true;
    rest = rest.substr(0, q);
  }
  p.path = rest;
  return p;
}

bool IsCredentialQueryParameter(std::string_view name) {
  const std::string n =
      ToLower(PercentDecode(name, /*plus_is_space=*/false, BadEscape::kKeep).value_or(""));
  static constexpr std::array<std::string_view, 14> kExact = {
      "sig",    "x-amz-credential", "x-goog-credential",
      "key",    "apikey",           "api_key",
      "auth",   "authorization",    "code",
      "policy", "key-pair-id",      "pass",
      "pwd",    "session"};
  if (std::find(kExact.begin(), kExact.end(), n) != kExact.end()) return true;
  for (std::string_view part : {"token", "secret", "signature", "password", "credential"}) {
    if (n.find(part) != std::string::npos) return true;
  }
  return false;
}

std::string RedactUrl(std::string_view url) {
  // An archive member, "tar:<archive URI>!/<member>": the archive's URI may be a presigned one.
  if (url.size() > 4 && EqualsIgnoreCase(url.substr(0, 4), "tar:")) {
    const size_t bang = url.find("!/", 4);
    const std::string_view inner =
        url.substr(4, bang == std::string_view::npos ? url.npos : bang - 4);
    return std::string(url.substr(0, 4)) + RedactUrl(inner) +
           std::string(bang == std::string_view::npos ? std::string_view() : url.substr(bang));
  }
  const std::optional<UrlParts> p = SplitUrl(url);
  if (!p) return std::string(url);
  std::string out(p->scheme);
  out += "://";
  out += p->host;
  if (p->has_port) {
    out += ':';
    out += p->port;
  }
  // s3:// keys are literal: '?' and '#' belong to the key, which holds no credential.
  if (EqualsIgnoreCase(p->scheme, "s3")) return out + std::string(p->after_authority);
  out += p->path;
  if (p->has_query) {
    out += '?';
    std::string_view q = p->query;
    bool first = true;
    while (true) {
      const size_t amp = q.find('&');
      const std::string_view param = q.substr(0, amp);
      if (!first) out += '&';
      first = false;
      const size_t eq = param.find('=');
      const std::string_view name = param.substr(0, eq);
      if (IsCredentialQueryParameter(name)) {
        out += name;
        out += '=';
        out += kRedacted;
      } else {
        out += param;
      }
      if (amp == std::string_view::npos) break;
      q.remove_prefix(amp + 1);
    }
  }
  // A fragment is never sent, and may hold a token (OAuth's #access_token=): never shown.
  return out;
}

std::string RedactUrlsIn(std::string_view text) {
  auto is_scheme_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  };
  auto ends_url = [](char c) {
    // Not '<' or '>': "<redacted>" stays inside the URL it replaced a value of.
    return std::isspace(static_cast<unsigned char>(c)) || c == '"' || c == '\'' || c == '`';
  };
  constexpr std::string_view kTrailing = ".,;:!?)]}";
  std::string out;
  size_t done = 0;  // text[0, done) is in `out`
  size_t pos = 0;
  for (size_t sep; (sep = text.find("://", pos)) != std::string_view::npos;) {
    pos = sep + 3;
    size_t begin = sep;
    while (begin > done && is_scheme_char(text[begin - 1])) --begin;
    while (begin < sep && !std::isalpha(static_cast<unsigned char>(text[begin]))) ++begin;
    if (begin == sep) continue;
    size_t end = sep + 3;
    while (end < text.size() && !ends_url(text[end])) ++end;
    while (end > sep + 3 && kTrailing.find(text[end - 1]) != std::string_view::npos) --end;
    out.append(text.substr(done, begin - done));
    out += RedactUrl(text.substr(begin, end - begin));
    done = end;
    pos = std::max(pos, end);
  }
  out.append(text.substr(done));
  return out;
}

bool SameOrigin(std::string_view a, std::string_view b) {
  const std::optional<UrlParts> x = SplitUrl(a);
  const std::optional<UrlParts> y = SplitUrl(b);
  if (!x || !y) return false;
  const std::string xs = ToLower(x->scheme), ys = ToLower(y->scheme);
  if (xs != ys || !EqualsIgnoreCase(x->host, y->host)) return false;
  const std::string_view xp = x->port.empty() ? DefaultPort(xs) : x->port;
  const std::string_view yp = y->port.empty() ? DefaultPort(ys) : y->port;
  return xp == yp;
}

}  // namespace flashload
