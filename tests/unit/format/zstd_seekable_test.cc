#include "format/zstd_seekable.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "support/status_matchers.h"

namespace flashload::format {
namespace {

using ::testing::HasSubstr;

std::span<const uint8_t> Bytes(const std::string& s) {
  return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::vector<SeekFrame> Frames(bool checksums) {
  std::vector<SeekFrame> frames;
  const uint32_t c[] = {100, 7, 4000};
  const uint32_t d[] = {1 << 20, 3, 1 << 22};
  for (int i = 0; i < 3; ++i) {
    SeekFrame f;
    f.compressed_size = c[i];
    f.decompressed_size = d[i];
    if (checksums) f.checksum = 0xA0B0C0D0u + i;
    frames.push_back(f);
  }
  return frames;
}

// A stream of the given frames: placeholder frame bytes followed by the table.
std::string Stream(const std::vector<SeekFrame>& frames, std::string* table_out = nullptr) {
  Result<std::string> table = BuildSeekTable(frames);
  EXPECT_THAT(table, IsOk());
  uint64_t c = 0;
  for (const SeekFrame& f : frames) c += f.compressed_size;
  if (table_out) *table_out = *table;
  return std::string(c, 'z') + *table;
}

TEST(SeekTableTest, RoundTripsWithAndWithoutChecksums) {
  for (bool checksums : {false, true}) {
    SCOPED_TRACE(checksums);
    const std::vector<SeekFrame> frames = Frames(checksums);
    std::string table;
    const std::string stream = Stream(frames, &table);
    EXPECT_EQ(table.size(), 8 + 3 * (checksums ? 12u : 8u) + 9);
    FL_ASSERT_OK_AND_ASSIGN(
        uint64_t size,
        SeekTableSizeFromFooter(Bytes(stream).subspan(stream.size() - kSeekTableFooterSize), "s"));
    EXPECT_EQ(size, table.size());
    FL_ASSERT_OK_AND_ASSIGN(SeekTable t, ParseSeekTable(Bytes(table), stream.size(), "s"));
    ASSERT_EQ(t.frames.size(), 3u);
    EXPECT_EQ(t.compressed_size, 4107u);
    EXPECT_EQ(t.decompressed_size, (1u << 20) + 3 + (1u << 22));
    EXPECT_EQ(t.table_size, table.size());
    EXPECT_EQ(t.frames[1].compressed_offset, 100u);
    EXPECT_EQ(t.frames[2].compressed_offset, 107u);
    EXPECT_EQ(t.frames[2].decompressed_offset, (1u << 20) + 3);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(t.frames[i].compressed_size, frames[i].compressed_size);
      EXPECT_EQ(t.frames[i].decompressed_size, frames[i].decompressed_size);
      EXPECT_EQ(t.frames[i].checksum, frames[i].checksum);
    }
    EXPECT_EQ(t.FrameAt(0), 0u);
    EXPECT_EQ(t.FrameAt((1 << 20) - 1), 0u);
    EXPECT_EQ(t.FrameAt(1 << 20), 1u);
    EXPECT_EQ(t.FrameAt((1 << 20) + 2), 1u);
    EXPECT_EQ(t.FrameAt((1 << 20) + 3), 2u);
    EXPECT_EQ(t.FrameAt(t.decompressed_size - 1), 2u);
    EXPECT_EQ(t.FrameAt(t.decompressed_size), std::nullopt);
  }
}

TEST(SeekTableTest, EmptyTableAndZeroSizedFrames) {
  std::string table;
  const std::string stream = Stream({}, &table);
  FL_ASSERT_OK_AND_ASSIGN(SeekTable t, ParseSeekTable(Bytes(table), stream.size(), "s"));
  EXPECT_TRUE(t.frames.empty());
  EXPECT_EQ(t.FrameAt(0), std::nullopt);
  std::vector<SeekFrame> frames = Frames(false);
  frames[1].decompressed_size = 0;
  const std::string s2 = Stream(frames, &table);
  FL_ASSERT_OK_AND_ASSIGN(t, ParseSeekTable(Bytes(table), s2.size(), "s"));
  EXPECT_EQ(t.FrameAt(1 << 20), 2u);  // the empty frame holds no byte
}

TEST(SeekTableTest, PlainZstdHasNoSeekTable) {
  const std::string footer("\x28\xb5\x2f\xfd\x00\x00\x00\x00\x00", 9);
  EXPECT_THAT(SeekTableSizeFromFooter(Bytes(footer), "plain.tar.zst"),
              StatusIs(StatusCode::kNotFound,
                       AllOf(HasSubstr("plain.tar.zst"), HasSubstr("not in the zstd seekable"))));
}

TEST(SeekTableTest, MalformedTablesAreDataLoss) {
  std::string table;
  const std::string stream = Stream(Frames(true), &table);
  const uint64_t size = stream.size();
  auto parse = [&](const std::string& t, uint64_t stream_size) {
    return ParseSeekTable(Bytes(t), stream_size, "bad.tar.zst");
  };
  {
    std::string t = table;
    t[0] = 0;  // skippable magic
    EXPECT_THAT(parse(t, size), StatusIs(StatusCode::kDataLoss, HasSubstr("magic")));
  }
  {
    std::string t = table;
    t[4] ^= 1;  // frame size
    EXPECT_THAT(parse(t, size), StatusIs(StatusCode::kDataLoss, HasSubstr("frame size")));
  }
  {
    std::string t = table;
    t[t.size() - 5] |= 0x04;  // reserved descriptor bit
    EXPECT_THAT(parse(t, size), StatusIs(StatusCode::kDataLoss, HasSubstr("reserved")));
  }
  {
    std::string t = table;
    t[t.size() - 9] = 2;  // frame count does not match the table's size
    EXPECT_THAT(parse(t, size), StatusIs(StatusCode::kDataLoss, HasSubstr("2 frames")));
  }
  {
    std::string t = table;
    std::memset(t.data() + 8, 0, 4);  // compressed size 0 of entry 0
    EXPECT_THAT(parse(t, size),
                StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("entry 0"), HasSubstr("of 0"))));
  }
  // Frames that do not fit before the table, or leave a gap before it.
  EXPECT_THAT(parse(table, table.size() + 50),
              StatusIs(StatusCode::kDataLoss, HasSubstr("past the seek table")));
  EXPECT_THAT(parse(table, size + 1), StatusIs(StatusCode::kDataLoss, HasSubstr("cover")));
  EXPECT_THAT(parse(table, table.size() - 1), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(parse(table.substr(0, 10), size), StatusIs(StatusCode::kDataLoss));
  SeekTableLimits limits;
  limits.max_frame_decompressed = 1 << 20;
  EXPECT_THAT(ParseSeekTable(Bytes(table), size, "bad", limits),
              StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("entry 2"), HasSubstr("limit"))));
  limits = {};
  limits.max_frames = 2;
  EXPECT_THAT(ParseSeekTable(Bytes(table), size, "bad", limits),
              StatusIs(StatusCode::kDataLoss, HasSubstr("limit")));
}

TEST(SeekTableTest, BuildRefusesMixedChecksumsAndEmptyFrames) {
  std::vector<SeekFrame> frames = Frames(true);
  frames[1].checksum.reset();
  EXPECT_THAT(BuildSeekTable(frames),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("all or none")));
  frames = Frames(false);
  frames[0].compressed_size = 0;
  EXPECT_THAT(BuildSeekTable(frames), StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace flashload::format
