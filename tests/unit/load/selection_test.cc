// Load() with a TensorSelection: only the named tensors, and only the bytes of their parts, are
// read; every part equals the same slice of the whole tensor, through every strategy, through the
// converting (staged) path, and for every rank of a tensor-parallel split.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "flashload/convert.h"
#include "flashload/loader.h"
#include "flashload/writer.h"
#include "support/status_matchers.h"
#include "support/tensor_slices.h"
#include "support/test_files.h"

namespace flashload {
namespace {

struct Stored {
  std::string name;
  Dtype dtype;
  std::vector<uint64_t> shape;
};

// torch.tensor_split(t, world, dim)[rank] as indices of `dim`.
IndexRange SplitOf(uint64_t n, uint64_t world, uint64_t rank) {
  const uint64_t base = n / world;
  const uint64_t extra = n % world;
  const uint64_t start = rank * base + std::min(rank, extra);
  return {start, start + base + (rank < extra ? 1 : 0)};
}

class SelectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<Stored> specs = {
        {"a", Dtype::kF32, {37, 11}}, {"b", Dtype::kBF16, {8, 5, 3}},
        {"c", Dtype::kU8, {1000}},    {"big", Dtype::kF32, {512, 300}},
        {"e", Dtype::kF16, {0, 4}},   {"tail", Dtype::kF16, {64, 64}},
    };
    std::vector<TensorToWrite> ts;
    for (size_t i = 0; i < specs.size(); ++i) {
      ts.push_back(
          testing::PositionalTensor(specs[i].name, specs[i].dtype, specs[i].shape, 77 + i));
    }
    path_ = dir_.File("m.safetensors");
    FL_ASSERT_OK(WriteSafetensors(path_, ts));
    bytes_ = testing::ReadFile(path_);
    FL_ASSERT_OK_AND_ASSIGN(header_, ReadHeader(path_));
  }

  std::span<const std::byte> Whole(const std::string& name) const {
    const TensorInfo* t = header_.Find(name);
    return std::span<const std::byte>(bytes_).subspan(header_.data_offset() + t->data_begin,
                                                      t->byte_size());
  }

  std::vector<std::byte> Expected(const std::string& name, const TensorPart& part) const {
    const TensorInfo* t = header_.Find(name);
    return testing::SliceOf(Whole(name), t->shape, DtypeBits(t->dtype) / 8, part);
  }

  static std::vector<std::byte> BytesOf(const Tensor& t) {
    const auto* p = static_cast<const std::byte*>(t.data());
    return std::vector<std::byte>(p, p + t.byte_size());
  }

  Result<LoadedModel> LoadParts(const std::map<std::string, TensorPart>& parts,
                                LoadOptions options = {}) {
    auto sel = std::make_shared<TensorSelection>();
    sel->tensors = parts;
    options.selection = sel;
    return Load(path_, options);
  }

  testing::TempDir dir_;
  std::string path_;
  std::vector<std::byte> bytes_;
  Header header_;
};

std::map<std::string, TensorPart> MixedParts() {
  TensorPart fused;
  fused.dims = {{{0, 3}, {10, 12}, {30, 37}}};
  TensorPart box;
  box.dims = {{{2, 6}}, {{1, 4}}, {{1, 2}}};
  return {
      {"a", fused},
      {"b", box},
      {"c", TensorPart::Along(0, 100, 900)},
      {"big", TensorPart::Along(1, 75, 150)},
      {"e", TensorPart::Along(1, 1, 3)},
  };
}

TEST_F(SelectionTest, EveryPartEqualsTheSliceOfTheWholeTensorForEveryStrategy) {
  for (Strategy s : {Strategy::kAuto, Strategy::kBuffered, Strategy::kDirect, Strategy::kMmap,
                     Strategy::kNetwork, Strategy::kMapped}) {
    SCOPED_TRACE(std::string(StrategyName(s)));
    LoadOptions o;
    o.strategy = s;
    o.zero_copy_hot = true;
    const auto parts = MixedParts();
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts(parts, o));
    ASSERT_EQ(m.tensors.size(), parts.size());  // "tail" was not asked for
    for (const auto& [name, part] : parts) {
      SCOPED_TRACE(name);
      const Tensor& t = m.tensors.at(name);
      EXPECT_EQ(BytesOf(t), Expected(name, part));
    }
    EXPECT_EQ(m.tensors.at("a").shape(), (std::vector<uint64_t>{12, 11}));
    EXPECT_EQ(m.tensors.at("b").shape(), (std::vector<uint64_t>{4, 3, 1}));
    EXPECT_EQ(m.tensors.at("big").shape(), (std::vector<uint64_t>{512, 75}));
    EXPECT_EQ(m.tensors.at("e").shape(), (std::vector<uint64_t>{0, 2}));
    uint64_t selected = 0;
    for (const auto& [name, part] : parts) selected += Expected(name, part).size();
    EXPECT_EQ(m.report.selected_bytes, selected);
    EXPECT_GE(m.report.bytes, selected);
  }
}

TEST_F(SelectionTest, RowsReadOnlyTheirBytes) {
  // Rows 100..199 of a 600 KiB tensor: at most the aligned pages around them are read.
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts({{"big", TensorPart::Along(0, 100, 200)}}));
  const uint64_t want = 100 * 300 * 4;
  EXPECT_EQ(m.report.selected_bytes, want);
  EXPECT_LE(m.report.bytes, want + 2 * 4096);
  EXPECT_EQ(m.report.files.at(0).ranges, 1u);
  EXPECT_EQ(BytesOf(m.tensors.at("big")), Expected("big", TensorPart::Along(0, 100, 200)));
}

TEST_F(SelectionTest, ConvertedPartsGoThroughTheStagedPath) {
  LoadOptions o;
  o.dtype = "F32=F16,BF16=F32";
  const auto parts = MixedParts();
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts(parts, o));
  for (const auto& [name, part] : parts) {
    SCOPED_TRACE(name);
    const TensorInfo* info = header_.Find(name);
    const Tensor& t = m.tensors.at(name);
    const std::vector<std::byte> stored = Expected(name, part);
    const uint64_t n = stored.size() / (DtypeBits(info->dtype) / 8);
    FL_ASSERT_OK_AND_ASSIGN(Dtype to, TargetDtype(name, info->dtype, *ParseConvertSpec(o.dtype)));
    std::vector<std::byte> want(n * DtypeBits(to) / 8);
    if (to == info->dtype) {
      want = stored;
    } else {
      FL_ASSERT_OK(ConvertElements(info->dtype, to, stored.data(), want.data(), n));
    }
    EXPECT_EQ(t.dtype(), to);
    EXPECT_EQ(BytesOf(t), want);
  }
}

TEST_F(SelectionTest, TensorParallelRanksTogetherHoldEachTensorOnce) {
  for (uint64_t world : {1u, 2u, 3u, 4u, 8u}) {
    for (uint32_t dim : {0u, 1u}) {
      std::vector<std::vector<std::byte>> pieces;
      for (uint64_t rank = 0; rank < world; ++rank) {
        const IndexRange r = SplitOf(header_.Find("a")->shape[dim], world, rank);
        const TensorPart part = TensorPart::Along(dim, r.start, r.stop);
        FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts({{"a", part}}));
        pieces.push_back(BytesOf(m.tensors.at("a")));
        EXPECT_EQ(pieces.back(), Expected("a", part));
      }
      uint64_t total = 0;
      for (const auto& p : pieces) total += p.size();
      EXPECT_EQ(total, Whole("a").size()) << "world " << world << " dim " << dim;
      if (dim == 0) {
        std::vector<std::byte> joined;
        for (const auto& p : pieces) joined.insert(joined.end(), p.begin(), p.end());
        EXPECT_EQ(joined, std::vector<std::byte>(Whole("a").begin(), Whole("a").end()));
      }
    }
  }
}

TEST_F(SelectionTest, TensorsOutliveTheLoadAndGatheredPartsStayIntact) {
  Tensor kept;
  {
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts(MixedParts()));
    kept = m.tensors.at("big");
  }
  EXPECT_EQ(BytesOf(kept), Expected("big", TensorPart::Along(1, 75, 150)));
}

TEST_F(SelectionTest, MissingNamesAndBadPartsAreErrorsNamingTheTensor) {
  Result<LoadedModel> missing = LoadParts({{"nope", {}}});
  ASSERT_THAT(missing, StatusIs(StatusCode::kNotFound));
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
  Result<LoadedModel> bad = LoadParts({{"a", TensorPart::Along(2, 0, 1)}});
  ASSERT_THAT(bad, StatusIs(StatusCode::kInvalidArgument));
  EXPECT_NE(bad.status().message().find("m.safetensors: tensor 'a'"), std::string::npos)
      << bad.status().message();
}

TEST_F(SelectionTest, AnEmptySelectionReadsNothing) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, LoadParts({}));
  EXPECT_TRUE(m.tensors.empty());
  EXPECT_EQ(m.report.bytes, 0u);
}

}  // namespace
}  // namespace flashload
