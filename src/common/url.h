// URLs: the one splitter of "scheme://userinfo@host:port/path?query#fragment" (RFC 3986, generic
// syntax; no percent-decoding, no normalization) and of the scheme of any URI, what a message may show of a URL (RedactUrl(),
// declared in flashload/source.h, and RedactUrlsIn() for a whole text), and whether two URLs share
// an origin (which request headers may follow a redirect).
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_COMMON_URL_H_
#define FLASHLOAD_COMMON_URL_H_

#include <optional>
#include <string>
#include <string_view>

#include "flashload/source.h"

namespace flashload {

// The parts of a URL, as views into the string split (which must outlive them).
struct UrlParts {
  std::string_view scheme;     // as written ("HTTP" stays "HTTP")
  std::string_view authority;  // between "://" and the path, query or fragment, as written
  std::string_view userinfo;   // before the last '@' of the authority; empty when none
  bool has_userinfo = false;
  std::string_view host;   // "[::1]" keeps its brackets
  std::string_view port;   // after the host's ':' (not checked to be digits), empty when none
  bool has_port = false;   // a ':' follows the host (maybe with an empty port)
  std::string_view path;   // from the first '/' after the authority, up to '?' or '#'
  std::string_view query;  // after '?', up to '#'
  bool has_query = false;
  std::string_view fragment;  // after '#'
  bool has_fragment = false;
  std::string_view after_authority;  // path, query and fragment as written
};

// The scheme of a URI "scheme:rest" or "scheme://rest".
struct UriScheme {
  std::string name;          // lower case, without ':'
  bool has_slashes = false;  // "scheme://"
};

// The scheme of `uri` when it starts with an RFC 3986 scheme (a letter, then letters, digits, '+',
// '-', '.') of at least two characters and ':'; std::nullopt otherwise (a plain path, "C:x").
std::optional<UriScheme> SchemeOf(std::string_view uri);

// Splits "scheme://authority[path][?query][#fragment]". std::nullopt when `url` has no
// "scheme://" prefix (a local path, "tar:...", a relative reference), or when text other than
// ":port" follows an IPv6 literal's ']'. An IPv6 literal without its ']' is returned as the host
// ("[::1"), for the caller to refuse.
std::optional<UrlParts> SplitUrl(std::string_view url);

// Whether a query parameter named `name` (compared without case, after %XX decoding) carries a
// credential: X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, sig, token, and any name
// holding "token", "secret", "signature", "password" or "credential" (and the other names listed
// in url.cc).
bool IsCredentialQueryParameter(std::string_view name);

// `text` with every "scheme://..." URL in it replaced by RedactUrl() of it. A URL runs from its
// scheme to the first whitespace, quote or '`', less trailing ".,;:!?)]}" (the
// punctuation of the sentence around it). Status messages pass through it (status.cc), so no
// message carries a URL's credentials whichever code built it.
std::string RedactUrlsIn(std::string_view text);

// Whether `a` and `b` have the same scheme, host (both without case) and port (80 for http and
// 443 for https when none is written). False when either is not a "scheme://" URL.
bool SameOrigin(std::string_view a, std::string_view b);

}  // namespace flashload

#endif  // FLASHLOAD_COMMON_URL_H_
