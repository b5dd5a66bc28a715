#include "plan/plan.h"

#include <gtest/gtest.h>

#include "support/status_matchers.h"

namespace flashload::plan {
namespace {

Header MakeHeader(uint64_t header_len, std::vector<uint64_t> sizes) {
  Header h;
  h.header_length = header_len;
  uint64_t off = 0;
  int i = 0;
  for (uint64_t s : sizes) {
    TensorInfo t;
    t.name = "t" + std::to_string(i++);
    t.dtype = Dtype::kU8;
    t.shape = {s};
    t.data_begin = off;
    t.data_end = off + s;
    off += s;
    h.tensors.push_back(t);
  }
  h.file_size = 8 + header_len + off;
  return h;
}

TEST(PlanTest, SplitRangeCoversTheRangeExactly) {
  auto chunks = SplitRange(3, 4096, 4096 + 10 * 1000 + 7, 1000);
  ASSERT_EQ(chunks.size(), 11u);
  uint64_t expect = 4096;
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.file, 3u);
    EXPECT_EQ(c.offset, expect);
    EXPECT_EQ(c.arena_offset, expect - 4096);
    expect += c.length;
  }
  EXPECT_EQ(expect, 4096u + 10 * 1000 + 7);
  EXPECT_TRUE(SplitRange(0, 10, 10, 4).empty());
}

TEST(PlanTest, ReadRangeIsTheAlignedDataSection) {
  ModelLayout layout;
  layout.files.push_back({"unet", "a.safetensors"});
  Header h = MakeHeader(5000 - 8, {100, 0, 9000});  // data starts at byte 5000
  PlanOptions po;
  po.chunk_bytes = 8192;
  FL_ASSERT_OK_AND_ASSIGN(LoadPlan plan, BuildPlan(layout, {{"a.safetensors", h}}, po));
  const FilePlan& f = plan.files[0];
  EXPECT_EQ(f.read_begin, 4096u);
  EXPECT_EQ(f.read_end, 16384u);  // 14100 rounded up
  EXPECT_EQ(f.tensor_arena_offset(h.tensors[0]), 5000u - 4096u);
  EXPECT_EQ(f.chunks.size(), 2u);
  EXPECT_EQ(plan.data_bytes(), 9100u);
  EXPECT_EQ(plan.tensor_count(), 3u);
  EXPECT_NE(DescribePlan(plan).find("2 chunks"), std::string::npos);
}

TEST(PlanTest, EmptyDataSectionHasNoChunks) {
  ModelLayout layout;
  layout.files.push_back({"", "empty.safetensors"});
  Header h = MakeHeader(16, {});
  FL_ASSERT_OK_AND_ASSIGN(LoadPlan plan, BuildPlan(layout, {{"empty.safetensors", h}}, {}));
  EXPECT_TRUE(plan.files[0].chunks.empty());
  EXPECT_EQ(plan.arena_bytes(), 0u);
}

TEST(PlanTest, RejectsBadChunkAndAlignment) {
  ModelLayout layout;
  PlanOptions po;
  po.alignment = 3000;
  EXPECT_THAT(BuildPlan(layout, {}, po), StatusIs(StatusCode::kInvalidArgument));
  po.alignment = 4096;
  po.chunk_bytes = 5000;
  EXPECT_THAT(BuildPlan(layout, {}, po), StatusIs(StatusCode::kInvalidArgument));
}

TEST(PlanTest, MissingHeaderIsAnError) {
  ModelLayout layout;
  layout.files.push_back({"", "x.safetensors"});
  EXPECT_FALSE(BuildPlan(layout, {}, {}).ok());
}

TEST(PlanTest, TensorAtFileOffsetSkipsEmptyTensors) {
  FilePlan f;
  f.header = MakeHeader(92, {10, 0, 20});  // data at 100
  EXPECT_EQ(TensorAtFileOffset(f, 50), nullptr);
  EXPECT_EQ(TensorAtFileOffset(f, 100)->name, "t0");
  EXPECT_EQ(TensorAtFileOffset(f, 109)->name, "t0");
  EXPECT_EQ(TensorAtFileOffset(f, 110)->name, "t2");
  EXPECT_EQ(TensorAtFileOffset(f, 129)->name, "t2");
  EXPECT_EQ(TensorAtFileOffset(f, 130), nullptr);
}

}  // namespace
}  // namespace flashload::plan
