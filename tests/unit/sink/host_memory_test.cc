#include "sink/host_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "flashload/loader.h"
#include "sink/host_arena.h"

namespace flashload::sink {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

// Fraction of the pages of [p, p+len) that are backed by memory.
double ResidentFraction(const std::byte* p, uint64_t len) {
  const uint64_t pages = (len + 4095) / 4096;
  std::vector<unsigned char> vec(pages);
  if (mincore(const_cast<std::byte*>(p), len, vec.data()) != 0) return -1;
  uint64_t in = 0;
  for (unsigned char v : vec) in += v & 1;
  return static_cast<double>(in) / static_cast<double>(pages);
}

struct Mapping {
  explicit Mapping(uint64_t n) : size(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  }
  ~Mapping() {
    if (data != nullptr) munmap(data, size);
  }
  std::byte* data;
  uint64_t size;
};

TEST(PageSizeTest, HugePagesOnlyWhenClearlyFaster) {
  EXPECT_EQ(ChoosePageSize(2.0, 1.0), PageSize::kSmall);
  EXPECT_EQ(ChoosePageSize(2.0, 2.2), PageSize::kSmall);  // within the margin: 4 KiB
  EXPECT_EQ(ChoosePageSize(2.0, 2.5), PageSize::kHuge);
  EXPECT_EQ(ChoosePageSize(0.0, 0.0), PageSize::kSmall);
}

// Seconds that populating 4 MiB takes at `gbps`.
double At(double gbps) { return static_cast<double>(4 * kMiB) / (gbps * 1e9); }

TEST(PageSizeTunerTest, ProbesBothKindsThenKeepsTheFaster) {
  PageSizeTuner t = PageSizeTuner::ForTest(64);
  EXPECT_EQ(t.ForStep(0), PageSize::kSmall);
  EXPECT_EQ(t.ForStep(1), PageSize::kHuge);
  EXPECT_EQ(t.ForStep(2), PageSize::kSmall) << "until both probes are in: the default";
  t.Record(PageSize::kSmall, 4 * kMiB, At(2.0));
  EXPECT_EQ(t.Result().huge_gbps, 0.0);
  t.Record(PageSize::kHuge, 4 * kMiB, At(0.4));
  EXPECT_EQ(t.ForStep(3), PageSize::kSmall);
  const PageSizeChoice c = t.Result();
  EXPECT_NEAR(c.small_gbps, 2.0, 1e-9);
  EXPECT_NEAR(c.huge_gbps, 0.4, 1e-9);
  EXPECT_NE(c.reason.find("4 KiB pages (first touch measured while loading"), std::string::npos)
      << c.reason;
}

TEST(PageSizeTunerTest, HugePagesWhenClearlyFaster) {
  PageSizeTuner t = PageSizeTuner::ForTest(64);
  t.Record(PageSize::kHuge, 4 * kMiB, At(8.0));
  t.Record(PageSize::kSmall, 4 * kMiB, At(1.5));
  EXPECT_EQ(t.ForStep(2), PageSize::kHuge);
  EXPECT_EQ(t.Result().page, PageSize::kHuge);
}

TEST(PageSizeTunerTest, SwitchesWhenTheChosenKindSlowsDown) {
  // Huge pages looked fast at first (memory the host had just freed), then slow down.
  PageSizeTuner t = PageSizeTuner::ForTest(64);
  t.Record(PageSize::kSmall, 4 * kMiB, At(2.0));
  t.Record(PageSize::kHuge, 4 * kMiB, At(6.0));
  ASSERT_EQ(t.ForStep(2), PageSize::kHuge);
  for (int i = 0; i < 20 && t.ForStep(2) == PageSize::kHuge; ++i) {
    t.Record(PageSize::kHuge, 4 * kMiB, At(0.3));
  }
  EXPECT_EQ(t.ForStep(10), PageSize::kSmall);
  EXPECT_EQ(t.Result().switches, 1u);
  EXPECT_NE(t.Result().reason.find("switched 1 times"), std::string::npos);
  // A slower 4 KiB step alone does not switch back while it stays above 2/3 of the huge rate.
  t.Record(PageSize::kSmall, 4 * kMiB, At(1.5));
  EXPECT_EQ(t.ForStep(11), PageSize::kSmall);
}

TEST(PageSizeTunerTest, SmallLoadsAreNotProbed) {
  PageSizeTuner t = PageSizeTuner::ForTest(PageSizeTuner::kMinProbedSteps - 1);
  EXPECT_EQ(t.ForStep(0), PageSize::kSmall);
  EXPECT_EQ(t.ForStep(1), PageSize::kSmall);
  EXPECT_NE(t.Result().reason.find("too little memory"), std::string::npos);
}

TEST(PageSizeTunerTest, EnvironmentForcesTheChoice) {
  setenv("FLASHLOAD_HUGE_PAGES", "on", 1);
  PageSizeTuner on(64);
  EXPECT_EQ(on.ForStep(0), PageSize::kHuge);
  EXPECT_EQ(on.ForStep(1), PageSize::kHuge);
  on.Record(PageSize::kHuge, 4 * kMiB, At(0.1));
  EXPECT_EQ(on.ForStep(5), PageSize::kHuge);
  EXPECT_NE(on.Result().reason.find("FLASHLOAD_HUGE_PAGES=on"), std::string::npos);
  setenv("FLASHLOAD_HUGE_PAGES", "off", 1);
  PageSizeTuner off(64);
  EXPECT_EQ(off.ForStep(1), PageSize::kSmall);
  unsetenv("FLASHLOAD_HUGE_PAGES");
}

TEST(PageSizeTunerTest, APopulatorPublishesItsChoiceForTheNextLoad) {
  ResetPageSizeChoiceForTest();
  Mapping m(64 * kMiB);
  ASSERT_NE(m.data, nullptr);
  {
    MemoryPopulator pop({{m.data, m.size, 0}}, 2);
    pop.Ensure(0, 0, m.size);
    EXPECT_NE(pop.page_size().page, PageSize::kUndecided);
  }
  const PageSizeChoice c = CurrentPageSizeChoice();
  EXPECT_NE(c.page, PageSize::kUndecided);
  EXPECT_FALSE(c.reason.empty());
  ResetPageSizeChoiceForTest();
}

TEST(MemoryPopulatorTest, WithoutWorkersEnsurePopulatesWhatItCovers) {
  Mapping m(64 * kMiB);
  ASSERT_NE(m.data, nullptr);
  MemoryPopulator pop({{m.data, m.size, 0}}, 0);
  pop.Ensure(0, 10 * kMiB, 3 * kMiB);  // steps [8, 12) and [12, 16) MiB
  EXPECT_EQ(ResidentFraction(m.data + 8 * kMiB, 8 * kMiB), 1.0);
  EXPECT_EQ(ResidentFraction(m.data + 32 * kMiB, 32 * kMiB), 0.0);
  EXPECT_EQ(pop.populated_by_callers(), 8 * kMiB);
  EXPECT_EQ(pop.populated_by_workers(), 0u);
}

TEST(MemoryPopulatorTest, WorkersPopulateEverythingOnceAndKeepWrittenBytes) {
  const uint64_t sizes[] = {40 * kMiB + 4096, 24 * kMiB, 0, 6 * kMiB + 123};
  std::vector<std::unique_ptr<Mapping>> maps;
  std::vector<MemoryPopulator::Region> regions;
  uint64_t total = 0;
  for (uint64_t n : sizes) {
    maps.push_back(std::make_unique<Mapping>(std::max<uint64_t>(n, 4096)));
    regions.push_back({n == 0 ? nullptr : maps.back()->data, n, 0});
    total += n;
  }
  // Regions reused from an earlier load: their populated prefix is never touched again.
  regions[1].populated = 8 * kMiB;
  std::memset(maps[1]->data, 0x5a, 8 * kMiB);
  total -= 8 * kMiB;
  MemoryPopulator pop(regions, 2);
  // Readers write each chunk right after Ensure(), from several threads, while workers run.
  std::vector<std::thread> readers;
  for (size_t r = 0; r < regions.size(); ++r) {
    readers.emplace_back([&, r] {
      const MemoryPopulator::Region& g = regions[r];
      for (uint64_t off = g.populated; off < g.size; off += 3 * kMiB + 512) {
        const uint64_t len = std::min<uint64_t>(3 * kMiB + 512, g.size - off);
        pop.Ensure(r, off, len);
        for (uint64_t i = (off + 4095) / 4096 * 4096; i < off + len; i += 4096) {
          g.data[i] = static_cast<std::byte>(i / 4096 * 7 + r);
        }
      }
    });
  }
  for (std::thread& t : readers) t.join();
  pop.Stop();
  EXPECT_EQ(pop.populated_by_workers() + pop.populated_by_callers(), total)
      << "every step populated exactly once";
  for (size_t r = 0; r < regions.size(); ++r) {
    const MemoryPopulator::Region& g = regions[r];
    for (uint64_t i = (g.populated + 4095) / 4096 * 4096; i < g.size; i += 4096) {
      ASSERT_EQ(g.data[i], static_cast<std::byte>(i / 4096 * 7 + r))
          << "region " << r << " byte " << i;
    }
  }
  EXPECT_EQ(maps[1]->data[0], std::byte{0x5a});
}

TEST(MemoryPopulatorTest, EnsureAfterStopStillPopulates) {
  Mapping m(32 * kMiB);
  MemoryPopulator pop({{m.data, m.size, 0}}, 1);
  pop.Stop();
  pop.Ensure(0, 0, m.size);
  EXPECT_EQ(ResidentFraction(m.data, m.size), 1.0);
  EXPECT_EQ(pop.populated_by_workers() + pop.populated_by_callers(), m.size);
}

TEST(HostMemoryCacheTest, FreedArenaIsReusedPopulated) {
  TrimHostMemoryCache();
  std::byte* first = nullptr;
  {
    Result<std::shared_ptr<HostArena>> a = HostArena::Allocate(20 * kMiB);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ((*a)->populated(), 0u);
    first = (*a)->data();
    ASSERT_TRUE(PopulateForWrite(first, 20 * kMiB));
  }
  EXPECT_EQ(CachedHostMemoryBytes(), 20 * kMiB);
  {
    // Smaller: the cached mapping is trimmed to fit and comes populated.
    Result<std::shared_ptr<HostArena>> b = HostArena::Allocate(12 * kMiB + 100);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ((*b)->data(), first);
    EXPECT_EQ((*b)->populated(), 12 * kMiB + 100);
    EXPECT_EQ(CachedHostMemoryBytes(), 0u);
  }
  {
    // Larger: grown, only the old part counts as populated.
    Result<std::shared_ptr<HostArena>> c = HostArena::Allocate(30 * kMiB);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ((*c)->populated(), 12 * kMiB + 4096);
    std::memset((*c)->data(), 1, 30 * kMiB);  // the whole arena is writable
  }
  EXPECT_EQ(ReleaseCachedMemory(), 30 * kMiB);
  EXPECT_EQ(CachedHostMemoryBytes(), 0u);
}

TEST(HostMemoryCacheTest, BoundedByItsLimit) {
  TrimHostMemoryCache();
  SetHostMemoryCacheLimitForTest(16 * kMiB);
  {
    auto a = HostArena::Allocate(10 * kMiB);
    auto b = HostArena::Allocate(10 * kMiB);
    auto c = HostArena::Allocate(20 * kMiB);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  }
  EXPECT_LE(CachedHostMemoryBytes(), 16 * kMiB);
  EXPECT_EQ(CachedHostMemoryBytes(), 10 * kMiB);
  SetHostMemoryCacheLimitForTest(2048 * kMiB);
  TrimHostMemoryCache();
}

}  // namespace
}  // namespace flashload::sink
