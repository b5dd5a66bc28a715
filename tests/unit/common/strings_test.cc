#include "common/strings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace flashload {
namespace {

TEST(StringsTest, TrimDropsWhiteSpaceAtBothEnds) {
  EXPECT_EQ(Trim("  \t a b \r\n"), "a b");
  EXPECT_EQ(Trim(""), "");
  EXPECT_EQ(Trim(" \t "), "");
}

TEST(StringsTest, CollapseSpacesTrimsAndFoldsRuns) {
  EXPECT_EQ(CollapseSpaces("  profile \t  foo  "), "profile foo");
  EXPECT_EQ(CollapseSpaces("a"), "a");
  EXPECT_EQ(CollapseSpaces(" \t"), "");
}

TEST(StringsTest, CaseHelpers) {
  EXPECT_EQ(ToLower("HTTP://Host.Example"), "http://host.example");
  EXPECT_TRUE(EqualsIgnoreCase("Content-Range", "content-RANGE"));
  EXPECT_FALSE(EqualsIgnoreCase("ETag", "ETags"));
}

TEST(StringsTest, ParseDecimalTakesDigitsOnlyWithinUint64) {
  EXPECT_EQ(ParseDecimal("0"), 0u);
  EXPECT_EQ(ParseDecimal("18446744073709551615"), UINT64_MAX);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "0x10", "18446744073709551616", "1a"}) {
    EXPECT_EQ(ParseDecimal(bad), std::nullopt) << bad;
  }
}

TEST(StringsTest, PercentDecodeStrictOrKeeping) {
  EXPECT_EQ(PercentDecode("a%20b%2Fc", false), "a b/c");
  EXPECT_EQ(PercentDecode("a+b", true), "a b");
  EXPECT_EQ(PercentDecode("a+b", false), "a+b");
  EXPECT_EQ(PercentDecode("100%", false), std::nullopt);
  EXPECT_EQ(PercentDecode("%zz", false), std::nullopt);
  EXPECT_EQ(PercentDecode("%zz%41", false, BadEscape::kKeep), "%zzA");
  EXPECT_EQ(HexDigitValue('f'), 15);
  EXPECT_EQ(HexDigitValue('G'), -1);
}

TEST(StringsTest, PrintableSnippetReplacesControlBytesAndCuts) {
  EXPECT_EQ(PrintableSnippet("<html>\r\n<b>x</b>\x01  ", 100), "<html>  <b>x</b>");
  EXPECT_EQ(PrintableSnippet("abcdef", 3), "abc");
  EXPECT_EQ(PrintableSnippet("\xff\xfe", 10), "");
}

TEST(StringsTest, IsHttpTokenAcceptsHeaderNamesOnly) {
  EXPECT_TRUE(IsHttpToken("X-Api-Key"));
  EXPECT_TRUE(IsHttpToken("x-amz-date"));
  EXPECT_TRUE(IsHttpToken("!#$%&'*+-.^_`|~09azAZ"));
  EXPECT_FALSE(IsHttpToken(""));
  EXPECT_FALSE(IsHttpToken("X Api"));
  EXPECT_FALSE(IsHttpToken("X-Api:"));
  EXPECT_FALSE(IsHttpToken(std::string_view("X\0", 3)));
  EXPECT_FALSE(IsHttpToken("X\r\nEvil"));
}

}  // namespace
}  // namespace flashload
