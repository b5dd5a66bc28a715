#include "common/url.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace flashload {
namespace {

constexpr std::string_view kRedacted = "<redacted>";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoded ('+' kept: a name is compared, never shown).
std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

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

std::optional<UrlParts> SplitUrl(std::string_view url) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos || !ValidScheme(url.substr(0, sep))) return std::nullopt;
  UrlParts p;
  p.scheme = url.substr(0, sep);
  const size_t authority_begin = sep + 3;
  size_t authority_end = url.find_first_of("/?#", authority_begin);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  std::string_view authority = url.substr(authority_begin, authority_end - authority_begin);
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
  const std::string n = Lower(PercentDecode(name));
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
  if (Lower(p->scheme) == "s3") return out + std::string(p->after_authority);
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
  const std::string xs = Lower(x->scheme), ys = Lower(y->scheme);
  if (xs != ys || Lower(x->host) != Lower(y->host)) return false;
  const std::string_view xp = x->port.empty() ? DefaultPort(xs) : x->port;
  const std::string_view yp = y->port.empty() ? DefaultPort(ys) : y->port;
  return xp == yp;
}

}  // namespace flashload
