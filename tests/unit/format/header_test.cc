#include "flashload/header.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;

std::vector<std::byte> File(std::string_view json, size_t data_bytes = 0, size_t extra = 0) {
  std::vector<std::byte> out(8 + json.size() + data_bytes + extra);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = std::byte((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}

std::span<const std::byte> Bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(ParseHeaderLengthTest, ReturnsLengthOfPlausiblePrefix) {
  const std::vector<std::byte> f = File("{}");
  FL_ASSERT_OK_AND_ASSIGN(uint64_t n, ParseHeaderLength(f, f.size(), "m.safetensors"));
  EXPECT_EQ(n, 2u);
}

TEST(ParseHeaderLengthTest, OverflowOfEightPlusNIsCaughtWhenTheLimitAllowsIt) {
  const std::vector<std::byte> f(16, std::byte{0xff});
  ParseOptions options;
  options.header_limit = UINT64_MAX;
  EXPECT_THAT(ParseHeaderLength(f, f.size(), "m", options),
              StatusIs(StatusCode::kDataLoss, HasSubstr("overflows 64 bits")));
}

TEST(ParseHeaderLengthTest, LimitIsAnOption) {
  const std::vector<std::byte> f = File("{}      ");
  ParseOptions options;
  options.header_limit = 4;
  EXPECT_THAT(ParseHeaderLength(f, f.size(), "m", options),
              StatusIs(StatusCode::kDataLoss, HasSubstr("exceeds the limit of 4 bytes")));
  options.header_limit = 8;
  EXPECT_THAT(ParseHeaderLength(f, f.size(), "m", options), IsOk());
}

TEST(ParseHeaderLengthTest, ShortPrefixOfLargeFileIsCallerMistake) {
  const std::vector<std::byte> f(4);
  EXPECT_THAT(ParseHeaderLength(f, 1000, "m"), StatusIs(StatusCode::kInvalidArgument));
}

TEST(ParseHeaderJsonTest, ParsesTensorsInFileOrderWithMetadata) {
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[4,16]},)"
      R"("a":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})";
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderJson(json, json.size(), 8 + json.size() + 16, "m"));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].dtype, Dtype::kI32);
  EXPECT_TRUE(h.tensors[0].shape.empty());
  EXPECT_EQ(h.tensors[0].element_count(), 1u);
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(h.tensors[1].data_begin, 4u);
  EXPECT_EQ(h.tensors[1].byte_size(), 12u);
  ASSERT_TRUE(h.metadata.has_value());
  EXPECT_EQ(h.metadata->at("format"), "pt");
  EXPECT_EQ(h.data_offset(), 8 + json.size());
  EXPECT_EQ(h.data_size(), 16u);
}

TEST(ParseHeaderJsonTest, FindUsesNamesAfterSorting) {
  const std::string json = R"({"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                           R"("a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})";
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderJson(json, json.size(), 8 + json.size() + 3, "m"));
  ASSERT_NE(h.Find("a"), nullptr);
  EXPECT_EQ(h.Find("a")->data_begin, 1u);
  EXPECT_EQ(h.Find("z")->data_begin, 0u);
  EXPECT_EQ(h.Find("q"), nullptr);
  // An index made stale by editing still finds the right tensor.
  h.tensors[0].name = "renamed";
  EXPECT_EQ(h.Find("z"), nullptr);
  ASSERT_NE(h.Find("renamed"), nullptr);
  EXPECT_EQ(h.Find("renamed")->data_begin, 0u);
}

TEST(ParseHeaderJsonTest, DuplicateNamesKeepTheLastWhenAllowed) {
  const std::string json = R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                           R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_THAT(ParseHeaderJson(json, json.size(), 8 + json.size() + 2, "m"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("appears twice")));
  ParseOptions options;
  options.reject_duplicate_names = false;
  FL_ASSERT_OK_AND_ASSIGN(Header h,
                          ParseHeaderJson(json, json.size(), 8 + json.size() + 2, "m", options));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].shape, (std::vector<uint64_t>{2}));
}

TEST(ParseHeaderJsonTest, NamesTheTensorAndFileOffsetOfASpanMismatch) {
  const std::string json = R"({"a.weight":{"dtype":"F16","shape":[2,3],"data_offsets":[0,10]}})";
  EXPECT_THAT(ParseHeaderJson(json, json.size(), 8 + json.size() + 10, "model.safetensors"),
              StatusIs(StatusCode::kDataLoss,
                       HasSubstr(fmt::format("model.safetensors: tensor 'a.weight' data_offsets "
                                             "[0, 10] (at byte offset {} of the file): span of 10 "
                                             "bytes, expected 12 bytes for F16 [2, 3]",
                                             8 + json.size()))));
}

TEST(ParseHeaderJsonTest, ZeroSizeTensorsMaySharePositionWithNextTensor) {
  const std::string json = R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                           R"("f":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderJson(json, json.size(), 8 + json.size() + 1, "m"));
  EXPECT_EQ(h.tensors[0].name, "e");
}

TEST(ParseHeaderJsonTest, DepthLimitMatchesSerdeJson) {
  auto nested = [](int depth) {
    return R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":)" +
           std::string(depth - 2, '[') + std::string(depth - 2, ']') + "}}";
  };
  const std::string ok = nested(127);
  EXPECT_THAT(ParseHeaderJson(ok, ok.size(), 8 + ok.size(), "m"), IsOk());
  const std::string deep = nested(128);
  EXPECT_THAT(ParseHeaderJson(deep, deep.size(), 8 + deep.size(), "m"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("not valid JSON")));
}

TEST(ParseHeaderJsonTest, NegativeZeroOnlyRejectedInShapeAndOffsets) {
  const std::string in_unknown =
      R"({"a":{"x":[-0],"dtype":"U8","shape":[0],"data_offsets":[0,0]},"__metadata__":{"-0":"-0"}})";
  EXPECT_THAT(ParseHeaderJson(in_unknown, in_unknown.size(), 8 + in_unknown.size(), "m"), IsOk());
  const std::string in_offsets = R"({"a":["U8",[0],[0,-0]]})";
  EXPECT_THAT(ParseHeaderJson(in_offsets, in_offsets.size(), 8 + in_offsets.size(), "m"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("tensor 'a'")));
}

TEST(ParseHeaderJsonTest, MismatchedLengthIsCallerMistake) {
  EXPECT_THAT(ParseHeaderJson("{}", 3, 100, "m"), StatusIs(StatusCode::kInvalidArgument));
}

TEST(ParseHeaderJsonTest, ParserIsReusableAfterLargeHeader) {
  std::string json = "{";
  uint64_t offset = 0;
  for (int i = 0; i < 200000; ++i) {
    if (i) json += ",";
    json += fmt::format(R"("t{}":{{"dtype":"U8","shape":[1],"data_offsets":[{},{}]}})", i, offset,
                        offset + 1);
    ++offset;
  }
  json += "}";
  FL_ASSERT_OK_AND_ASSIGN(Header big,
                          ParseHeaderJson(json, json.size(), 8 + json.size() + offset, "m"));
  EXPECT_EQ(big.tensors.size(), 200000u);
  EXPECT_EQ(big.Find("t123456")->data_begin, 123456u);
  const std::string small = "{}";
  EXPECT_THAT(ParseHeaderJson(small, 2, 10, "m"), IsOk());
}

TEST(HeaderToJsonTest, RoundTripsThroughTheParser) {
  Header h;
  h.metadata = std::map<std::string, std::string>{{"k\"ey", "v\n\x01"}};
  h.tensors.push_back({"w\\eight", Dtype::kBF16, {2, 2}, 0, 8});
  h.tensors.push_back({"s", Dtype::kF4, {}, 8, 8});
  const std::string json = HeaderToJson(h);
  EXPECT_EQ(json,
            R"({"__metadata__":{"k\"ey":"v\n\u0001"},"w\\eight":{"dtype":"BF16","shape":[2,2],)"
            R"("data_offsets":[0,8]},"s":{"dtype":"F4","shape":[],"data_offsets":[8,8]}})");
}

TEST(DiagnoseFileKindTest, RecognizesKnownKinds) {
  EXPECT_THAT(DiagnoseFileKind({}, 0).value_or(""), HasSubstr("empty"));
  EXPECT_THAT(DiagnoseFileKind(Bytes("\x28\xb5\x2f\xfd...."), 100).value_or(""), HasSubstr("zstd"));
  EXPECT_THAT(DiagnoseFileKind(Bytes("GGUF\x03\x00\x00\x00"), 100).value_or(""), HasSubstr("GGUF"));
  std::string tar(512, '\0');
  tar.replace(257, 5, "ustar");
  EXPECT_THAT(DiagnoseFileKind(Bytes(tar), 10240).value_or(""), HasSubstr("tar archive"));
  EXPECT_THAT(DiagnoseFileKind(Bytes("\xef\xbb\xbf  <!doctype HTML>"), 100).value_or(""),
              HasSubstr("HTML page"));
  EXPECT_EQ(DiagnoseFileKind(Bytes("\x10\x00\x00\x00\x00\x00\x00\x00{}"), 100), std::nullopt);
}

}  // namespace
}  // namespace flashload
