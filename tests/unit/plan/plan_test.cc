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
  ASSERT_EQ(f.ranges.size(), 1u);
  EXPECT_EQ(f.read_begin(), 4096u);
  EXPECT_EQ(f.ranges[0].end, 16384u);  // 14100 rounded up
  EXPECT_EQ(*f.ArenaOffset(5000), 5000u - 4096u);
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

// A tensor of `dtype` and `shape` whose data starts at file offset 1000.
TensorInfo Tensor2(Dtype dtype, std::vector<uint64_t> shape) {
  TensorInfo t;
  t.name = "w";
  t.dtype = dtype;
  t.shape = std::move(shape);
  uint64_t n = 1;
  for (uint64_t d : t.shape) n *= d;
  t.data_begin = 0;
  t.data_end = n * DtypeBits(dtype) / 8;
  return t;
}

std::vector<std::pair<uint64_t, uint64_t>> Runs(const PlannedTensor& t) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const Segment& s : t.segments) out.emplace_back(s.offset, s.bytes);
  return out;
}

using Pairs = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(PlanTensorPartTest, WholeAndFullRangesAreOneRun) {
  const TensorInfo t = Tensor2(Dtype::kF32, {10, 6});
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor whole, PlanTensorPart(t, 0, 1000, {}, "f"));
  EXPECT_TRUE(whole.whole);
  EXPECT_EQ(Runs(whole), (Pairs{{1000, 240}}));
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor full,
                          PlanTensorPart(t, 0, 1000, TensorPart::Along(1, 0, 6), "f"));
  EXPECT_TRUE(full.whole);
  EXPECT_EQ(full.shape, (std::vector<uint64_t>{10, 6}));
}

TEST(PlanTensorPartTest, RowsAreOneRun) {
  const TensorInfo t = Tensor2(Dtype::kF32, {10, 6});
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p,
                          PlanTensorPart(t, 0, 1000, TensorPart::Along(0, 2, 5), "f"));
  EXPECT_FALSE(p.whole);
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{3, 6}));
  EXPECT_EQ(Runs(p), (Pairs{{1000 + 2 * 24, 3 * 24}}));
  EXPECT_EQ(p.bytes(), 72u);
}

TEST(PlanTensorPartTest, ColumnsAreOneRunPerRow) {
  const TensorInfo t = Tensor2(Dtype::kF32, {4, 6});
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p,
                          PlanTensorPart(t, 0, 1000, TensorPart::Along(1, 1, 3), "f"));
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(Runs(p), (Pairs{{1004, 8}, {1028, 8}, {1052, 8}, {1076, 8}}));
}

TEST(PlanTensorPartTest, MiddleDimensionOfThree) {
  const TensorInfo t = Tensor2(Dtype::kBF16, {2, 5, 3});
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p,
                          PlanTensorPart(t, 0, 0, TensorPart::Along(1, 1, 3), "f"));
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{2, 2, 3}));
  // Row i of dim 0 is 30 bytes; indices 1..2 of dim 1 are bytes [6, 18) of it.
  EXPECT_EQ(Runs(p), (Pairs{{6, 12}, {36, 12}}));
}

TEST(PlanTensorPartTest, FusedBlocksConcatenateAndAdjacentRunsMerge) {
  const TensorInfo t = Tensor2(Dtype::kU8, {12, 2});
  TensorPart part;
  part.dims = {{{0, 2}, {4, 6}, {8, 10}}};
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p, PlanTensorPart(t, 0, 0, part, "f"));
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{6, 2}));
  EXPECT_EQ(Runs(p), (Pairs{{0, 4}, {8, 4}, {16, 4}}));
  part.dims = {{{0, 2}, {2, 3}}};
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor merged, PlanTensorPart(t, 0, 0, part, "f"));
  EXPECT_EQ(Runs(merged), (Pairs{{0, 6}}));
  // Fused blocks along dimension 1: every row holds a run of each block, in block order.
  const TensorInfo wide = Tensor2(Dtype::kU8, {2, 8});
  part.dims = {{}, {{0, 1}, {4, 6}}};
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor cols, PlanTensorPart(wide, 0, 0, part, "f"));
  EXPECT_EQ(cols.shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(Runs(cols), (Pairs{{0, 1}, {4, 2}, {8, 1}, {12, 2}}));
}

TEST(PlanTensorPartTest, BoxOverTwoDimensions) {
  const TensorInfo t = Tensor2(Dtype::kU8, {5, 10});
  TensorPart part;
  part.dims = {{{1, 3}}, {{2, 4}}};
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p, PlanTensorPart(t, 0, 0, part, "f"));
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{2, 2}));
  EXPECT_EQ(Runs(p), (Pairs{{12, 2}, {22, 2}}));
}

TEST(PlanTensorPartTest, EmptyPartReadsNothing) {
  const TensorInfo t = Tensor2(Dtype::kF16, {3, 4});
  FL_ASSERT_OK_AND_ASSIGN(PlannedTensor p,
                          PlanTensorPart(t, 0, 0, TensorPart::Along(0, 3, 3), "f"));
  EXPECT_EQ(p.shape, (std::vector<uint64_t>{0, 4}));
  EXPECT_TRUE(p.segments.empty());
}

TEST(PlanTensorPartTest, PartsThatDoNotFitAreRefusedNamingTheTensor) {
  const TensorInfo t = Tensor2(Dtype::kF32, {4, 6});
  auto refused = [&](const TensorPart& part, std::string_view words) {
    Result<PlannedTensor> r = PlanTensorPart(t, 0, 0, part, "model.safetensors");
    ASSERT_THAT(r, StatusIs(StatusCode::kInvalidArgument));
    EXPECT_NE(r.status().message().find("model.safetensors: tensor 'w'"), std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  };
  refused(TensorPart::Along(2, 0, 1), "a part cannot select along dimension 2");
  refused(TensorPart::Along(1, 2, 7), "indices [2, 7) of dimension 1 are outside it");
  refused(TensorPart::Along(0, 3, 2), "outside");
  TensorPart overlap;
  overlap.dims = {{{0, 2}, {1, 3}}};
  refused(overlap, "must be ascending and must not overlap");
  // F4: two elements per byte; a part starting at an odd column cuts a byte.
  const TensorInfo f4 = Tensor2(Dtype::kF4, {4, 4});
  Result<PlannedTensor> cut = PlanTensorPart(f4, 0, 0, TensorPart::Along(1, 1, 2), "q.safetensors");
  ASSERT_THAT(cut, StatusIs(StatusCode::kInvalidArgument));
  EXPECT_NE(cut.status().message().find("whole bytes"), std::string::npos);
  FL_EXPECT_OK(PlanTensorPart(f4, 0, 0, TensorPart::Along(1, 2, 4), "q.safetensors").status());
}

TEST(PlanTest, SelectionPlansOnlyTheNamedTensorsAndMergesSmallGaps) {
  ModelLayout layout;
  layout.root = "m";
  layout.files.push_back({"unet", "a.safetensors"});
  // Data at 8192; t0 = [0, 1 MiB), t1 = [1 MiB, 1 MiB + 10), t2 = 4 MiB after it.
  Header h = MakeHeader(8192 - 8, {1 << 20, 10, 4 << 20, 100});
  TensorSelection sel;
  sel.tensors["unet/t1"] = {};
  sel.tensors["unet/t3"] = {};
  PlanOptions po;
  po.selection = &sel;
  FL_ASSERT_OK_AND_ASSIGN(LoadPlan plan, BuildPlan(layout, {{"a.safetensors", h}}, po));
  const FilePlan& f = plan.files[0];
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_TRUE(f.selective);
  ASSERT_EQ(f.ranges.size(), 2u);  // a 4 MiB gap is not worth reading on a local disk
  EXPECT_EQ(f.data_bytes(), 110u);
  EXPECT_EQ(f.read_bytes(), 4096u + 110);  // the last range ends at the end of the file
  EXPECT_EQ(f.ranges[1].arena_offset, 4096u);
  EXPECT_EQ(*f.ArenaOffset(8192 + (1 << 20)), 0u);
  EXPECT_EQ(*f.ArenaOffset(8192 + (5 << 20) + 10), 4096u + ((8192 + (5 << 20) + 10) % 4096));
  EXPECT_FALSE(f.ArenaOffset(8192).ok());
  // A larger merge gap reads the 4 MiB between them instead of a second request.
  plan::FilePlan merged = f;
  MergeRanges(merged, 0, 8 << 20, 4096, 1 << 20);
  ASSERT_EQ(merged.ranges.size(), 1u);
  EXPECT_EQ(merged.chunks.size(), 5u);
  EXPECT_NE(DescribePlan(plan).find("2 of 4 tensors"), std::string::npos) << DescribePlan(plan);
  // A name the model lacks.
  sel.tensors["unet/nope"] = {};
  Result<LoadPlan> missing = BuildPlan(layout, {{"a.safetensors", h}}, po);
  ASSERT_THAT(missing, StatusIs(StatusCode::kNotFound));
  EXPECT_NE(missing.status().message().find("'unet/nope'"), std::string::npos);
}

}  // namespace
}  // namespace flashload::plan
