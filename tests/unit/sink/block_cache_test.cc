// BlockCache: reuse of same-size blocks between "loads", the size-class rule, the cap, Trim, a
// failed allocation retried without the cached blocks, blocks outliving every other owner.
#include "sink/block_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "support/status_matchers.h"

namespace flashload::sink {
namespace {

struct Counting {
  std::mutex mu;
  std::set<void*> live;  // allocated by alloc, not yet freed
  int allocs = 0;
  int frees = 0;
  uint64_t fail_above = UINT64_MAX;  // alloc fails while live bytes would exceed this
  uint64_t live_bytes = 0;
  std::map<void*, uint64_t> sizes;

  std::shared_ptr<BlockCache> Cache(uint64_t cap) {
    return BlockCache::Create(
        [this](uint64_t n) -> Result<void*> {
          std::lock_guard lock(mu);
          if (live_bytes + n > fail_above) return ResourceExhaustedError("no more pinned memory");
          void* p = std::malloc(n);
          live.insert(p);
          sizes[p] = n;
          live_bytes += n;
          ++allocs;
          return p;
        },
        [this](void* p) {
          std::lock_guard lock(mu);
          EXPECT_EQ(live.erase(p), 1u) << "freed twice or never allocated";
          live_bytes -= sizes[p];
          ++frees;
          std::free(p);
        },
        cap);
  }
};

TEST(BlockCacheTest, ALaterLoadReusesTheSameBlock) {
  Counting c;
  auto cache = c.Cache(1 << 20);
  void* first = nullptr;
  {
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> a, cache->Allocate(256 << 10));
    first = a.get();
  }
  EXPECT_EQ(cache->cached_bytes(), 256u << 10);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> b, cache->Allocate(256 << 10));
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(c.allocs, 1);
  EXPECT_EQ(cache->hits(), 1u);
  EXPECT_EQ(cache->cached_bytes(), 0u);
  // A smaller request takes a cached block at most twice its size, not a larger one.
  b.reset();
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> half, cache->Allocate(128 << 10));
  EXPECT_EQ(half.get(), first);
  half.reset();
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> small, cache->Allocate(100 << 10));
  EXPECT_NE(small.get(), first);
  EXPECT_EQ(c.allocs, 2);
}

TEST(BlockCacheTest, TheCapFreesTheLargestBlocksFirst) {
  Counting c;
  auto cache = c.Cache(300 << 10);
  {
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> a, cache->Allocate(200 << 10));
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> b, cache->Allocate(100 << 10));
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> d, cache->Allocate(50 << 10));
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> big, cache->Allocate(400 << 10));
    a.reset();  // cached: 200 KiB
    b.reset();  // cached: 300 KiB
    d.reset();  // 350 > 300: the 200 KiB block goes
    EXPECT_EQ(cache->cached_bytes(), 150u << 10);
    big.reset();  // larger than the cap by itself: freed at once
    EXPECT_EQ(cache->cached_bytes(), 150u << 10);
  }
  EXPECT_EQ(c.frees, 2);
  cache->Trim();
  EXPECT_EQ(cache->cached_bytes(), 0u);
  EXPECT_EQ(c.frees, 4);
  EXPECT_TRUE(c.live.empty());
}

TEST(BlockCacheTest, AFailedAllocationRetriesWithoutTheCachedBlocks) {
  Counting c;
  c.fail_above = 300 << 10;
  auto cache = c.Cache(1 << 20);
  { FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> a, cache->Allocate(250 << 10)); }
  EXPECT_EQ(cache->cached_bytes(), 250u << 10);
  // 120 KiB is too small to reuse the 250 KiB block, and too much beside it: the cache lets go.
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> b, cache->Allocate(120 << 10));
  EXPECT_EQ(cache->cached_bytes(), 0u);
  EXPECT_THAT(cache->Allocate(250 << 10),
              StatusIs(StatusCode::kResourceExhausted, ::testing::HasSubstr("pinned")));
}

TEST(BlockCacheTest, BlocksOutliveTheCachesOtherOwnersAndThreadsShareIt) {
  Counting c;
  std::shared_ptr<void> kept;
  {
    auto cache = c.Cache(1 << 20);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&cache] {
        for (int i = 0; i < 200; ++i) {
          Result<std::shared_ptr<void>> b = cache->Allocate(4096 * (1 + i % 3));
          ASSERT_TRUE(b.ok());
          static_cast<char*>(b->get())[0] = 1;
        }
      });
    }
    for (std::thread& t : ts) t.join();
    FL_ASSERT_OK_AND_ASSIGN(kept, cache->Allocate(8192));
  }
  // The cache's last owner is the kept block: freeing it frees the block and every cached one.
  kept.reset();
  EXPECT_TRUE(c.live.empty());
  EXPECT_EQ(c.allocs, c.frees);
}

}  // namespace
}  // namespace flashload::sink
