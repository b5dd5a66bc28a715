// Load() end to end on real files: every strategy gives identical bytes, tensors outlive the model,
// sharded checkpoints and diffusers folders resolve, and failures leave nothing behind.
#include "flashload/loader.h"

#include <dlpack/dlpack.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/strategy.h"
#include "flashload/header.h"
#include "flashload/writer.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Position-encoded tensor bytes keyed by the tensor's index, so misplaced bytes are caught.
std::vector<TensorToWrite> Tensors(int count, uint64_t elements, uint64_t seed) {
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < count; ++i) {
    ts.push_back(testing::PositionalTensor(
        "blocks." + std::to_string(i) + ".weight", i % 3 == 0 ? Dtype::kF32 : Dtype::kBF16,
        {elements + static_cast<uint64_t>(i) * 17, 3}, seed * 1000 + i));
  }
  return ts;
}

void ExpectPositional(const TensorMap& tensors, const std::string& prefix, int count,
                      uint64_t seed) {
  for (int i = 0; i < count; ++i) {
    const std::string name = prefix + "blocks." + std::to_string(i) + ".weight";
    auto it = tensors.find(name);
    ASSERT_NE(it, tensors.end()) << name;
    EXPECT_EQ(testing::FirstPositionMismatch(it->second.bytes(), 0, seed * 1000 + i), -1) << name;
  }
}

// Not /tmp (often tmpfs, which refuses O_DIRECT): the direct path must be exercised.
class LoaderTest : public ::testing::Test {
 protected:
  LoaderTest() { setenv("TMPDIR", "/var/tmp", 1); }
  testing::TempDir dir_;
};

TEST_F(LoaderTest, EveryStrategyLoadsIdenticalBytes) {
  const std::string path = dir_.File("model.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(37, 5000, 1)));
  for (Strategy s : {Strategy::kAuto, Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap,
                     Strategy::kNetwork, Strategy::kMapped}) {
    LoadOptions o;
    o.strategy = s;
    o.chunk_bytes = 64 << 10;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    EXPECT_EQ(m.tensors.size(), 37u);
    ExpectPositional(m.tensors, "", 37, 1);
    ASSERT_EQ(m.report.files.size(), 1u);
    EXPECT_THAT(m.report.files[0].strategy,
                HasSubstr(StrategyName(s == Strategy::kAuto ? Strategy::kBuffered : s)))
        << "a freshly written file is in the page cache";
  }
}

// A process that loads model after model reuses the memory an earlier load freed: it comes back
// populated (no first-touch cost), holds exactly the new file's bytes, and
// ReleaseCachedMemory() frees what is kept.
TEST_F(LoaderTest, MemoryFreedByALoadIsReusedByTheNext) {
  const std::string a = dir_.File("a.safetensors");
  const std::string b = dir_.File("b.safetensors");
  FL_ASSERT_OK(WriteSafetensors(a, Tensors(40, 60000, 3)));
  FL_ASSERT_OK(WriteSafetensors(b, Tensors(40, 50000, 4)));
  (void)ReleaseCachedMemory();
  for (Strategy s : {Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap}) {
    LoadOptions o;
    o.strategy = s;
    uint64_t first_bytes = 0;
    {
      FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(a, o));
      ExpectPositional(m.tensors, "", 40, 3);
      EXPECT_EQ(m.report.memory_reused_bytes, 0u);
      EXPECT_GE(m.report.memory_populated_ahead + m.report.memory_populated_on_demand,
                m.report.bytes - 8192);
      EXPECT_FALSE(m.report.page_size.empty());
      first_bytes = m.report.bytes;
    }  // every tensor of `a` is gone: its memory goes to the cache
    {
      FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(b, o));
      ExpectPositional(m.tensors, "", 40, 4);
      EXPECT_GT(m.report.memory_reused_bytes, 0u) << StrategyName(s);
      EXPECT_LE(m.report.memory_reused_bytes, first_bytes + 8192);
    }
    EXPECT_GT(ReleaseCachedMemory(), 0u) << StrategyName(s);
    EXPECT_EQ(ReleaseCachedMemory(), 0u) << "everything kept was freed";
  }
}

TEST_F(LoaderTest, DataSectionAlignedTo4096GivesPageAlignedTensorsUnderDirectIo) {
  const std::string path = dir_.File("aligned.safetensors");
  WriteOptions wo;
  wo.alignment = 4096;
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(5, 1024, 2), wo));
  LoadOptions o;
  o.strategy = Strategy::kDirect;
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
  ExpectPositional(m.tensors, "", 5, 2);
  const Header& h = m.headers.at(path);
  EXPECT_EQ(h.data_offset() % 4096, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.tensors.at(h.tensors[0].name).data()) % 4096, 0u);
}

TEST_F(LoaderTest, TensorsOutliveTheModelAndExportThroughDlpack) {
  const std::string path = dir_.File("m.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(4, 100, 3)));
  Tensor kept;
  DLManagedTensor* dl = nullptr;
  {
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path));
    kept = m.tensors.at("blocks.1.weight");
    dl = m.tensors.at("blocks.2.weight").ToDlpack();
  }
  std::filesystem::remove(path);
  EXPECT_EQ(testing::FirstPositionMismatch(kept.bytes(), 0, 3001), -1);
  ASSERT_NE(dl, nullptr);
  EXPECT_EQ(dl->dl_tensor.ndim, 2);
  EXPECT_EQ(dl->dl_tensor.shape[0], 100 + 2 * 17);
  EXPECT_EQ(dl->dl_tensor.dtype.code, kDLBfloat);
  EXPECT_EQ(dl->dl_tensor.device.device_type, kDLCPU);
  const auto* bytes = static_cast<const std::byte*>(dl->dl_tensor.data);
  EXPECT_EQ(testing::FirstPositionMismatch({bytes, (100 + 34) * 3 * 2}, 0, 3002), -1);
  dl->deleter(dl);
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST_F(LoaderTest, ShardedCheckpointLoadsAsOneModel) {
  FL_ASSERT_OK(WriteSafetensors(dir_.File("a.safetensors"), Tensors(3, 100, 4)));
  auto second = Tensors(6, 100, 4);
  second.erase(second.begin(), second.begin() + 3);
  FL_ASSERT_OK(WriteSafetensors(dir_.File("b.safetensors"), second));
  WriteText(dir_.File("model.safetensors.index.json"),
            R"({"metadata":{"total_size":1},"weight_map":{"blocks.0.weight":"a.safetensors",
            "blocks.1.weight":"a.safetensors","blocks.2.weight":"a.safetensors",
            "blocks.3.weight":"b.safetensors","blocks.4.weight":"b.safetensors",
            "blocks.5.weight":"b.safetensors"}})");
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(dir_.path()));
  EXPECT_EQ(m.tensors.size(), 6u);
  ExpectPositional(m.tensors, "", 6, 4);

  // The index names a tensor the shard does not hold.
  WriteText(dir_.File("model.safetensors.index.json"),
            R"({"weight_map":{"blocks.0.weight":"a.safetensors","blocks.1.weight":"b.safetensors",
            "blocks.2.weight":"a.safetensors","blocks.3.weight":"b.safetensors",
            "blocks.4.weight":"b.safetensors","blocks.5.weight":"b.safetensors"}})");
  EXPECT_THAT(Load(dir_.path()), StatusIs(StatusCode::kDataLoss, HasSubstr("blocks.1.weight")));
}

TEST_F(LoaderTest, DiffusersFolderNamesTensorsByComponent) {
  std::filesystem::create_directories(dir_.File("unet"));
  std::filesystem::create_directories(dir_.File("vae"));
  std::filesystem::create_directories(dir_.File("scheduler"));
  WriteText(
      dir_.File("model_index.json"),
      R"({"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNet2DConditionModel"],)"
      R"("vae":["diffusers","AutoencoderKL"],"scheduler":["diffusers","PNDMScheduler"]})");
  WriteText(dir_.File("scheduler/scheduler_config.json"), "{}");
  FL_ASSERT_OK(
      WriteSafetensors(dir_.File("unet/diffusion_pytorch_model.safetensors"), Tensors(4, 50, 5)));
  FL_ASSERT_OK(
      WriteSafetensors(dir_.File("vae/diffusion_pytorch_model.safetensors"), Tensors(2, 50, 6)));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(dir_.path()));
  EXPECT_EQ(m.tensors.size(), 6u);
  ExpectPositional(m.tensors, "unet/", 4, 5);
  ExpectPositional(m.tensors, "vae/", 2, 6);
}

TEST_F(LoaderTest, ErrorsNameTheFile) {
  EXPECT_THAT(Load(dir_.File("missing.safetensors")),
              StatusIs(StatusCode::kNotFound, HasSubstr("missing.safetensors")));
  const std::string path = dir_.File("cut.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(3, 1000, 7)));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  EXPECT_THAT(Load(path), StatusIs(StatusCode::kDataLoss, HasSubstr("cut.safetensors")));
  WriteText(dir_.File("lfs.safetensors"),
            "version https://git-lfs.github.com/spec/v1\noid sha256:"
            "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n");
  EXPECT_THAT(ReadHeader(dir_.File("lfs.safetensors")),
              StatusIs(StatusCode::kDataLoss, HasSubstr("LFS")));
}

TEST_F(LoaderTest, MetadataOnlyFileLoadsNoTensors) {
  const std::string path = dir_.File("empty.safetensors");
  WriteOptions wo;
  wo.metadata = std::map<std::string, std::string>{{"format", "pt"}};
  FL_ASSERT_OK(WriteSafetensors(path, {}, wo));
  for (Strategy s : {Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap}) {
    LoadOptions o;
    o.strategy = s;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    EXPECT_TRUE(m.tensors.empty());
    EXPECT_EQ(m.headers.at(path).metadata->at("format"), "pt");
  }
}

TEST_F(LoaderTest, NetworkStrategyReadsLargeRangesWithOneDescriptorPerWorkerAndNoMapping) {
  const std::string path = dir_.File("n.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(3, 1000, 8)));
  LoadOptions o;
  o.strategy = Strategy::kNetwork;
  const engine::FileStrategy s = engine::ChooseStrategy(path, o);
  EXPECT_EQ(s.strategy, Strategy::kNetwork);
  EXPECT_EQ(s.open.backend, LocalBackend::kThreadPool);
  EXPECT_FALSE(s.open.direct);
  EXPECT_TRUE(s.open.sequential_hint);
  EXPECT_EQ(s.open.threads, defaults::kNetworkThreads);
  EXPECT_EQ(s.chunk_bytes, defaults::kNetworkChunkBytes);
  EXPECT_GE(s.chunk_bytes, 16ull << 20);
  FL_ASSERT_OK_AND_ASSIGN(std::string plan, DescribeLoadPlan(path, o));
  EXPECT_THAT(plan, HasSubstr("network (pread"));
  EXPECT_EQ(ParseStrategy("network"), Strategy::kNetwork);
}

TEST_F(LoaderTest, ZeroCopyHotMapsAResidentFileAndItsTensorsOutliveTheFile) {
  const std::string path = dir_.File("z.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(9, 3000, 4)));
  LoadOptions o;
  o.zero_copy_hot = true;  // the file was just written: it is in the page cache
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
  ASSERT_EQ(m.report.files.size(), 1u);
  EXPECT_THAT(m.report.files[0].strategy, HasSubstr("mapped"));
  EXPECT_THAT(m.report.files[0].reason, HasSubstr("zero-copy"));
  TensorMap mapped = std::move(m.tensors);
  m = LoadedModel();
  ExpectPositional(mapped, "", 9, 4);

  // Copy-on-write: a write to a mapped tensor stays private; the file (read again, copied) is
  // unchanged.
  const Tensor& first = mapped.begin()->second;
  std::memset(const_cast<std::byte*>(first.bytes().data()), 0xAB, first.bytes().size());
  EXPECT_EQ(first.bytes()[0], std::byte{0xAB});
  o.zero_copy_hot = false;
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel copied, Load(path, o));
  EXPECT_THAT(copied.report.files[0].strategy, HasSubstr("buffered"));
  ExpectPositional(copied.tensors, "", 9, 4);

  // The mapping outlives the loader and the file's name.
  ASSERT_EQ(std::remove(path.c_str()), 0);
  for (const auto& [name, t] : copied.tensors) {
    if (name == first.name()) continue;
    const Tensor& view = mapped.at(name);
    ASSERT_EQ(view.bytes().size(), t.bytes().size());
    EXPECT_EQ(std::memcmp(view.bytes().data(), t.bytes().data(), t.bytes().size()), 0) << name;
  }
}

TEST_F(LoaderTest, DryRunDescribesThePlanWithoutLoading) {
  const std::string path = dir_.File("p.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(3, 1000, 8)));
  FL_ASSERT_OK_AND_ASSIGN(std::string plan, DescribeLoadPlan(path));
  EXPECT_THAT(plan, HasSubstr("3 tensors"));
  EXPECT_THAT(plan, HasSubstr("chunks"));
}

// Regression: a file truncated by another process during a load killed `--strategy mmap` with
// SIGBUS. Every strategy that reads the file must end in DATA_LOSS naming the file, the byte offset
// where the data ends now and the tensor there, and the process goes on. The truncation happens at
// the first progress report (after 64 MiB), with one read in flight, so it is mid-load every time.
TEST_F(LoaderTest, FileTruncatedDuringTheLoadIsDataLossNotACrash) {
  const std::string path = dir_.File("shrinking.safetensors");
  for (Strategy s : {Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap, Strategy::kNetwork}) {
    SCOPED_TRACE(StrategyName(s));
    FL_ASSERT_OK(WriteSafetensors(path, Tensors(32, 512 << 10, 12)));  // 134 MB
    FL_ASSERT_OK_AND_ASSIGN(Header h, ReadHeader(path));
    const uint64_t cut = 90ull << 20;
    const TensorInfo* at = nullptr;
    for (const TensorInfo& t : h.tensors) {
      if (h.data_offset() + t.data_begin <= cut && cut < h.data_offset() + t.data_end) at = &t;
    }
    ASSERT_NE(at, nullptr);
    LoadOptions o;
    o.strategy = s;
    o.threads = 1;
    o.queue_depth = 1;
    o.parallel_files = 1;
    o.chunk_bytes = 1 << 20;
    bool truncated = false;
    o.progress = [&](const Progress&) {
      if (!truncated) truncated = ::truncate(path.c_str(), static_cast<off_t>(cut)) == 0;
      return true;
    };
    Result<LoadedModel> m = Load(path, o);
    ASSERT_TRUE(truncated);
    EXPECT_THAT(
        m, StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr(path), HasSubstr("'" + at->name + "'"),
                                                 HasSubstr(fmt::format("byte offset {}", cut)))));
  }
}

TEST_F(LoaderTest, CancelledLoadReturnsCancelled) {
  const std::string path = dir_.File("c.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, Tensors(8, 100000, 9)));
  std::atomic<bool> cancel{true};
  LoadOptions o;
  o.cancel = &cancel;
  EXPECT_THAT(Load(path, o), StatusIs(StatusCode::kCancelled));
}

}  // namespace
}  // namespace flashload
