#include "cli/bench.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>

#include "cli/gen.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using K = BenchMethodKind;

BenchArgs ParseBench(std::vector<std::string> argv) {
  CLI::App app;
  BenchArgs a;
  AddBenchOptions(app, a);
  std::reverse(argv.begin(), argv.end());  // CLI11 takes a reversed vector
  app.parse(argv);
  return a;
}

const BenchMethodPlan* Find(const std::vector<BenchMethodPlan>& plan, K kind) {
  for (const BenchMethodPlan& m : plan) {
    if (m.kind == kind) return &m;
  }
  return nullptr;
}

TEST(BenchOptionsTest, NoMemoryIsWarmedUnlessAsked) {
  EXPECT_FALSE(ParseBench({"model"}).warm_memory);
  EXPECT_FALSE(BenchArgs{}.warm_memory);
  EXPECT_FALSE(DemoArgs{}.warm_memory);
  EXPECT_TRUE(ParseBench({"model", "--warm-memory"}).warm_memory);
  const BenchArgs a = ParseBench({"model", "--runs", "7", "--no-baselines"});
  EXPECT_EQ(a.runs, 7);
  EXPECT_FALSE(a.baselines);
}

TEST(BenchOptionsTest, DemoPassesWarmMemoryOn) {
  CLI::App app;
  DemoArgs a;
  AddDemoOptions(app, a);
  app.parse(std::vector<std::string>{"--warm-memory"});
  EXPECT_TRUE(a.warm_memory);
}

TEST(BenchPlanTest, DefaultRunsNothingWarmed) {
  for (bool cold : {true, false}) {
    for (bool gpu : {false, true}) {
      const auto plan = PlanBenchPhase(BenchArgs{}, {.cold = cold, .gpu = gpu});
      for (const BenchMethodPlan& m : plan) {
        EXPECT_FALSE(m.warmed) << m.name;
        EXPECT_NE(m.role, "warmed") << m.name;
        EXPECT_THAT(m.name, Not(HasSubstr("warm"))) << m.name;
      }
      ASSERT_NE(Find(plan, K::kFlashload), nullptr);
      EXPECT_EQ(Find(plan, K::kFlashload)->role, "flashload");
    }
  }
}

TEST(BenchPlanTest, WarmedVariantIsLabelledAndNeverTheHeadline) {
  BenchArgs a;
  a.warm_memory = true;
  const auto plan = PlanBenchPhase(a, {.cold = true});
  const BenchMethodPlan* warmed = Find(plan, K::kFlashloadWarmed);
  ASSERT_NE(warmed, nullptr);
  EXPECT_TRUE(warmed->warmed);
  EXPECT_EQ(warmed->role, "warmed");
  EXPECT_THAT(warmed->name, HasSubstr("warmed"));
  EXPECT_EQ(std::count_if(plan.begin(), plan.end(), [](const auto& m) { return m.warmed; }), 1);
  EXPECT_EQ(
      std::count_if(plan.begin(), plan.end(), [](const auto& m) { return m.role == "flashload"; }),
      1);
  EXPECT_FALSE(Find(plan, K::kFlashload)->warmed);
}

TEST(BenchPlanTest, FreshMemoryIsALimitBesideStorageWithEveryBaseline) {
  const auto cold = PlanBenchPhase(BenchArgs{}, {.cold = true, .fio = true, .threads = 4});
  for (K k : {K::kFioLimit, K::kFreshTouchSmall, K::kFreshTouchHuge}) {
    ASSERT_NE(Find(cold, k), nullptr);
    EXPECT_EQ(Find(cold, k)->role, "limit");
  }
  EXPECT_EQ(Find(cold, K::kFioLimit)->limit, "storage");
  EXPECT_EQ(Find(cold, K::kFreshTouchSmall)->limit, "fresh-memory");
  EXPECT_THAT(Find(cold, K::kFreshTouchSmall)->name, HasSubstr("4 KiB"));
  EXPECT_THAT(Find(cold, K::kFreshTouchHuge)->name, HasSubstr("MADV_HUGEPAGE"));
  EXPECT_NE(Find(cold, K::kMmapCopy), nullptr);
  EXPECT_NE(Find(cold, K::kBufferedRead), nullptr);
  EXPECT_EQ(Find(cold, K::kDirectReadLimit), nullptr);

  const auto no_fio = PlanBenchPhase(BenchArgs{}, {.cold = true, .fio = false});
  EXPECT_NE(Find(no_fio, K::kDirectReadLimit), nullptr);

  const auto hot = PlanBenchPhase(BenchArgs{}, {.cold = false, .threads = 4});
  EXPECT_EQ(Find(hot, K::kFreshTouchHuge)->role, "limit");
  EXPECT_EQ(Find(hot, K::kFreshMemcpy)->role, "reference");
  EXPECT_THAT(Find(hot, K::kFreshMemcpy)->name, HasSubstr("4-thread"));
  EXPECT_EQ(Find(hot, K::kFioLimit), nullptr);

  BenchArgs bare;
  bare.baselines = false;
  EXPECT_EQ(Find(PlanBenchPhase(bare, {.cold = true}), K::kMmapCopy), nullptr);
}

TEST(BenchPlanTest, GpuLoadsKeepFreshMemoryAsAReference) {
  const auto cold = PlanBenchPhase(BenchArgs{}, {.cold = true, .gpu = true});
  EXPECT_EQ(Find(cold, K::kFreshTouchHuge)->role, "reference");
  EXPECT_EQ(Find(cold, K::kPinnedH2D)->role, "reference");
  const auto hot = PlanBenchPhase(BenchArgs{}, {.cold = false, .gpu = true});
  EXPECT_EQ(Find(hot, K::kPinnedH2D)->role, "limit");
  EXPECT_EQ(Find(hot, K::kFreshTouchSmall)->role, "reference");
}

TEST(HeadlineLimitTest, ColdIsTheLowerOfStorageAndTheBetterPageSize) {
  BenchLimit l =
      HeadlineLimit(true, false, {.storage = 2.0, .fresh_small = 0.8, .fresh_huge = 1.2});
  EXPECT_DOUBLE_EQ(l.gbps, 1.2);
  EXPECT_EQ(l.name, "fresh memory");
  EXPECT_EQ(l.fresh_memory_pages, "MADV_HUGEPAGE");
  EXPECT_DOUBLE_EQ(l.storage_gbps, 2.0);

  l = HeadlineLimit(true, false, {.storage = 1.5, .fresh_small = 3.0, .fresh_huge = 0.5});
  EXPECT_DOUBLE_EQ(l.gbps, 1.5);
  EXPECT_EQ(l.name, "storage");
  EXPECT_EQ(l.fresh_memory_pages, "4 KiB");
  EXPECT_DOUBLE_EQ(l.fresh_memory_gbps, 3.0);

  // A limit that failed to measure (0) does not become the headline.
  EXPECT_DOUBLE_EQ(HeadlineLimit(true, false, {.storage = 1.5}).gbps, 1.5);
  EXPECT_DOUBLE_EQ(HeadlineLimit(true, false, {.fresh_small = 0.7}).gbps, 0.7);
  EXPECT_DOUBLE_EQ(HeadlineLimit(true, false, {}).gbps, 0);
}

TEST(HeadlineLimitTest, HotIsTheFreshMemorySupply) {
  const BenchLimit l =
      HeadlineLimit(false, false, {.storage = 9.0, .fresh_small = 4.0, .fresh_huge = 3.0});
  EXPECT_DOUBLE_EQ(l.gbps, 4.0);
  EXPECT_EQ(l.name, "fresh memory");
}

TEST(HeadlineLimitTest, GpuIsStorageColdAndHostToDeviceHot) {
  const BenchLimitInputs in{.storage = 2.0, .fresh_small = 0.5, .fresh_huge = 0.5, .device = 20};
  EXPECT_DOUBLE_EQ(HeadlineLimit(true, true, in).gbps, 2.0);
  EXPECT_DOUBLE_EQ(HeadlineLimit(false, true, in).gbps, 20);
}

// The whole command on a small model, hot only (no fio, no root): the table and the JSON say what
// ran. Nothing here is timed.
class BenchRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GenOptions o;
    o.kind = "llm-tiny";
    o.out_dir = dir_.File("model");
    ASSERT_THAT(GenerateModel(o), IsOk());
    args_.path = o.out_dir;
    args_.runs = 1;
    args_.cold = false;
    args_.baselines = false;
    args_.json_out = dir_.File("bench.json");
  }

  std::string Json() const {
    std::ifstream f(args_.json_out);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  testing::TempDir dir_;
  BenchArgs args_;
};

TEST_F(BenchRunTest, DefaultRunWarmsNothingAndReportsTheFreshMemoryLimit) {
  ::testing::internal::CaptureStdout();
  const int rc = RunBench(args_);
  const std::string table = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, 0) << table;
  EXPECT_THAT(table, HasSubstr("limit: fresh memory first touch, 4 KiB pages"));
  EXPECT_THAT(table, HasSubstr("limit: fresh memory first touch, MADV_HUGEPAGE"));
  EXPECT_THAT(table, HasSubstr("nothing warmed"));
  EXPECT_THAT(table, Not(HasSubstr("warmed (")));
  const std::string json = Json();
  EXPECT_THAT(json, HasSubstr("\"warm_memory\":false"));
  EXPECT_THAT(json, Not(HasSubstr("\"warmed\":true")));
  EXPECT_THAT(json, HasSubstr("\"limit\":\"fresh-memory\""));
  EXPECT_THAT(json, HasSubstr("\"flashload_of_fresh_memory\""));
}

TEST_F(BenchRunTest, WarmMemoryAddsALabelledVariantBeside) {
  args_.warm_memory = true;
  ::testing::internal::CaptureStdout();
  const int rc = RunBench(args_);
  const std::string table = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, 0) << table;
  EXPECT_THAT(table, HasSubstr("flashload, warmed"));
  EXPECT_THAT(table, HasSubstr("warmed (not a headline)"));
  const std::string json = Json();
  EXPECT_THAT(json, HasSubstr("\"warm_memory\":true"));
  EXPECT_THAT(json, HasSubstr("\"role\":\"warmed\",\"limit\":\"\",\"warmed\":true"));
  EXPECT_THAT(json, HasSubstr("\"role\":\"flashload\",\"limit\":\"\",\"warmed\":false"));
}

}  // namespace
}  // namespace flashload::cli
