#include "io/latency_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::unique_ptr<LatencySource> Slow(LatencyOptions o, uint64_t size = 1 << 20) {
  return NewLatencySource(NewMemorySource(PositionalBytes(size, 2)), o);
}

TEST(LatencySourceTest, ReadAtWaitsPerRequest) {
  auto s = Slow({.per_request = milliseconds(30)});
  std::vector<std::byte> buf(100);
  const auto start = Clock::now();
  Result<size_t> n = s->ReadAt(10, buf, {});
  EXPECT_GE(Clock::now() - start, milliseconds(30));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(FirstPositionMismatch(buf, 10, 2), -1);
}

TEST(LatencySourceTest, SubmitDoesNotBlockAndCompletionsAppearWhenDue) {
  auto s = Slow({.per_request = milliseconds(200)});
  std::vector<std::byte> buf(4000);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < 4; ++i) reqs.push_back({i * 1000, 1000, buf.data() + i * 1000, i});
  const auto start = Clock::now();
  ASSERT_THAT(s->Submit(reqs), IsOk());
  EXPECT_LT(Clock::now() - start, milliseconds(150)) << "Submit() must not wait out the latency";
  std::vector<ReadResult> out(8);
  Result<size_t> n = s->Reap(out, Deadline::In(milliseconds(10)));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u) << "nothing is due yet";
  size_t got = 0;
  while (got < 4) {
    n = s->Reap(std::span(out).subspan(got), Deadline::In(std::chrono::seconds(5)));
    ASSERT_THAT(n, IsOk());
    ASSERT_GT(*n, 0u);
    got += *n;
  }
  EXPECT_GE(Clock::now() - start, milliseconds(200));
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_THAT(out[i].status, IsOk());
    EXPECT_EQ(out[i].bytes, 1000u);
  }
  EXPECT_EQ(FirstPositionMismatch(buf, 0, 2), -1);
}

TEST(LatencySourceTest, BandwidthCapIsSharedByRequests) {
  // 4 × 50 KB over a 2 MB/s link: ~100 ms in all, whichever path.
  auto s = Slow({.bytes_per_second = 2'000'000});
  std::vector<std::byte> buf(200'000);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < 4; ++i) reqs.push_back({i * 50'000, 50'000, buf.data() + i * 50'000, i});
  const auto start = Clock::now();
  ASSERT_THAT(s->Submit(reqs), IsOk());
  std::vector<ReadResult> out(4);
  size_t got = 0;
  while (got < 4) {
    Result<size_t> n = s->Reap(std::span(out).subspan(got), Deadline::Infinite());
    ASSERT_THAT(n, IsOk());
    got += *n;
  }
  const auto took = Clock::now() - start;
  EXPECT_GE(took, milliseconds(95));
  EXPECT_LT(took, milliseconds(1500));
  EXPECT_EQ(FirstPositionMismatch(buf, 0, 2), -1);

  const auto sync_start = Clock::now();
  ASSERT_THAT(s->ReadAt(0, std::span(buf).first(100'000), {}), IsOk());
  EXPECT_GE(Clock::now() - sync_start, milliseconds(48));
}

}  // namespace
}  // namespace flashload
