// The one XML reader: a small, strict, bounded scanner for the XML that S3 and S3-compatible stores
// send (ListObjectsV2 pages, error bodies), used by the S3 listing and by every HTTP error body.
//
// The scanner accepts the XML that S3 and S3-compatible stores send: an optional declaration,
// comments and processing instructions, one root element, attributes (checked, then dropped),
// character data with the five predefined entities and numeric character references (&#N; and
// &#xH;, any code point but 0, a surrogate or one past U+10FFFF), and CDATA sections. It rejects
// DOCTYPE declarations (so no entity expansion), undefined entities, mismatched or unclosed tags,
// nesting deeper than kMaxS3XmlDepth, inputs larger than kMaxS3XmlBytes, and anything after the
// root element but comments and white space. Every rejection is kDataLoss naming what was parsed
// and the byte offset at fault.
//
// Element names are compared by local name ("s3:Key" matches "Key"), so namespace prefixes do not
// matter. Text is kept exactly as decoded (not trimmed): keys may begin or end with spaces.
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_IO_XML_H_
#define FLASHLOAD_IO_XML_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload {

inline constexpr size_t kMaxS3XmlBytes = 16 << 20;
inline constexpr int kMaxS3XmlDepth = 32;

struct XmlElement {
  std::string name;  // as written, prefix included
  std::string text;  // decoded character data directly inside this element
  std::vector<XmlElement> children;
  size_t offset = 0;  // byte offset of its '<' in the document

  // The local name (after any "prefix:").
  std::string_view local_name() const;
  // The first child with local name `name`, or nullptr.
  const XmlElement* Child(std::string_view name) const;
};

// Parses a whole document into its root element; `what` names the document in messages (e.g.
// "ListObjectsV2 response for s3://bucket/prefix").
Result<XmlElement> ParseS3Xml(std::string_view xml, std::string_view what);

}  // namespace flashload

#endif  // FLASHLOAD_IO_XML_H_
