// Small JSON text helpers shared by the header writer and the error messages.
#ifndef FLASHLOAD_FORMAT_JSON_TEXT_H_
#define FLASHLOAD_FORMAT_JSON_TEXT_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace flashload::format_internal {

// Appends `s` as a JSON string literal, escaped exactly as serde_json writes it (the reference's
// serializer): `"` and `\` escaped, \b \f \n \r \t, other control characters as \u00XX, the rest
// raw.
void AppendJsonString(std::string& out, std::string_view s);

// The offset of the first byte of `s` that is not part of valid UTF-8, or nullopt when all is
// valid.
std::optional<size_t> FirstInvalidUtf8(std::string_view s);

// A printable, truncated rendering of a name for messages.
std::string Quote(std::string_view s);

}  // namespace flashload::format_internal

#endif  // FLASHLOAD_FORMAT_JSON_TEXT_H_
