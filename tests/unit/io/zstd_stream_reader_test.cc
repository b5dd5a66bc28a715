// ZstdStreamReader over in-memory and fault-injecting sources: positional content compressed as
// one frame or many (with and without checksums, skippable frames between) comes back byte for
// byte whatever the read sizes and reads in flight, including through an O_DIRECT-like source;
// truncation, damage, a window above the limit and every injected fault are errors naming the
// stream and byte offsets, never wrong bytes.
#include "io/zstd_stream_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <string>
#include <vector>

#include "io/fault_source.h"
#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct CompressOptions {
  uint64_t frame_bytes = 0;  // 0: one frame
  bool checksum = true;
  int window_log = 0;
  bool skippable_between = false;
};

std::vector<std::byte> Compress(std::span<const std::byte> content, const CompressOptions& o = {}) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, o.checksum)));
  if (o.window_log > 0) {
    EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, o.window_log)));
  }
  std::vector<std::byte> out;
  const uint64_t step = o.frame_bytes == 0 ? std::max<uint64_t>(content.size(), 1) : o.frame_bytes;
  for (uint64_t at = 0; at < content.size(); at += step) {
    const std::span<const std::byte> piece =
        content.subspan(at, std::min(step, content.size() - at));
    std::vector<std::byte> frame(ZSTD_compressBound(piece.size()));
    const size_t n = ZSTD_compress2(cctx, frame.data(), frame.size(), piece.data(), piece.size());
    EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
    out.insert(out.end(), frame.begin(), frame.begin() + n);
    if (o.skippable_between) {
      const uint8_t skippable[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
      for (uint8_t b : skippable) out.push_back(std::byte{b});
    }
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

// The whole stream through Read() calls of `piece` bytes.
Result<std::vector<std::byte>> ReadAll(std::unique_ptr<Source> source, size_t piece,
                                       const ZstdStreamOptions& options = {}) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ZstdStreamReader> reader,
                      ZstdStreamReader::Open(std::move(source), options));
  std::vector<std::byte> out;
  std::vector<std::byte> buf(piece);
  while (true) {
    FL_ASSIGN_OR_RETURN(const size_t n, reader->Read(buf));
    out.insert(out.end(), buf.begin(), buf.begin() + n);
    if (n < piece) break;
  }
  EXPECT_EQ(reader->position(), out.size());
  EXPECT_EQ(reader->compressed_position(), reader->source().size());
  return out;
}

TEST(ZstdStreamReaderTest, ContentComesBackWhateverTheFramesReadsAndPieces) {
  const std::vector<std::byte> content = PositionalBytes(3'000'003, 7);
  const CompressOptions layouts[] = {{},
                                     {.frame_bytes = 100'000},
                                     {.checksum = false},
                                     {.frame_bytes = 777'777, .skippable_between = true}};
  for (const CompressOptions& c : layouts) {
    const std::vector<std::byte> z = Compress(content, c);
    for (uint64_t read_bytes : {uint64_t{4099}, uint64_t{65536}, uint64_t{8} << 20}) {
      for (uint32_t in_flight : {1u, 4u}) {
        for (size_t piece : {size_t{1} << 20, size_t{512}}) {
          SCOPED_TRACE(::testing::Message() << "frames " << c.frame_bytes << " read " << read_bytes
                                            << " in flight " << in_flight << " piece " << piece);
          FL_ASSERT_OK_AND_ASSIGN(
              const std::vector<std::byte> got,
              ReadAll(NewMemorySourceView(z), piece,
                      {.read_bytes = read_bytes, .reads_in_flight = in_flight}));
          ASSERT_EQ(got.size(), content.size());
          EXPECT_EQ(FirstPositionMismatch(got, 0, 7), -1);
        }
      }
    }
  }
}

TEST(ZstdStreamReaderTest, AlignedSourceAndSkip) {
  const std::vector<std::byte> content = PositionalBytes(1'234'567, 3);
  const std::vector<std::byte> z = Compress(content, {.frame_bytes = 300'000});
  MemorySourceOptions direct;
  direct.caps.direct_io = true;
  direct.caps.alignment = 4096;
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ZstdStreamReader> reader,
                          ZstdStreamReader::Open(NewMemorySourceView(z, direct),
                                                 {.read_bytes = 10'000, .reads_in_flight = 2}));
  FL_ASSERT_OK_AND_ASSIGN(const uint64_t skipped, reader->Skip(500'001));
  EXPECT_EQ(skipped, 500'001u);
  std::vector<std::byte> buf(1000);
  FL_ASSERT_OK_AND_ASSIGN(const size_t n, reader->Read(buf));
  ASSERT_EQ(n, buf.size());
  EXPECT_EQ(FirstPositionMismatch(buf, 500'001, 3), -1);
  FL_ASSERT_OK_AND_ASSIGN(const uint64_t rest, reader->Skip(UINT64_MAX));
  EXPECT_EQ(rest, content.size() - 501'001);
  FL_ASSERT_OK_AND_ASSIGN(const size_t after, reader->Read(buf));
  EXPECT_EQ(after, 0u);
}

TEST(ZstdStreamReaderTest, TruncatedDamagedAndEmptyStreamsAreDataLoss) {
  const std::vector<std::byte> content = PositionalBytes(2'000'000, 1);
  const std::vector<std::byte> z = Compress(content, {.frame_bytes = 500'000});
  MemorySourceOptions named;
  named.name = "m.tar.zst";
  // (A stream cut right after a frame is a shorter valid stream: the tar walk above catches it.)
  for (size_t keep : {z.size() / 2 + 100, z.size() - 1, size_t{3}}) {
    SCOPED_TRACE(keep);
    EXPECT_THAT(
        ReadAll(NewMemorySourceView(std::span(z).first(keep), named), 1 << 20),
        StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("m.tar.zst"), HasSubstr("truncated"),
                                              HasSubstr("compressed byte offset"))));
  }
  EXPECT_THAT(ReadAll(NewMemorySourceView(std::span(z).first(0), named), 1 << 20),
              StatusIs(StatusCode::kDataLoss, HasSubstr("m.tar.zst")));
  // Every damaged byte is an error: a frame header, block data, a checksum.
  int errors = 0;
  for (size_t at : {size_t{1}, size_t{6}, z.size() / 3, z.size() / 2 + 11, z.size() - 2}) {
    SCOPED_TRACE(at);
    std::vector<std::byte> bad = z;
    bad[at] ^= std::byte{0x10};
    Result<std::vector<std::byte>> got = ReadAll(NewMemorySource(bad, named), 1 << 20);
    EXPECT_FALSE(got.ok());
    if (!got.ok()) {
      ++errors;
      EXPECT_THAT(got.status(), StatusIs(StatusCode::kDataLoss, HasSubstr("m.tar.zst")));
    }
  }
  EXPECT_EQ(errors, 5);
  // Not zstd at all.
  EXPECT_THAT(ReadAll(NewMemorySource(PositionalBytes(100'000), named), 4096),
              StatusIs(StatusCode::kDataLoss, HasSubstr("does not decode")));
}

TEST(ZstdStreamReaderTest, WindowAboveTheLimitIsResourceExhausted) {
  const std::vector<std::byte> content = PositionalBytes(1 << 20, 2);
  const std::vector<std::byte> z = Compress(content, {.window_log = 20});
  MemorySourceOptions named;
  named.name = "wide.tar.zst";
  EXPECT_THAT(ReadAll(NewMemorySourceView(z, named), 4096, {.window_log_max = 12}),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("wide.tar.zst"), HasSubstr("2^12"), HasSubstr("--long"))));
  EXPECT_THAT(ZstdStreamReader::Open(NewMemorySourceView(z), {.window_log_max = 99}),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ZstdStreamReader::Open(NewMemorySourceView(z), {.reads_in_flight = 0}),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(ZstdStreamReaderTest, InjectedFaultsNeverComeBackAsTheContent) {
  const std::vector<std::byte> content = PositionalBytes(1'500'000, 5);
  const std::vector<std::byte> z = Compress(content, {.frame_bytes = 200'000});
  for (FaultKind kind :
       {FaultKind::kIoError, FaultKind::kInterrupted, FaultKind::kShortRead, FaultKind::kCorrupt}) {
    for (uint64_t seed = 0; seed < 8; ++seed) {
      SCOPED_TRACE(::testing::Message() << "kind " << static_cast<int>(kind) << " seed " << seed);
      auto faulty = NewFaultSource(NewMemorySourceView(z),
                                   {.kind = kind, .seed = seed, .one_in = 4, .max_faults = 1});
      Result<std::vector<std::byte>> got =
          ReadAll(std::move(faulty), 1 << 16, {.read_bytes = 20'000, .reads_in_flight = 3});
      if (got.ok()) {
        // No fault was drawn for this seed: then the content is exact.
        ASSERT_EQ(got->size(), content.size());
        EXPECT_EQ(FirstPositionMismatch(*got, 0, 5), -1);
        continue;
      }
      EXPECT_THAT(std::string(got.status().message()), HasSubstr("byte offset"));
      if (kind == FaultKind::kInterrupted) {
        EXPECT_TRUE(got.status().IsRetryable());
      }
    }
  }
  // A fault on every read after the first few: always an error.
  for (FaultKind kind :
       {FaultKind::kIoError, FaultKind::kInterrupted, FaultKind::kShortRead, FaultKind::kCorrupt}) {
    auto faulty = NewFaultSource(NewMemorySourceView(z), {.kind = kind, .after_requests = 3});
    EXPECT_FALSE(ReadAll(std::move(faulty), 1 << 16, {.read_bytes = 20'000}).ok());
  }
}

}  // namespace
}  // namespace flashload
