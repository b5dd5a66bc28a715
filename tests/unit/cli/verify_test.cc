// load --verify: the loaded bytes against a plain read, and a truncated file under zero-copy views
// (strategy mapped) reported as DATA_LOSS instead of killing the process with SIGBUS.
#include "cli/verify.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "flashload/writer.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::cli {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<TensorToWrite> Tensors(int count, uint64_t elements) {
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < count; ++i) {
    TensorToWrite t;
    t.name = "layer." + std::to_string(i);
    t.dtype = Dtype::kF32;
    t.shape = {elements};
    t.fill = [i](std::span<std::byte> dst, uint64_t off) { testing::FillPositional(dst, off, i); };
    ts.push_back(std::move(t));
  }
  return ts;
}

class VerifyTest : public ::testing::Test {
 protected:
  VerifyTest() : path_(dir_.File("m.safetensors")) {
    EXPECT_THAT(WriteSafetensors(path_, Tensors(4, 256 << 10)), IsOk());  // 4 x 1 MiB
  }
  Result<LoadedModel> LoadMapped() {
    LoadOptions o;
    o.strategy = Strategy::kMapped;
    return Load(path_, o);
  }
  testing::TempDir dir_;
  std::string path_;
};

TEST_F(VerifyTest, MappedLoadVerifiesIdentical) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadMapped());
  ASSERT_THAT(m.report.files.at(0).strategy, HasSubstr("mapped"));
  FL_ASSERT_OK_AND_ASSIGN(VerifyReport r, VerifyModel(m));
  EXPECT_EQ(r.tensors_checked, 4u);
  EXPECT_TRUE(r.mismatches.empty());
}

// Regression: `load --strategy mapped --verify` (and --zero-copy) died of SIGBUS when the file was
// truncated before verify read the views.
TEST_F(VerifyTest, FileTruncatedUnderMappedTensorsIsDataLossNamingTensorAndOffset) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadMapped());
  ASSERT_THAT(m.report.files.at(0).strategy, HasSubstr("mapped"));
  const Header& h = m.headers.at(m.layout.files.at(0).path);
  const TensorInfo& third = h.tensors.at(2);
  // Cut 100 bytes into the third tensor: its first page after the cut's page faults.
  const uint64_t cut = h.data_offset() + third.data_begin + 100;
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(cut)), 0);
  const uint64_t fault = (cut + 4095) / 4096 * 4096;
  EXPECT_THAT(
      VerifyModel(m),
      StatusIs(StatusCode::kDataLoss,
               AllOf(HasSubstr(m.layout.files.at(0).path), HasSubstr("'layer.2'"),
                     HasSubstr(fmt::format("byte offset {}", fault)), HasSubstr("truncated"))));
}

// A file already truncated when it is to be mapped: refused at load time (by the header's size
// check, before any mapping), no views handed out.
TEST(MappedLoadTest, FileShorterThanItsHeaderIsDataLoss) {
  testing::TempDir dir;
  const std::string path = dir.File("short.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(2, 4096)));
  FL_ASSERT_OK_AND_ASSIGN(Header h, ReadHeader(path));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(h.file_size - 5000)), 0);
  LoadOptions o;
  o.strategy = Strategy::kMapped;
  EXPECT_THAT(Load(path, o), StatusIs(StatusCode::kDataLoss, HasSubstr(path)));
}

}  // namespace
}  // namespace flashload::cli
