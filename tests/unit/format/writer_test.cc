#include "flashload/writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;

TEST(SerializeHeaderTest, MatchesTheReferenceBytes) {
  // The reference's own serialization test: one F32 [1, 2, 3] tensor "attn.0", 8-byte alignment.
  std::vector<std::byte> data(24);
  const TensorToWrite t{"attn.0", Dtype::kF32, {1, 2, 3}, data, {}};
  FL_ASSERT_OK_AND_ASSIGN(SerializedHeader h, SerializeHeader(std::span(&t, 1)));
  const std::string json = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(h.bytes, std::string("\x40\0\0\0\0\0\0\0", 8) + json);
}

TEST(SerializeHeaderTest, OrdersByDtypeDescendingThenName) {
  const std::vector<std::byte> two(2), four(4), one(1);
  const std::vector<TensorToWrite> tensors = {
      {"b", Dtype::kU8, {1}, one, {}},
      {"z", Dtype::kF16, {1}, two, {}},
      {"a", Dtype::kF16, {1}, two, {}},
      {"m", Dtype::kF32, {1}, four, {}},
  };
  FL_ASSERT_OK_AND_ASSIGN(SerializedHeader h, SerializeHeader(tensors));
  ASSERT_EQ(h.layout.size(), 4u);
  EXPECT_EQ(h.layout[0].name, "m");
  EXPECT_EQ(h.layout[1].name, "a");
  EXPECT_EQ(h.layout[2].name, "z");
  EXPECT_EQ(h.layout[3].name, "b");
  EXPECT_EQ(h.layout[3].data_begin, 8u);
  EXPECT_EQ(h.layout[3].data_end, 9u);
}

TEST(SerializeHeaderTest, PadsHeaderToAlignmentWithSpaces) {
  const std::vector<std::byte> data(2);
  const TensorToWrite t{"x", Dtype::kBF16, {1}, data, {}};
  WriteOptions options;
  options.alignment = 4096;
  options.metadata = std::map<std::string, std::string>{{"format", "pt"}};
  FL_ASSERT_OK_AND_ASSIGN(SerializedHeader h, SerializeHeader(std::span(&t, 1), options));
  ASSERT_EQ(h.bytes.size(), 4096u);
  EXPECT_EQ(h.bytes.back(), ' ');
  EXPECT_THAT(h.bytes, HasSubstr(R"({"__metadata__":{"format":"pt"},"x":)"));
}

TEST(SerializeHeaderTest, RejectsCallerMistakes) {
  const std::vector<std::byte> three(3), two(2);
  const std::vector<TensorToWrite> dup = {{"a", Dtype::kU8, {2}, two, {}},
                                          {"a", Dtype::kU8, {2}, two, {}}};
  EXPECT_THAT(SerializeHeader(dup), StatusIs(StatusCode::kInvalidArgument, HasSubstr("twice")));
  const TensorToWrite wrong_size{"a", Dtype::kF16, {2}, three, {}};
  EXPECT_THAT(SerializeHeader(std::span(&wrong_size, 1)),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("needs 4 bytes")));
  const TensorToWrite odd_f4{"a", Dtype::kF4, {3}, two, {}};
  EXPECT_THAT(SerializeHeader(std::span(&odd_f4, 1)),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("not whole bytes")));
  WriteOptions bad;
  bad.alignment = 12;
  EXPECT_THAT(SerializeHeader({}, bad), StatusIs(StatusCode::kInvalidArgument));
}

TEST(WriteSafetensorsTest, WritesAFileTheParserAccepts) {
  testing::TempDir dir;
  const std::vector<std::byte> a = testing::PositionalBytes(12, 1);
  const std::vector<std::byte> s = testing::PositionalBytes(8, 2);
  const std::vector<TensorToWrite> tensors = {
      {"a.weight", Dtype::kF16, {2, 3}, a, {}},
      {"scalar", Dtype::kI64, {}, s, {}},
      {"empty", Dtype::kF32, {0, 4}, {}, {}},
  };
  const std::string path = dir.File("m.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, tensors));
  const std::vector<std::byte> file = testing::ReadFile(path);
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderFromBytes(file, path));
  EXPECT_EQ(h.data_offset() % 8, 0u);
  const TensorInfo* t = h.Find("a.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::vector<std::byte>(file.begin() + h.data_offset() + t->data_begin,
                                   file.begin() + h.data_offset() + t->data_end),
            a);
  t = h.Find("scalar");
  EXPECT_EQ(std::vector<std::byte>(file.begin() + h.data_offset() + t->data_begin,
                                   file.begin() + h.data_offset() + t->data_end),
            s);
  // Only the target is left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(WriteSafetensorsTest, StreamsFillCallbacksInLargeChunks) {
  testing::TempDir dir;
  const uint64_t size = (20 << 20) + 6;  // crosses the 8 MiB buffer twice, odd tail
  int calls = 0;
  TensorToWrite big{"big", Dtype::kU16, {size / 2}, {}, {}};
  big.fill = [&](std::span<std::byte> dst, uint64_t offset) {
    ++calls;
    testing::FillPositional(dst, offset, 7);
  };
  const std::string path = dir.File("big.safetensors");
  WriteOptions options;
  options.alignment = 4096;
  FL_ASSERT_OK(WriteSafetensors(path, std::span(&big, 1), options));
  EXPECT_EQ(calls, 3);
  const std::vector<std::byte> file = testing::ReadFile(path);
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderFromBytes(file, path));
  EXPECT_EQ(h.data_offset(), 4096u);
  EXPECT_EQ(testing::FirstPositionMismatch(std::span(file).subspan(h.data_offset()), 0, 7), -1);
}

TEST(WriteSafetensorsTest, FailureLeavesTargetUntouchedAndNoTemporary) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  testing::WriteFile(path, std::string("old contents"));
  const std::vector<std::byte> bad(3);
  const TensorToWrite t{"a", Dtype::kF32, {1}, bad, {}};
  EXPECT_THAT(WriteSafetensors(path, std::span(&t, 1)), StatusIs(StatusCode::kInvalidArgument));
  const std::string missing_dir = dir.File("no/such/dir/m.safetensors");
  const std::vector<std::byte> ok(4);
  const TensorToWrite good{"a", Dtype::kF32, {1}, ok, {}};
  EXPECT_THAT(WriteSafetensors(missing_dir, std::span(&good, 1)),
              StatusIs(StatusCode::kNotFound, HasSubstr("no/such/dir")));
  const std::vector<std::byte> after = testing::ReadFile(path);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(after.data()), after.size()), "old contents");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(WriteSafetensorsTest, ReplacesAnExistingFile) {
  testing::TempDir dir;
  const std::string path = dir.File("m.safetensors");
  testing::WriteFile(path, std::string("old"));
  const std::vector<std::byte> data(4);
  const TensorToWrite t{"a", Dtype::kF32, {1}, data, {}};
  FL_ASSERT_OK(WriteSafetensors(path, std::span(&t, 1)));
  FL_EXPECT_OK(ParseHeaderFromBytes(testing::ReadFile(path), path));
}

}  // namespace
}  // namespace flashload
