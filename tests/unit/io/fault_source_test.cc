#include "io/fault_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <vector>

#include "flashload/registry.h"
#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::HasSubstr;

constexpr uint64_t kSize = 64 * 1024;
constexpr uint64_t kSeed = 5;
constexpr uint64_t kChunk = 1024;

std::unique_ptr<FaultSource> Faulty(FaultOptions o) {
  return NewFaultSource(NewMemorySource(PositionalBytes(kSize, kSeed), {.name = "weights.bin"}),
                        std::move(o));
}

// A read "looks right" when it is OK, complete and every byte is where it belongs.
bool LooksRight(const Status& s, uint64_t bytes, uint64_t length, std::span<const std::byte> dst,
                uint64_t offset) {
  return s.ok() && bytes == length && FirstPositionMismatch(dst.first(bytes), offset, kSeed) == -1;
}

class FaultKindTest : public ::testing::TestWithParam<FaultKind> {};

TEST_P(FaultKindTest, EveryInjectedFaultIsVisibleOnReadAt) {
  auto s = Faulty({.kind = GetParam()});
  std::vector<std::byte> buf(kChunk);
  for (uint64_t off = 0; off < kSize; off += kChunk) {
    Result<size_t> n = s->ReadAt(off, buf, {});
    EXPECT_FALSE(LooksRight(n.status(), n.ok() ? *n : 0, kChunk, buf, off)) << "offset " << off;
    switch (GetParam()) {
      case FaultKind::kIoError:
        EXPECT_THAT(n, StatusIs(StatusCode::kIoError, HasSubstr("weights.bin")));
        EXPECT_THAT(n, StatusIs(StatusCode::kIoError, HasSubstr(std::to_string(off))));
        break;
      case FaultKind::kInterrupted:
        EXPECT_THAT(n, StatusIs(StatusCode::kUnavailable));
        EXPECT_TRUE(n.status().IsRetryable());
        break;
      case FaultKind::kShortRead:
        ASSERT_THAT(n, IsOk());
        EXPECT_LT(*n, kChunk);
        EXPECT_LT(off + *n, kSize) << "a short read must not look like end of file";
        break;
      case FaultKind::kCorrupt:
        ASSERT_THAT(n, IsOk());
        EXPECT_EQ(*n, kChunk);
        EXPECT_GE(FirstPositionMismatch(buf, off, kSeed), 0) << "corruption must be detectable";
        break;
    }
  }
  EXPECT_EQ(s->injected(), kSize / kChunk);
  EXPECT_EQ(s->requests(), kSize / kChunk);
}

TEST_P(FaultKindTest, EveryInjectedFaultIsVisibleOnSubmitReap) {
  auto s = Faulty({.kind = GetParam()});
  std::vector<std::byte> buf(kSize);
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < kSize; off += kChunk) {
    reqs.push_back({off, kChunk, buf.data() + off, 100 + off / kChunk});
  }
  ASSERT_THAT(s->Submit(reqs), IsOk());
  std::vector<ReadResult> out(reqs.size());
  size_t got = 0;
  while (got < reqs.size()) {
    Result<size_t> n = s->Reap(std::span(out).subspan(got), Deadline::In(std::chrono::seconds(5)));
    ASSERT_THAT(n, IsOk());
    ASSERT_GT(*n, 0u);
    got += *n;
  }
  std::set<uint64_t> tags;
  for (const ReadResult& r : out) {
    ASSERT_GE(r.tag, 100u);
    tags.insert(r.tag);
    const uint64_t off = (r.tag - 100) * kChunk;
    EXPECT_FALSE(LooksRight(r.status, r.bytes, kChunk, {buf.data() + off, kChunk}, off));
  }
  EXPECT_EQ(tags.size(), reqs.size()) << "tags come back unchanged, once each";
  EXPECT_EQ(s->injected(), reqs.size());
}

INSTANTIATE_TEST_SUITE_P(Kinds, FaultKindTest,
                         ::testing::Values(FaultKind::kIoError, FaultKind::kShortRead,
                                           FaultKind::kInterrupted, FaultKind::kCorrupt));

// Which of `count` ReadAt() calls fail, for a source built with `o`.
std::vector<uint64_t> FaultedIndices(FaultOptions o, uint64_t count) {
  auto s = Faulty(std::move(o));
  std::vector<std::byte> buf(16);
  std::vector<uint64_t> faulted;
  for (uint64_t i = 0; i < count; ++i) {
    if (!s->ReadAt((i * 16) % kSize, buf, {}).ok()) faulted.push_back(i);
  }
  EXPECT_EQ(s->injected(), faulted.size());
  return faulted;
}

TEST(FaultSourceTest, OneInNIsSeededAndReproducible) {
  const std::vector<uint64_t> a = FaultedIndices({.seed = 42, .one_in = 4}, 800);
  const std::vector<uint64_t> b = FaultedIndices({.seed = 42, .one_in = 4}, 800);
  const std::vector<uint64_t> c = FaultedIndices({.seed = 43, .one_in = 4}, 800);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_GT(a.size(), 120u);  // ~200 expected
  EXPECT_LT(a.size(), 280u);
}

TEST(FaultSourceTest, AfterRequestsAndMaxFaults) {
  const std::vector<uint64_t> f = FaultedIndices({.after_requests = 10, .max_faults = 3}, 50);
  EXPECT_EQ(f, (std::vector<uint64_t>{10, 11, 12}));
}

TEST(FaultSourceTest, AtOffsetsHitsOnlyRequestsCoveringThem) {
  auto s = Faulty({.at_offsets = {5000, 9000}});
  std::vector<std::byte> buf(kChunk);
  for (uint64_t off = 0; off < kSize; off += kChunk) {
    const bool covers =
        (off <= 5000 && 5000 < off + kChunk) || (off <= 9000 && 9000 < off + kChunk);
    Result<size_t> n = s->ReadAt(off, buf, {});
    EXPECT_EQ(n.ok(), !covers) << "offset " << off;
    if (n.ok()) {
      EXPECT_EQ(FirstPositionMismatch(buf, off, kSeed), -1);
    }
  }
  EXPECT_EQ(s->injected(), 2u);
}

TEST(FaultSourceTest, ReadsWithNoBytesCannotBeShortenedOrCorrupted) {
  auto s = Faulty({.kind = FaultKind::kCorrupt});
  std::vector<std::byte> buf(16);
  Result<size_t> n = s->ReadAt(kSize, buf, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(s->injected(), 0u);
}

TEST(FaultSourceTest, WorksOverARealIoUringFile) {
  TempDir dir;
  const std::string path = dir.File("f.bin");
  WriteFile(path, PositionalBytes(kSize, kSeed));
  LocalOpenOptions lo;
  lo.fallback = false;
  Result<std::unique_ptr<Source>> file = OpenLocalFile(path, lo);
  ASSERT_THAT(file, IsOk());
  auto s = NewFaultSource(std::move(file).value(), {.seed = 1, .one_in = 3});
  std::vector<std::byte> buf(kSize);
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < kSize; off += kChunk)
    reqs.push_back({off, kChunk, buf.data() + off, off});
  ASSERT_THAT(s->Submit(reqs), IsOk());
  std::vector<ReadResult> out(8);
  size_t got = 0, failed = 0;
  while (got < reqs.size()) {
    Result<size_t> n = s->Reap(out, Deadline::In(std::chrono::seconds(5)));
    ASSERT_THAT(n, IsOk());
    ASSERT_GT(*n, 0u);
    for (size_t i = 0; i < *n; ++i) {
      if (out[i].status.ok()) {
        EXPECT_EQ(out[i].bytes, kChunk);
        EXPECT_EQ(FirstPositionMismatch({buf.data() + out[i].tag, kChunk}, out[i].tag, kSeed), -1);
      } else {
        EXPECT_THAT(out[i].status, StatusIs(StatusCode::kIoError, HasSubstr(path)));
        ++failed;
      }
    }
    got += *n;
  }
  EXPECT_GT(failed, 0u);
  EXPECT_EQ(failed, s->injected());
}

}  // namespace
}  // namespace flashload
