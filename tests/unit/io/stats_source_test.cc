#include "io/stats_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>
#include <thread>
#include <vector>

#include "io/fault_source.h"
#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::PositionalBytes;

TEST(StatsSourceTest, CountsRequestsBytesErrorsAndInFlight) {
  auto s = NewStatsSource(
      NewFaultSource(NewMemorySource(PositionalBytes(10000)), {.at_offsets = {9500}}));
  std::vector<std::byte> buf(10000);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < 10; ++i) reqs.push_back({i * 1000, 1000, buf.data() + i * 1000, 50 + i});
  ASSERT_THAT(s->Submit(reqs), IsOk());
  EXPECT_EQ(s->stats().in_flight, 10u);
  std::vector<ReadResult> out(10);
  size_t got = 0;
  while (got < 10) {
    Result<size_t> n = s->Reap(std::span(out).subspan(got), Deadline::Infinite());
    ASSERT_THAT(n, IsOk());
    got += *n;
  }
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(out[i].tag, 50 + i) << "tags come back unchanged";
  ASSERT_THAT(s->ReadAt(0, std::span(buf).first(500), {}), IsOk());

  const SourceStats st = s->stats();
  EXPECT_EQ(st.requests, 11u);
  EXPECT_EQ(st.completed, 11u);
  EXPECT_EQ(st.errors, 1u);
  EXPECT_EQ(st.bytes, 9500u);
  EXPECT_EQ(st.in_flight, 0u);
  EXPECT_EQ(st.max_in_flight, 10u);
  EXPECT_EQ(std::accumulate(st.latency_histogram.begin(), st.latency_histogram.end(), uint64_t{0}),
            11u);
}

TEST(StatsSourceTest, ThreadSafeReadAt) {
  auto s = NewStatsSource(NewMemorySource(PositionalBytes(1 << 16)));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<std::byte> buf(64);
      for (int i = 0; i < 1000; ++i) s->ReadAt(i * 64, buf, {}).status().IgnoreError();
    });
  }
  for (std::thread& t : threads) t.join();
  const SourceStats st = s->stats();
  EXPECT_EQ(st.requests, 4000u);
  EXPECT_EQ(st.bytes, 4000u * 64);
  EXPECT_GE(st.max_in_flight, 1u);
  EXPECT_LE(st.max_in_flight, 4u);
}

}  // namespace
}  // namespace flashload
