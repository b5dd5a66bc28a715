#include "cli/baselines.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <memory>

#include "cli/gen.h"
#include "flashload/header.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::cli {
namespace {

using ::testing::HasSubstr;

// A generated 3-shard model (~17 MB) and the checksums every baseline must reproduce.
class BaselinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GenOptions o;
    o.kind = "llm-tiny";
    o.out_dir = dir_.path();
    auto plan = PlanModel(o);
    ASSERT_THAT(plan, IsOk());
    ASSERT_THAT(GenerateModel(o), IsOk());
    XXH3_state_t* data = XXH3_createState();
    XXH3_state_t* whole = XXH3_createState();
    XXH3_64bits_reset(data);
    XXH3_64bits_reset(whole);
    for (const PlannedFile& f : plan->files) {
      files_.push_back(dir_.File(f.path));
      std::vector<std::byte> bytes = testing::ReadFile(files_.back());
      auto h = ParseHeaderFromBytes(bytes, files_.back());
      ASSERT_THAT(h, IsOk());
      XXH3_64bits_update(data, bytes.data() + h->data_offset(), h->data_size());
      XXH3_64bits_update(whole, bytes.data(), bytes.size());
      data_bytes_ += h->data_size();
      file_bytes_ += bytes.size();
    }
    data_checksum_ = XXH3_64bits_digest(data);
    file_checksum_ = XXH3_64bits_digest(whole);
    XXH3_freeState(data);
    XXH3_freeState(whole);
  }

  testing::TempDir dir_;
  std::vector<std::string> files_;
  uint64_t data_bytes_ = 0, file_bytes_ = 0, data_checksum_ = 0, file_checksum_ = 0;
};

TEST_F(BaselinesTest, MmapCopyDeliversEveryTensorByte) {
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult r, MmapCopyBaseline(files_, {.verify = true}));
  EXPECT_EQ(r.name, "mmap+copy");
  EXPECT_EQ(r.bytes, data_bytes_);
  EXPECT_GT(r.seconds, 0);
  EXPECT_GT(r.GbPerSecond(), 0);
  EXPECT_EQ(r.checksum, data_checksum_);
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult fast, MmapCopyBaseline(files_));
  EXPECT_EQ(fast.checksum, std::nullopt);
  EXPECT_EQ(fast.bytes, data_bytes_);
}

TEST_F(BaselinesTest, BufferedReadDeliversEveryFileByte) {
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult r, BufferedReadBaseline(files_, {.verify = true}));
  EXPECT_EQ(r.bytes, file_bytes_);
  EXPECT_EQ(r.checksum, file_checksum_);
}

TEST_F(BaselinesTest, DirectReadDeliversEveryFileByte) {
  DirectReadOptions o;
  o.verify = true;
  o.depths = {1, 4};
  auto r = DirectReadLimit(files_, o);
  if (r.status().code() == StatusCode::kFailedPrecondition) GTEST_SKIP() << r.status().ToString();
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult v, std::move(r));
  EXPECT_EQ(v.bytes, file_bytes_);
  EXPECT_EQ(v.checksum, file_checksum_);
  EXPECT_THAT(v.detail, HasSubstr("O_DIRECT"));
  o.verify = false;
  o.block_bytes = 64 << 10;
  auto discard = DirectReadLimit(files_, o);
  FL_ASSERT_OK(discard.status());
  EXPECT_EQ(discard->bytes, file_bytes_);
  EXPECT_GT(discard->seconds, 0);
  o.block_bytes = 1000;
  EXPECT_THAT(DirectReadLimit(files_, o), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(BaselinesTest, FioMeasuresTheFilesOrSaysItIsMissing) {
  const uint32_t depths[] = {8};
  auto r = FioLimit(files_, depths);
  if (r.status().code() == StatusCode::kNotFound) GTEST_SKIP() << r.status().ToString();
  if (!r.ok()) {  // fio exists but cannot run here (io_uring or O_DIRECT refused): say so
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("fio"));
    GTEST_SKIP() << r.status().ToString();
  }
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult v, std::move(r));
  EXPECT_EQ(v.bytes, file_bytes_);
  EXPECT_GT(v.seconds, 0);
  EXPECT_THAT(v.detail, HasSubstr("iodepth 8"));
}

TEST_F(BaselinesTest, EvictFilesLeavesThemCold) {
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult r, BufferedReadBaseline(files_));
  FL_ASSERT_OK_AND_ASSIGN(double hot, ResidentFractionOf(files_));
  EXPECT_GT(hot, 0.9);
  FL_ASSERT_OK_AND_ASSIGN(double cold, EvictFiles(files_));
  FL_ASSERT_OK_AND_ASSIGN(double again, ResidentFractionOf(files_));
  if (cold > 0.1) GTEST_SKIP() << "this file system keeps pages (tmpfs?): " << cold;
  EXPECT_LT(again, 0.1);
}

TEST_F(BaselinesTest, MissingFileIsNotFound) {
  std::vector<std::string> missing = {dir_.File("nope.safetensors")};
  EXPECT_THAT(MmapCopyBaseline(missing), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(BufferedReadBaseline(missing), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(DirectReadLimit(missing), StatusIs(StatusCode::kNotFound));
}

TEST_F(BaselinesTest, MmapCopyRejectsAFileThatIsNotSafetensors) {
  const std::string bad = dir_.File("bad.safetensors");
  testing::WriteFile(bad, std::string("version https://git-lfs.github.com/spec/v1\n"));
  std::vector<std::string> files = {bad};
  EXPECT_THAT(MmapCopyBaseline(files), StatusIs(StatusCode::kDataLoss));
}

TEST(MemcpyLimitTest, CopiesTheRequestedBytes) {
  FL_ASSERT_OK_AND_ASSIGN(BaselineResult r, MemcpyLimit(10 << 20, 2, 2, 4 << 20));
  EXPECT_EQ(r.bytes, 10u << 20);
  EXPECT_GT(r.seconds, 0);
  EXPECT_THAT(r.detail, HasSubstr("2 threads"));
  EXPECT_THAT(MemcpyLimit(0), StatusIs(StatusCode::kInvalidArgument));
}

TEST(PeakRssMeterTest, SeesAnAllocationThatIsTouched) {
  PeakRssMeter meter;
  if (meter.PeakDeltaBytes() < 0) GTEST_SKIP() << "no /proc/self/clear_refs";
  const size_t n = 64 << 20;
  std::unique_ptr<char[]> p(new char[n]);
  std::memset(p.get(), 1, n);
  asm volatile("" : : "r"(p.get()) : "memory");
  EXPECT_GE(meter.PeakDeltaBytes(), static_cast<int64_t>(n / 2));
}

}  // namespace
}  // namespace flashload::cli
