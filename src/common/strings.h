// Small string helpers shared by every layer: trimming, case-insensitive comparison, decimal and
// percent-decoding, and what a message may quote of untrusted text.
//
// Thread-safety: pure functions. Views returned point into the argument, which must outlive them.
#ifndef FLASHLOAD_COMMON_STRINGS_H_
#define FLASHLOAD_COMMON_STRINGS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace flashload {

// `s` without leading and trailing white space (space, tab, CR, LF, VT, FF).
std::string_view Trim(std::string_view s);

// `s` trimmed, with every run of spaces and tabs inside it folded into one space (the canonical
// form of an HTTP header value in SigV4, and of an INI section name).
std::string CollapseSpaces(std::string_view s);

// ASCII lower case; other bytes unchanged.
std::string ToLower(std::string_view s);

// Whether `a` and `b` are equal ignoring ASCII case.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// The value of a non-empty string of decimal digits, or std::nullopt (a sign, a space, another
// byte, or a value above UINT64_MAX).
std::optional<uint64_t> ParseDecimal(std::string_view s);

// The value of a hex digit (either case), or -1.
int HexDigitValue(char c);

// What to do with a '%' that is not followed by two hex digits.
enum class BadEscape {
  kKeep,  // copy it as it is (for text that is compared, never trusted)
  kFail,  // the whole decode fails
};

// `s` with every %XX decoded, and '+' as a space when `plus_is_space` (form encoding, as S3's
// EncodingType=url). std::nullopt only with BadEscape::kFail and a bad escape.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space,
                                         BadEscape bad = BadEscape::kFail);

// Whether `s` is a non-empty HTTP token (RFC 9110: letters, digits and !#$%&'*+-.^_`|~), the form
// of a header name.
bool IsHttpToken(std::string_view s);

// At most `limit` bytes of untrusted text as a message may quote them: each byte outside
// printable ASCII becomes a space, and trailing spaces are dropped.
std::string PrintableSnippet(std::string_view s, size_t limit);

}  // namespace flashload

#endif  // FLASHLOAD_COMMON_STRINGS_H_
