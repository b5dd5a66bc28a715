// Small JSON text helpers shared by the header writer and the error messages.
//
// Thread-safety: pure functions; the views passed in are only read during the call.
#ifndef FLASHLOAD_FORMAT_JSON_TEXT_H_
#define FLASHLOAD_FORMAT_JSON_TEXT_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace flashload::format_internal {

// Appends `s` as a JSON string literal, escaped exactly as serde_json (the reference's serializer)
// writes it: `"` and `\` escaped, \b \f \n \r \t, other control characters as \u00XX, the rest
// raw (no UTF-8 check).
void AppendJsonString(std::string& out, std::string_view s);

// Offset of the first byte of `s` that is not part of valid UTF-8; nullopt when all of it is valid.
std::optional<size_t> FirstInvalidUtf8(std::string_view s);

// A printable rendering of a name for messages: in single quotes, control bytes as \xNN, cut
// after 200 bytes with "...".
std::string Quote(std::string_view s);

}  // namespace flashload::format_internal

#endif  // FLASHLOAD_FORMAT_JSON_TEXT_H_
