#include "io/xml.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <utility>

namespace flashload {
namespace {

// Bounds the tree a hostile body can make us build: a 1000-key page needs under 10,000 elements.
constexpr size_t kMaxS3XmlElements = 1 << 18;

bool IsNameStart(unsigned char c) {
  return std::isalpha(c) != 0 || c == '_' || c == ':' || c >= 0x80;
}
bool IsNameChar(unsigned char c) {
  return IsNameStart(c) || std::isdigit(c) != 0 || c == '-' || c == '.';
}
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

class XmlScanner {
 public:
  XmlScanner(std::string_view in, std::string_view what) : in_(in), what_(what) {}

  Result<XmlElement> Document() {
    if (in_.size() > kMaxS3XmlBytes) {
      return DataLossError(fmt::format("{}: {} bytes of XML is more than the {} accepted", what_,
                                       in_.size(), kMaxS3XmlBytes));
    }
    if (in_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // UTF-8 byte order mark
    FL_RETURN_IF_ERROR(Misc());
    if (pos_ >= in_.size() || in_[pos_] != '<') return Fail(pos_, "expected the root element");
    XmlElement root;
    FL_RETURN_IF_ERROR(Element(1, root));
    FL_RETURN_IF_ERROR(Misc());
    if (pos_ != in_.size()) return Fail(pos_, "content after the root element");
    return root;
  }

 private:
  Status Fail(size_t offset, std::string_view why) const {
    return DataLossError(fmt::format("{}: malformed XML at byte {}: {}", what_, offset, why));
  }
  bool At(std::string_view s) const { return in_.substr(pos_, s.size()) == s; }
  void SkipSpace() {
    while (pos_ < in_.size() && IsSpace(in_[pos_])) ++pos_;
  }

  // Skips from the current position past `end`; fails when it never comes.
  Status SkipPast(std::string_view end, std::string_view what) {
    const size_t start = pos_;
    const size_t found = in_.find(end, pos_);
    if (found == std::string_view::npos) {
      return Fail(start, fmt::format("{} is not closed with \"{}\"", what, end));
    }
    pos_ = found + end.size();
    return Status::Ok();
  }

  // White space, comments and processing instructions between top-level items.
  Status Misc() {
    while (true) {
      SkipSpace();
      if (At("<!--")) {
        FL_RETURN_IF_ERROR(SkipPast("-->", "comment"));
      } else if (At("<?")) {
        FL_RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
      } else if (At("<!")) {
        return Fail(pos_, "DOCTYPE and other declarations are not accepted");
      } else {
        return Status::Ok();
      }
    }
  }

  Result<std::string_view> Name() {
    const size_t start = pos_;
    if (pos_ >= in_.size() || !IsNameStart(static_cast<unsigned char>(in_[pos_]))) {
      return Fail(start, "expected a name");
    }
    while (pos_ < in_.size() && IsNameChar(static_cast<unsigned char>(in_[pos_]))) ++pos_;
    return in_.substr(start, pos_ - start);
  }

  // Decodes the reference at pos_ ('&') into `out`.
  Status Reference(std::string& out) {
    const size_t start = pos_;
    const size_t semi = in_.find(';', pos_);
    if (semi == std::string_view::npos || semi - pos_ > 12) {
      return Fail(start, "'&' does not start an entity or character reference");
    }
    const std::string_view name = in_.substr(pos_ + 1, semi - pos_ - 1);
    pos_ = semi + 1;
    static constexpr std::pair<std::string_view, char> kPredefined[] = {
        {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    for (const auto& [entity, ch] : kPredefined) {
      if (name == entity) {
        out.push_back(ch);
        return Status::Ok();
      }
    }
    if (name.size() < 2 || name[0] != '#') {
      return Fail(start, fmt::format("undefined entity \"&{};\"", name));
    }
    const bool hex = name[1] == 'x';
    const std::string_view digits = name.substr(hex ? 2 : 1);
    if (digits.empty()) return Fail(start, "empty character reference");
    uint32_t cp = 0;
    for (char c : digits) {
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (hex && c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (hex && c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return Fail(start, "bad digit in a character reference");
      }
      cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(d);
      if (cp > 0x10FFFF) return Fail(start, "character reference beyond U+10FFFF");
    }
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Fail(start, fmt::format("character reference to U+{:04X} is not a character", cp));
    }
    AppendUtf8(cp, out);
    return Status::Ok();
  }

  Status Attributes() {
    while (true) {
      const size_t before = pos_;
      SkipSpace();
      if (pos_ >= in_.size()) return Fail(pos_, "the document ends inside a tag");
      if (in_[pos_] == '>' || At("/>")) return Status::Ok();
      if (pos_ == before) return Fail(pos_, "expected white space, '>' or '/>' in a tag");
      FL_RETURN_IF_ERROR(Name().status());
      SkipSpace();
      if (!At("=")) return Fail(pos_, "expected '=' after an attribute name");
      ++pos_;
      SkipSpace();
      if (pos_ >= in_.size() || (in_[pos_] != '"' && in_[pos_] != '\'')) {
        return Fail(pos_, "expected a quoted attribute value");
      }
      const char quote = in_[pos_++];
      std::string ignored;
      while (true) {
        if (pos_ >= in_.size()) return Fail(pos_, "unterminated attribute value");
        const char c = in_[pos_];
        if (c == quote) break;
        if (c == '<') return Fail(pos_, "'<' in an attribute value");
        if (c == '&') {
          FL_RETURN_IF_ERROR(Reference(ignored));
        } else {
          ++pos_;
        }
      }
      ++pos_;
    }
  }

  Status Element(int depth, XmlElement& out) {
    out.offset = pos_;
    if (depth > kMaxS3XmlDepth) {
      return Fail(pos_, fmt::format("elements nested deeper than {}", kMaxS3XmlDepth));
    }
    if (++elements_ > kMaxS3XmlElements) {
      return Fail(pos_, fmt::format("more than {} elements", kMaxS3XmlElements));
    }
    ++pos_;  // '<'
    FL_ASSIGN_OR_RETURN(std::string_view name, Name());
    out.name = std::string(name);
    FL_RETURN_IF_ERROR(Attributes());
    if (At("/>")) {
      pos_ += 2;
      return Status::Ok();
    }
    ++pos_;  // '>'
    while (true) {
      if (pos_ >= in_.size()) {
        return Fail(pos_,
                    fmt::format("<{}> opened at byte {} is never closed", out.name, out.offset));
      }
      const char c = in_[pos_];
      if (c == '&') {
        FL_RETURN_IF_ERROR(Reference(out.text));
      } else if (c != '<') {
        const size_t end = std::min(in_.find_first_of("<&", pos_), in_.size());
        out.text.append(in_.substr(pos_, end - pos_));
        pos_ = end;
      } else if (At("</")) {
        const size_t close = pos_;
        pos_ += 2;
        FL_ASSIGN_OR_RETURN(std::string_view end_name, Name());
        SkipSpace();
        if (!At(">")) return Fail(pos_, "expected '>' to end a closing tag");
        ++pos_;
        if (end_name != out.name) {
          return Fail(close, fmt::format("</{}> closes <{}> opened at byte {}", end_name, out.name,
                                         out.offset));
        }
        return Status::Ok();
      } else if (At("<!--")) {
        FL_RETURN_IF_ERROR(SkipPast("-->", "comment"));
      } else if (At("<![CDATA[")) {
        const size_t start = pos_ + 9;
        FL_RETURN_IF_ERROR(SkipPast("]]>", "CDATA section"));
        out.text.append(in_.substr(start, pos_ - 3 - start));
      } else if (At("<?")) {
        FL_RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
      } else if (At("<!")) {
        return Fail(pos_, "declarations are not accepted inside elements");
      } else {
        out.children.emplace_back();
        FL_RETURN_IF_ERROR(Element(depth + 1, out.children.back()));
      }
    }
  }

  std::string_view in_;
  std::string_view what_;
  size_t pos_ = 0;
  size_t elements_ = 0;
};

}  // namespace

std::string_view XmlElement::local_name() const {
  const size_t colon = name.rfind(':');
  return colon == std::string::npos ? std::string_view(name)
                                    : std::string_view(name).substr(colon + 1);
}

const XmlElement* XmlElement::Child(std::string_view child_name) const {
  for (const XmlElement& c : children) {
    if (c.local_name() == child_name) return &c;
  }
  return nullptr;
}

Result<XmlElement> ParseS3Xml(std::string_view xml, std::string_view what) {
  return XmlScanner(xml, what).Document();
}

}  // namespace flashload
