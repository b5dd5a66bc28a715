#include "store/seekable_writer.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <string>
#include <vector>

#include "format/zstd_seekable.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

using ::testing::HasSubstr;

std::span<const std::byte> Bytes(const std::vector<std::byte>& v) { return v; }

// Collects the stream in memory.
struct Collected {
  std::string bytes;
  ByteSink Sink() {
    return [this](std::span<const std::byte> b) {
      bytes.append(reinterpret_cast<const char*>(b.data()), b.size());
      return Status::Ok();
    };
  }
};

// Compressible, position-encoded input: runs of repeated position bytes.
std::vector<std::byte> Input(size_t size, uint64_t seed) {
  std::vector<std::byte> v = testing::PositionalBytes(size, seed);
  for (size_t i = 0; i < v.size(); ++i) {
    if ((i / 64) % 2 == 0) v[i] = std::byte{0};
  }
  return v;
}

std::string StreamDecompress(const std::string& stream) {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  std::string out;
  std::vector<char> buf(1 << 16);
  ZSTD_inBuffer in{stream.data(), stream.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    const size_t r = ZSTD_decompressStream(d, &o, &in);
    EXPECT_FALSE(ZSTD_isError(r)) << ZSTD_getErrorName(r);
    if (ZSTD_isError(r)) break;
    out.append(buf.data(), o.pos);
  }
  ZSTD_freeDCtx(d);
  return out;
}

format::SeekTable ParseTable(const std::string& stream) {
  const auto* p = reinterpret_cast<const uint8_t*>(stream.data());
  auto size = format::SeekTableSizeFromFooter(
      std::span<const uint8_t>(p + stream.size() - format::kSeekTableFooterSize,
                               format::kSeekTableFooterSize),
      "test.zst");
  EXPECT_THAT(size, IsOk());
  if (!size.ok()) return {};
  auto table = format::ParseSeekTable(std::span<const uint8_t>(p + stream.size() - *size, *size),
                                      stream.size(), "test.zst");
  EXPECT_THAT(table, IsOk());
  return table.ok() ? *table : format::SeekTable{};
}

TEST(SeekableZstdWriterTest, FramesDecompressToTheInputAndTheTableDescribesThem) {
  const std::vector<std::byte> input = Input(10'000 + 3 * 4096 + 123, 7);
  Collected c;
  SeekableWriterOptions o;
  o.frame_bytes = 4096;
  o.threads = 3;
  FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(c.Sink(), "test.zst", o));
  // 100 bytes, a forced boundary, then the rest in odd pieces.
  FL_ASSERT_OK(w->Write(Bytes(input).first(100)));
  FL_ASSERT_OK(w->EndFrame());
  FL_ASSERT_OK(w->EndFrame());  // an empty frame is never written
  size_t at = 100;
  while (at < input.size()) {
    const size_t n = std::min<size_t>(777, input.size() - at);
    FL_ASSERT_OK(w->Write(Bytes(input).subspan(at, n)));
    at += n;
  }
  FL_ASSERT_OK(w->Finish());
  EXPECT_EQ(w->decompressed_bytes(), input.size());
  EXPECT_EQ(w->compressed_bytes(), c.bytes.size());

  format::SeekTable table = ParseTable(c.bytes);
  ASSERT_EQ(table.frames.size(), w->frames());
  // 100, then full frames of 4096, then the remainder.
  const size_t rest = input.size() - 100;
  ASSERT_EQ(table.frames.size(), 1 + (rest + 4095) / 4096);
  EXPECT_EQ(table.frames[0].decompressed_size, 100u);
  for (size_t i = 1; i + 1 < table.frames.size(); ++i) {
    EXPECT_EQ(table.frames[i].decompressed_size, 4096u) << i;
  }
  EXPECT_EQ(table.decompressed_size, input.size());
  for (const format::SeekFrame& f : table.frames) {
    std::string frame = c.bytes.substr(f.compressed_offset, f.compressed_size);
    std::vector<std::byte> out(f.decompressed_size);
    const size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
    ASSERT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
    ASSERT_EQ(n, f.decompressed_size);
    EXPECT_EQ(std::memcmp(out.data(), input.data() + f.decompressed_offset, n), 0)
        << "frame at " << f.decompressed_offset;
    ASSERT_TRUE(f.checksum.has_value());
    EXPECT_EQ(*f.checksum, static_cast<uint32_t>(XXH64(out.data(), out.size(), 0)));
  }
  // An ordinary streaming decoder reads the frames in order and skips the seek table.
  const std::string all = StreamDecompress(c.bytes);
  ASSERT_EQ(all.size(), input.size());
  EXPECT_EQ(std::memcmp(all.data(), input.data(), all.size()), 0);
}

TEST(SeekableZstdWriterTest, SameBytesWhateverTheThreadCount) {
  const std::vector<std::byte> input = Input(200'000, 3);
  std::string first;
  for (uint32_t threads : {1u, 2u, 5u}) {
    Collected c;
    SeekableWriterOptions o;
    o.frame_bytes = 8192;
    o.threads = threads;
    FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(c.Sink(), "test.zst", o));
    FL_ASSERT_OK(w->Write(input));
    FL_ASSERT_OK(w->Finish());
    if (first.empty()) {
      first = c.bytes;
    } else {
      EXPECT_EQ(c.bytes, first) << threads << " threads";
    }
  }
  EXPECT_LT(first.size(), input.size());
}

TEST(SeekableZstdWriterTest, WithoutChecksumsTheTableHasNone) {
  Collected c;
  SeekableWriterOptions o;
  o.frame_bytes = 1024;
  o.seek_checksums = false;
  FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(c.Sink(), "test.zst", o));
  FL_ASSERT_OK(w->Write(Input(5000, 1)));
  FL_ASSERT_OK(w->Finish());
  format::SeekTable table = ParseTable(c.bytes);
  ASSERT_EQ(table.frames.size(), 5u);
  for (const auto& f : table.frames) EXPECT_FALSE(f.checksum.has_value());
}

TEST(SeekableZstdWriterTest, AnEmptyStreamIsAValidSeekableStream) {
  Collected c;
  FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(c.Sink(), "test.zst", {}));
  FL_ASSERT_OK(w->Finish());
  EXPECT_EQ(ParseTable(c.bytes).frames.size(), 0u);
  EXPECT_THAT(w->Finish(), StatusIs(StatusCode::kFailedPrecondition));
}

TEST(SeekableZstdWriterTest, ASinkErrorIsStickyAndStopsTheStream) {
  int calls = 0;
  ByteSink failing = [&](std::span<const std::byte>) {
    ++calls;
    return calls >= 2 ? IoError("write out.tar.zst at byte offset 9: no space") : Status::Ok();
  };
  SeekableWriterOptions o;
  o.frame_bytes = 1024;
  o.threads = 2;
  FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(failing, "out.tar.zst", o));
  Status s;
  for (int i = 0; i < 50 && s.ok(); ++i) s = w->Write(Input(1024, i));
  if (s.ok()) s = w->Finish();
  EXPECT_THAT(s, StatusIs(StatusCode::kIoError, HasSubstr("no space")));
  const int calls_at_error = calls;
  EXPECT_THAT(w->Write(Input(10, 1)), StatusIs(StatusCode::kIoError));
  EXPECT_THAT(w->Finish(), StatusIs(StatusCode::kIoError));
  EXPECT_EQ(calls, calls_at_error);
}

TEST(SeekableZstdWriterTest, RefusesBadOptions) {
  Collected c;
  SeekableWriterOptions o;
  o.level = 99;
  EXPECT_THAT(SeekableZstdWriter::Create(c.Sink(), "x.tar.zst", o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("level 99")));
  o = {};
  o.frame_bytes = 100;
  EXPECT_THAT(SeekableZstdWriter::Create(c.Sink(), "x.tar.zst", o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("frame size")));
}

TEST(SeekableZstdWriterTest, FdSinkWritesTheStreamToAFile) {
  testing::TempDir dir;
  const std::string path = dir.File("a.zst");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const std::vector<std::byte> input = Input(50'000, 9);
  {
    SeekableWriterOptions o;
    o.frame_bytes = 4096;
    FL_ASSERT_OK_AND_ASSIGN(auto w, SeekableZstdWriter::Create(FdByteSink(fd, path), path, o));
    FL_ASSERT_OK(w->Write(input));
    FL_ASSERT_OK(w->Finish());
  }
  ::close(fd);
  std::vector<std::byte> file = testing::ReadFile(path);
  const std::string stream(reinterpret_cast<const char*>(file.data()), file.size());
  const std::string all = StreamDecompress(stream);
  ASSERT_EQ(all.size(), input.size());
  EXPECT_EQ(std::memcmp(all.data(), input.data(), all.size()), 0);
}

}  // namespace
}  // namespace flashload::store
