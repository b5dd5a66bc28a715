// The one XML reader (io/xml.h): the tree it builds and what it refuses.
#include "io/xml.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(XmlTest, BuildsTheTree) {
  FL_ASSERT_OK_AND_ASSIGN(
      XmlElement root,
      ParseS3Xml("\xEF\xBB\xBF<?xml version='1.0'?><!-- c --><a x=\"1&amp;\" y='2'>t1<b/>t2<c>"
                 "<d>deep</d></c ></a>",
                 "doc"));
  EXPECT_EQ(root.name, "a");
  EXPECT_EQ(root.text, "t1t2");
  ASSERT_EQ(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].name, "b");
  EXPECT_EQ(root.Child("c")->Child("d")->text, "deep");
  EXPECT_EQ(root.Child("c")->offset, 62u);  // 3 (BOM) + 21 + 10 + 20 + 2 + 4 + 2
  EXPECT_EQ(root.Child("missing"), nullptr);
}

TEST(XmlTest, MalformedXmlIsDataLossWithTheOffset) {
  struct Case {
    std::string xml;
    std::string what;
  };
  const Case cases[] = {
      {"", "byte 0: expected the root element"},
      {"   text", "byte 3: expected the root element"},
      {"<a>", "byte 3: <a> opened at byte 0 is never closed"},
      {"<a><b></a>", "byte 6: </a> closes <b> opened at byte 3"},
      {"<a></a><b/>", "byte 7: content after the root element"},
      {"<a></a>junk", "byte 7: content after the root element"},
      {"<a>&foo;</a>", "byte 3: undefined entity \"&foo;\""},
      {"<a>& b</a>", "byte 3: '&' does not start"},
      {"<a>&#0;</a>", "byte 3: character reference to U+0000"},
      {"<a>&#xD800;</a>", "U+D800 is not a character"},
      {"<a>&#x110000;</a>", "beyond U+10FFFF"},
      {"<a>&#x;</a>", "empty character reference"},
      {"<a>&#12a;</a>", "bad digit"},
      {"<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>", "byte 0: DOCTYPE"},
      {"<a><!DOCTYPE x></a>", "byte 3: declarations are not accepted"},
      {"<a x=1></a>", "byte 5: expected a quoted attribute value"},
      {"<a x='<'></a>", "byte 6: '<' in an attribute value"},
      {"<a x='1'y='2'></a>", "byte 8: expected white space"},
      {"<a x></a>", "expected '='"},
      {"<a x='1", "unterminated attribute value"},
      {"<a", "the document ends inside a tag"},
      {"<1a/>", "byte 1: expected a name"},
      {"<a><!-- never closed </a>", "byte 3: comment is not closed"},
      {"<a><![CDATA[x</a>", "CDATA section is not closed"},
      {"<a></a", "expected '>' to end a closing tag"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseS3Xml(c.xml, "doc"),
                StatusIs(StatusCode::kDataLoss,
                         AllOf(HasSubstr("doc: malformed XML at "), HasSubstr(c.what))))
        << c.xml;
  }
}

TEST(XmlTest, DepthElementCountAndSizeAreBounded) {
  std::string ok_deep, too_deep;
  for (int i = 0; i < kMaxS3XmlDepth; ++i) ok_deep += "<a>";
  for (int i = 0; i < kMaxS3XmlDepth; ++i) ok_deep += "</a>";
  FL_EXPECT_OK(ParseS3Xml(ok_deep, "doc"));
  for (int i = 0; i <= kMaxS3XmlDepth; ++i) too_deep += "<a>";
  EXPECT_THAT(ParseS3Xml(too_deep, "doc"), StatusIs(StatusCode::kDataLoss, HasSubstr("deeper")));

  std::string many = "<r>";
  for (int i = 0; i < (1 << 18); ++i) many += "<a/>";
  many += "</r>";
  EXPECT_THAT(ParseS3Xml(many, "doc"), StatusIs(StatusCode::kDataLoss, HasSubstr("elements")));

  EXPECT_THAT(ParseS3Xml(std::string(kMaxS3XmlBytes + 1, ' '), "doc"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("more than")));
}

// ---- Error bodies ------------------------------------------------------------------------------

}  // namespace
}  // namespace flashload
