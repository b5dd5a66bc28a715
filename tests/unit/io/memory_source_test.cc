#include "io/memory_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;

TEST(MemorySourceTest, ReadsPositionalBytesAndStopsAtEnd) {
  auto s = NewMemorySource(PositionalBytes(1000, 9), {.name = "mem"});
  EXPECT_EQ(s->size(), 1000u);
  EXPECT_EQ(s->name(), "mem");
  EXPECT_EQ(s->backend(), "memory");
  std::vector<std::byte> buf(300);
  Result<size_t> n = s->ReadAt(900, buf);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 100u);
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).first(100), 900, 9), -1);
  n = s->ReadAt(5000, buf);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

TEST(MemorySourceTest, SubmitAndReap) {
  std::vector<std::byte> bytes = PositionalBytes(1000, 9);
  auto s = NewMemorySourceView(bytes);
  std::vector<std::byte> buf(400);
  ReadRequest reqs[] = {{0, 200, buf.data(), 1}, {950, 200, buf.data() + 200, 2}};
  ASSERT_THAT(s->Submit(reqs), IsOk());
  std::vector<ReadResult> out(4);
  Result<size_t> n = s->Reap(out, Deadline::Infinite());
  ASSERT_THAT(n, IsOk());
  ASSERT_EQ(*n, 2u);
  EXPECT_EQ(out[0].tag, 1u);
  EXPECT_EQ(out[0].bytes, 200u);
  EXPECT_EQ(out[1].tag, 2u);
  EXPECT_EQ(out[1].bytes, 50u);
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).first(200), 0, 9), -1);
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).subspan(200, 50), 950, 9), -1);
  n = s->Reap(out, Deadline::Now());
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

TEST(MemorySourceTest, DirectCapsEnforceAlignmentLikeARealDirectSource) {
  MemorySourceOptions o;
  o.caps.direct_io = true;
  o.caps.alignment = 512;
  o.caps.max_in_flight = 3;
  auto s = NewMemorySource(PositionalBytes(4096), o);
  EXPECT_EQ(s->caps().max_in_flight, 3u);
  alignas(512) std::byte buf[1024];
  ReadRequest bad{100, 512, buf, 1};
  EXPECT_THAT(s->Submit({&bad, 1}), StatusIs(StatusCode::kInvalidArgument));
  ReadRequest good{512, 512, buf, 2};
  EXPECT_THAT(s->Submit({&good, 1}), IsOk());
}

}  // namespace
}  // namespace flashload
