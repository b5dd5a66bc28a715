// Loads out of archives through the public Load(): a diffusers-like model and a sharded model,
// packed as .tar and as zstd seekable .tar.zst (tests/unit/io/archive_test_builder.h), load
// tensor for tensor as the unpacked folder does, locally and over HTTP; faults injected into the
// member sources through LoadOptions::opener come back as errors naming the member.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "flashload/loader.h"
#include "flashload/registry.h"
#include "flashload/writer.h"
#include "io/archive_source.h"
#include "io/archive_test_builder.h"
#include "io/fault_source.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

namespace fs = std::filesystem;
using ::flashload::testing::FillPositional;
using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<TensorToWrite> Tensors(const std::string& prefix, int first, int count,
                                   uint64_t elements) {
  std::vector<TensorToWrite> ts;
  for (int i = first; i < first + count; ++i) {
    TensorToWrite t;
    t.name = fmt::format("{}.{}.weight", prefix, i);
    t.dtype = Dtype::kF32;
    t.shape = {elements, 4};
    const uint64_t seed = std::hash<std::string>()(t.name);
    t.fill = [seed](std::span<std::byte> dst, uint64_t off) { FillPositional(dst, off, seed); };
    ts.push_back(std::move(t));
  }
  return ts;
}

// A diffusers-like model: model_index.json, unet (one file), vae (one file), text_encoder
// (sharded: an index and two shards), scheduler (config only).
void WriteDiffusers(const std::string& root) {
  fs::create_directories(root + "/unet");
  fs::create_directories(root + "/vae");
  fs::create_directories(root + "/text_encoder");
  fs::create_directories(root + "/scheduler");
  testing::WriteFile(root + "/model_index.json",
                     R"({"_class_name": "StableDiffusionPipeline",
  "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
  "text_encoder": ["transformers", "CLIPTextModel"],
  "scheduler": ["diffusers", "PNDMScheduler"]})");
  testing::WriteFile(root + "/scheduler/scheduler_config.json", "{}");
  testing::WriteFile(root + "/unet/config.json", "{}");
  ASSERT_THAT(WriteSafetensors(root + "/unet/diffusion_pytorch_model.safetensors",
                               Tensors("unet", 0, 6, 30'000)),
              IsOk());
  ASSERT_THAT(WriteSafetensors(root + "/vae/diffusion_pytorch_model.safetensors",
                               Tensors("vae", 0, 3, 10'000)),
              IsOk());
  ASSERT_THAT(WriteSafetensors(root + "/text_encoder/model-00001-of-00002.safetensors",
                               Tensors("te", 0, 2, 20'000)),
              IsOk());
  ASSERT_THAT(WriteSafetensors(root + "/text_encoder/model-00002-of-00002.safetensors",
                               Tensors("te", 2, 2, 20'000)),
              IsOk());
  std::string map;
  for (int i = 0; i < 4; ++i) {
    map += fmt::format("{}\"te.{}.weight\": \"model-0000{}-of-00002.safetensors\"", i ? ", " : "",
                       i, i < 2 ? 1 : 2);
  }
  testing::WriteFile(root + "/text_encoder/model.safetensors.index.json",
                     fmt::format(R"({{"metadata": {{}}, "weight_map": {{{}}}}})", map));
}

std::string FileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The files under `root` as archive members (folders included), paths relative, sorted; under
// `prefix/` when given.
std::vector<testing::TestMember> MembersOf(const std::string& root,
                                           const std::string& prefix = "") {
  std::vector<testing::TestMember> out;
  std::vector<fs::path> paths;
  for (const auto& e : fs::recursive_directory_iterator(root)) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  for (const fs::path& p : paths) {
    std::string rel = fs::relative(p, root).string();
    if (!prefix.empty()) rel = prefix + "/" + rel;
    if (fs::is_directory(p)) {
      out.push_back({rel, "", true});
    } else {
      out.push_back({rel, FileText(p.string())});
    }
  }
  return out;
}

void ExpectSameTensors(const LoadedModel& want, const LoadedModel& got) {
  ASSERT_EQ(want.tensors.size(), got.tensors.size());
  EXPECT_EQ(want.layout.kind, got.layout.kind);
  EXPECT_EQ(want.layout.files.size(), got.layout.files.size());
  for (const auto& [name, t] : want.tensors) {
    auto it = got.tensors.find(name);
    ASSERT_NE(it, got.tensors.end()) << name;
    ASSERT_EQ(t.bytes().size(), it->second.bytes().size()) << name;
    EXPECT_TRUE(std::equal(t.bytes().begin(), t.bytes().end(), it->second.bytes().begin())) << name;
  }
}

class ArchiveLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = dir_.File("model");
    WriteDiffusers(folder_);
    const auto members = MembersOf(folder_);
    const testing::TestTar tar = testing::BuildTestTar(members);
    tar_ = dir_.File("models--org--name--fp16.tar");
    zst_ = dir_.File("models--org--name--fp16.tar.zst");
    testing::WriteFile(tar_, tar.bytes);
    testing::WriteFile(zst_, testing::BuildTestZst(tar, 64 << 10).bytes);
  }
  void TearDown() override { ReleaseRecentArchive(); }

  TempDir dir_;
  std::string folder_, tar_, zst_;
};

TEST_F(ArchiveLoadTest, DiffusersModelLoadsAsFromTheFolder) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel want, Load(folder_));
  ASSERT_EQ(want.tensors.size(), 6u + 3 + 4);
  for (const std::string& archive : {tar_, zst_, "file://" + zst_}) {
    SCOPED_TRACE(archive);
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(archive));
    ExpectSameTensors(want, got);
    EXPECT_EQ(got.layout.kind, ModelLayout::Kind::kDiffusers);
    for (const ModelFile& f : got.layout.files) EXPECT_TRUE(f.path.starts_with("tar:/")) << f.path;
  }
}

TEST_F(ArchiveLoadTest, ShardedComponentAndSingleMemberByUri) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel want, Load(folder_ + "/text_encoder"));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(ArchiveMemberUri(zst_, "text_encoder")));
  ExpectSameTensors(want, got);
  EXPECT_EQ(got.layout.kind, ModelLayout::Kind::kShardedIndex);
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel one,
                          Load(ArchiveMemberUri(tar_, "vae/diffusion_pytorch_model.safetensors")));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel one_want,
                          Load(folder_ + "/vae/diffusion_pytorch_model.safetensors"));
  ExpectSameTensors(one_want, one);
}

TEST_F(ArchiveLoadTest, ArchivePackedUnderOneFolderResolvesIntoIt) {
  const std::string nested = dir_.File("nested.tar.zst");
  testing::WriteFile(
      nested, testing::BuildTestZst(testing::BuildTestTar(MembersOf(folder_, "models--org--name")),
                                    32 << 10)
                  .bytes);
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel want, Load(folder_));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(nested));
  ExpectSameTensors(want, got);
}

TEST_F(ArchiveLoadTest, ForcedStrategiesAndSmallChunksStillReadTheMembers) {
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel want, Load(folder_));
  for (Strategy s : {Strategy::kMapped, Strategy::kDirect, Strategy::kMmap}) {
    LoadOptions o;
    o.strategy = s;
    o.chunk_bytes = 40 << 10;  // not a multiple of the frames: reads share frames
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(zst_, o));
    ExpectSameTensors(want, got);
  }
  FL_ASSERT_OK_AND_ASSIGN(std::string plan, DescribeLoadPlan(zst_));
  EXPECT_THAT(plan, HasSubstr("archive member"));
}

TEST_F(ArchiveLoadTest, InjectedFaultsAreErrorsNamingTheMember) {
  for (FaultKind kind : {FaultKind::kIoError, FaultKind::kInterrupted}) {
    LoadOptions o;
    o.chunk_bytes = 64 << 10;
    o.opener = [kind](const std::string& uri,
                      const OpenOptions& options) -> Result<std::unique_ptr<Source>> {
      FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> s, OpenSource(uri, options));
      return std::unique_ptr<Source>(
          NewFaultSource(std::move(s), {.kind = kind, .after_requests = 4}));
    };
    EXPECT_THAT(
        Load(zst_, o),
        StatusIs(kind == FaultKind::kIoError ? StatusCode::kIoError : StatusCode::kUnavailable,
                 AllOf(HasSubstr("tar:" + zst_ + "!/"), HasSubstr("byte offset"))));
  }
}

TEST_F(ArchiveLoadTest, DamagedAndUnsupportedArchivesAreClearErrors) {
  // A frame of the unet's data damaged: DATA_LOSS naming the frame.
  std::string bytes = FileText(zst_);
  bytes[bytes.size() / 2] ^= 0x40;
  bytes[bytes.size() / 2 + 1] ^= 0x40;
  const std::string damaged = dir_.File("damaged.tar.zst");
  testing::WriteFile(damaged, bytes);
  EXPECT_THAT(Load(damaged), StatusIs(StatusCode::kDataLoss, HasSubstr("zstd frame")));
  // A plain zstd stream.
  const std::string tar = FileText(tar_);
  std::string plain(ZSTD_compressBound(tar.size()), '\0');
  plain.resize(ZSTD_compress(plain.data(), plain.size(), tar.data(), tar.size(), 1));
  const std::string plain_path = dir_.File("plain.tar.zst");
  testing::WriteFile(plain_path, plain);
  // It has no index to resolve in place; Load() streams it instead (stream_load_test.cc).
  EXPECT_THAT(ResolveModelAt(plain_path),
              StatusIs(StatusCode::kUnimplemented, HasSubstr("flashload unpack")));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel streamed, Load(plain_path));
  EXPECT_EQ(streamed.report.files[0].strategy, "stream (plain zstd: read front to back)");
  EXPECT_THAT(Load(dir_.File("missing.tar")), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(Load(ArchiveMemberUri(tar_, "nothing/here")), StatusIs(StatusCode::kNotFound));
}

TEST_F(ArchiveLoadTest, ArchiveOverHttp) {
  ASSERT_EQ(mkdir(dir_.File("root").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(dir_.File("root/bucket").c_str(), 0755), 0);
  fs::copy_file(zst_, dir_.File("root/bucket/m.tar.zst"));
  fs::copy_file(tar_, dir_.File("root/bucket/m.tar"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RangeServer> server,
                          RangeServer::Start(RangeServerScript(), dir_.File("root"), dir_.path()));
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel want, Load(folder_));
  for (const std::string key : {"bucket/m.tar.zst", "bucket/m.tar"}) {
    SCOPED_TRACE(key);
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(server->Url(key)));
    ExpectSameTensors(want, got);
    EXPECT_TRUE(got.layout.files[0].path.starts_with("tar:http://")) << got.layout.files[0].path;
  }
  // Transient server errors under the archive are retried by the registry's policy for http (the
  // archive is opened through it): the same tensors.
  ReleaseRecentArchive();
  FL_ASSERT_OK(server->SetFaults("status=503:every=3,reset:every=7"));
  LoadOptions o;
  o.remote.retry_base_ms = 1;
  o.remote.max_attempts = 8;
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel retried, Load(server->Url("bucket/m.tar.zst"), o));
  ExpectSameTensors(want, retried);
  // A server that refuses every range: an error naming the archive, not a partial load.
  ReleaseRecentArchive();
  FL_ASSERT_OK(server->SetFaults("status=403"));
  o.remote.max_attempts = 2;
  Result<LoadedModel> refused = Load(server->Url("bucket/m.tar.zst"), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("bucket/m.tar.zst"));
  EXPECT_FALSE(refused.status().IsRetryable());
}

}  // namespace
}  // namespace flashload
