// Remote sizing: an HTTP source measures its link on the opening GET and reports it in its caps;
// the strategy code sizes ranges from that (engine/strategy.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <memory>

#include "engine/strategy.h"
#include "flashload/defaults.h"
#include "flashload/load_options.h"
#include "io/http_source.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::PositionalBytes;
using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;

// The opening GET measures the link: with 80 ms to the first byte at 50 MB/s per connection, the
// source reports both, and the strategy code grows ranges from them (8 MiB ranges would spend a
// fifth of their time waiting); an explicit size is kept as given.
TEST(HttpSourceAdaptTest, RangeSizeGrowsWithFirstByteLatencyTimesBandwidth) {
  TempDir dir;
  ASSERT_EQ(mkdir(dir.File("root").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(dir.File("root/bucket").c_str(), 0755), 0);
  WriteFile(dir.File("root/bucket/model.bin"), PositionalBytes(4 << 20, 5));
  Result<std::unique_ptr<RangeServer>> slow =
      RangeServer::Start(RangeServerScript(), dir.File("root"), dir.path(),
                         {"--first-byte-latency-ms", "80", "--bandwidth-per-conn", "50000000"});
  ASSERT_THAT(slow, IsOk());
  RemoteOpenOptions remote;
  Result<std::unique_ptr<Source>> s =
      OpenHttpSource((*slow)->Url("bucket/model.bin"), HttpOptionsFrom(remote));
  ASSERT_THAT(s, IsOk());
  const SourceCaps caps = (*s)->caps();
  EXPECT_GE(caps.first_byte_ns, 80'000'000u);
  EXPECT_GT(caps.request_bytes_per_second, 0u);
  // 4 × 0.08 s × 50 MB/s = 16 MB, twice the 8 MiB default (at 40 ms it would sit at the boundary,
  // and a slow build measuring a little less than 50 MB/s kept 8 MiB): 16 MiB, at most the cap.
  EXPECT_GE(engine::LinkChunkBytes(caps), 16ull << 20);
  EXPECT_LE(engine::LinkChunkBytes(caps), defaults::kRemoteMaxChunkBytes);
  LoadOptions load;
  load.memory_budget = 4ull << 30;  // room for every connection at the grown size
  FL_ASSERT_OK_AND_ASSIGN(engine::FileStrategy grown,
                          engine::ChooseRemoteStrategy("http://x/m", caps, load));
  EXPECT_GE(grown.chunk_bytes, 16ull << 20);

  load.remote.chunk_bytes = 2 << 20;
  Result<std::unique_ptr<Source>> f =
      OpenHttpSource((*slow)->Url("bucket/model.bin"), HttpOptionsFrom(load.remote));
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ((*f)->caps().preferred_chunk, 2u << 20);
  FL_ASSERT_OK_AND_ASSIGN(engine::FileStrategy fixed,
                          engine::ChooseRemoteStrategy("http://x/m", (*f)->caps(), load));
  EXPECT_EQ(fixed.chunk_bytes, 2u << 20);
}

}  // namespace
}  // namespace flashload
