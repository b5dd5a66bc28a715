// Plain (not seekable) .tar.zst archives, loaded by streaming them front to back: the archives are
// made here (a tar from format/tar.h, compressed as one zstd frame or as several, with checksums,
// no seek table), and load tensor for tensor as the unpacked folder does, through the public
// Load() (locally, file://, over HTTP) and LoadStreamedArchive(); damaged, truncated and crafted
// archives and injected read faults are errors naming the archive, member and byte offset, never a
// model.
#include "load/stream_load.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
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
                                   uint64_t elements, Dtype dtype = Dtype::kF32) {
  std::vector<TensorToWrite> ts;
  for (int i = first; i < first + count; ++i) {
    TensorToWrite t;
    t.name = fmt::format("{}.{}.weight", prefix, i);
    t.dtype = dtype;
    t.shape = {elements, 4};
    const uint64_t seed = std::hash<std::string>()(t.name);
    t.fill = [seed](std::span<std::byte> dst, uint64_t off) { FillPositional(dst, off, seed); };
    ts.push_back(std::move(t));
  }
  return ts;
}

void WriteSharded(const std::string& dir, const std::string& prefix) {
  fs::create_directories(dir);
  ASSERT_THAT(
      WriteSafetensors(dir + "/model-00001-of-00002.safetensors", Tensors(prefix, 0, 2, 20'000)),
      IsOk());
  ASSERT_THAT(WriteSafetensors(dir + "/model-00002-of-00002.safetensors",
                               Tensors(prefix, 2, 2, 20'000, Dtype::kBF16)),
              IsOk());
  std::string map;
  for (int i = 0; i < 4; ++i) {
    map += fmt::format("{}\"{}.{}.weight\": \"model-0000{}-of-00002.safetensors\"", i ? ", " : "",
                       prefix, i, i < 2 ? 1 : 2);
  }
  testing::WriteFile(dir + "/model.safetensors.index.json",
                     fmt::format(R"({{"metadata": {{}}, "weight_map": {{{}}}}})", map));
}

// A diffusers-like model: model_index.json, unet and vae (one file each, unet with an fp16
// variant beside it), text_encoder (sharded), scheduler (config only).
void WriteDiffusers(const std::string& root) {
  fs::create_directories(root + "/unet");
  fs::create_directories(root + "/vae");
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
  ASSERT_THAT(WriteSafetensors(root + "/unet/diffusion_pytorch_model.fp16.safetensors",
                               Tensors("unet", 0, 6, 30'000, Dtype::kF16)),
              IsOk());
  ASSERT_THAT(WriteSafetensors(root + "/vae/diffusion_pytorch_model.safetensors",
                               Tensors("vae", 0, 3, 10'000)),
              IsOk());
  WriteSharded(root + "/text_encoder", "te");
}

std::string FileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The files under `root` as archive members (folders included), sorted; under `prefix/` if set.
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

// `tar` as a plain zstd stream (no seek table), with content checksums as `zstd` writes them: one
// frame, or one frame per `frame_bytes`.
std::string PlainZstd(std::string_view tar, uint64_t frame_bytes = 0, int window_log = 0) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)));
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3)));
  if (window_log > 0) {
    EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, window_log)));
  }
  std::string out;
  const uint64_t step = frame_bytes == 0 ? std::max<uint64_t>(tar.size(), 1) : frame_bytes;
  for (uint64_t at = 0; at < tar.size(); at += step) {
    const std::string_view piece = tar.substr(at, step);
    std::string frame(ZSTD_compressBound(piece.size()), '\0');
    const size_t n = ZSTD_compress2(cctx, frame.data(), frame.size(), piece.data(), piece.size());
    EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
    out.append(frame.data(), n);
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

void ExpectSameTensors(const LoadedModel& want, const LoadedModel& got) {
  ASSERT_EQ(want.tensors.size(), got.tensors.size());
  EXPECT_EQ(want.layout.kind, got.layout.kind);
  ASSERT_EQ(want.layout.files.size(), got.layout.files.size());
  for (size_t i = 0; i < want.layout.files.size(); ++i) {
    EXPECT_EQ(want.layout.files[i].component, got.layout.files[i].component);
    EXPECT_TRUE(got.layout.files[i].path.starts_with("tar:")) << got.layout.files[i].path;
  }
  for (const auto& [name, t] : want.tensors) {
    auto it = got.tensors.find(name);
    ASSERT_NE(it, got.tensors.end()) << name;
    EXPECT_EQ(t.dtype(), it->second.dtype()) << name;
    EXPECT_EQ(t.shape(), it->second.shape()) << name;
    ASSERT_EQ(t.bytes().size(), it->second.bytes().size()) << name;
    EXPECT_TRUE(std::equal(t.bytes().begin(), t.bytes().end(), it->second.bytes().begin())) << name;
    // Aligned as the file laid it out, as a host Load() gives it.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 4096,
              reinterpret_cast<uintptr_t>(it->second.data()) % 4096)
        << name;
  }
  EXPECT_EQ(want.report.bytes, got.report.bytes);
  for (const FileReport& f : got.report.files) EXPECT_EQ(f.strategy, kStreamStrategy);
}

SourceOpener Faulty(FaultOptions fault) {
  return [fault](const std::string& uri,
                 const OpenOptions& options) -> Result<std::unique_ptr<Source>> {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> s, OpenSource(uri, options));
    return std::unique_ptr<Source>(NewFaultSource(std::move(s), fault));
  };
}

class StreamLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = dir_.File("model");
    WriteDiffusers(folder_);
    tar_ = testing::BuildTestTar(MembersOf(folder_)).bytes;
    zst_ = dir_.File("models--org--name.tar.zst");
    testing::WriteFile(zst_, PlainZstd(tar_));
  }
  void TearDown() override { ReleaseRecentArchive(); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_.File(name);
    testing::WriteFile(path, bytes);
    return path;
  }

  TempDir dir_;
  std::string folder_, tar_, zst_;
};

TEST_F(StreamLoadTest, DiffusersModelLoadsAsFromTheFolder) {
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(folder_));
  ASSERT_EQ(want.tensors.size(), 6u + 3 + 4);
  const std::string frames = Write("frames.tar.zst", PlainZstd(tar_, 100'000));
  for (const std::string& archive : {zst_, "file://" + zst_, frames}) {
    SCOPED_TRACE(archive);
    FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(archive));
    ExpectSameTensors(want, got);
    EXPECT_EQ(got.layout.kind, ModelLayout::Kind::kDiffusers);
    EXPECT_TRUE(got.layout.files[0].path.starts_with("tar:/")) << got.layout.files[0].path;
    EXPECT_EQ(got.report.device, "cpu");
  }
  // The fp16 unet beside the plain one is read as it passes, and dropped: not in the layout.
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(zst_));
  EXPECT_EQ(got.tensors.at("unet/unet.0.weight").dtype(), Dtype::kF32);
  for (const FileReport& f : got.report.files)
    EXPECT_THAT(f.path, ::testing::Not(HasSubstr("fp16")));
}

TEST_F(StreamLoadTest, ShardedModelComponentAndFileByUri) {
  const std::string sharded = dir_.File("sharded");
  WriteSharded(sharded, "layers");
  const std::string archive =
      Write("sharded.tar.zst", PlainZstd(testing::BuildTestTar(MembersOf(sharded)).bytes));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(sharded));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(archive));
  ExpectSameTensors(want, got);
  EXPECT_EQ(got.layout.kind, ModelLayout::Kind::kShardedIndex);
  EXPECT_EQ(got.tensors.at("layers.3.weight").dtype(), Dtype::kBF16);

  // A component folder and a single file of the diffusers archive, by tar: URI.
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel te_want, Load(folder_ + "/text_encoder"));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel te, Load(ArchiveMemberUri(zst_, "text_encoder")));
  ExpectSameTensors(te_want, te);
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel one_want,
                          Load(folder_ + "/vae/diffusion_pytorch_model.safetensors"));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel one,
                          Load(ArchiveMemberUri(zst_, "vae/diffusion_pytorch_model.safetensors")));
  ExpectSameTensors(one_want, one);
}

TEST_F(StreamLoadTest, ArchivePackedUnderOneFolderResolvesIntoIt) {
  const std::string nested = Write(
      "nested.tar.zst", PlainZstd(testing::BuildTestTar(MembersOf(folder_, "org--name")).bytes));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(folder_));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(nested));
  ExpectSameTensors(want, got);
}

TEST_F(StreamLoadTest, TensorsOutliveTheModelAndTheArchive) {
  Tensor kept;
  {
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel got, Load(zst_));
    kept = got.tensors.at("vae/vae.1.weight");
  }
  fs::remove(zst_);
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(folder_));
  const Tensor& w = want.tensors.at("vae/vae.1.weight");
  ASSERT_EQ(kept.byte_size(), w.byte_size());
  EXPECT_TRUE(std::equal(w.bytes().begin(), w.bytes().end(), kept.bytes().begin()));
}

TEST_F(StreamLoadTest, SmallReadsAndSeveralInFlightGiveTheSameTensors) {
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(folder_));
  for (uint32_t in_flight : {1u, 3u}) {
    StreamLoadOptions s;
    s.zstd.read_bytes = 4096 + 7;  // reads that end anywhere in a block
    s.zstd.reads_in_flight = in_flight;
    FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, LoadStreamedArchive(zst_, {}, s));
    ExpectSameTensors(want, got);
  }
}

TEST_F(StreamLoadTest, TruncatedArchiveIsDataLossNamingTheArchive) {
  const std::string bytes = FileText(zst_);
  for (size_t keep : {bytes.size() / 3, bytes.size() - 1}) {
    SCOPED_TRACE(keep);
    const std::string cut = Write("cut.tar.zst", bytes.substr(0, keep));
    EXPECT_THAT(Load(cut),
                StatusIs(StatusCode::kDataLoss,
                         AllOf(HasSubstr(cut), HasSubstr("truncated"), HasSubstr("byte offset"))));
  }
}

TEST_F(StreamLoadTest, CorruptedByteIsDataLossNeverAModel) {
  const std::string bytes = FileText(zst_);
  int errors = 0;
  for (size_t at : {size_t{20}, bytes.size() / 4, bytes.size() / 2, bytes.size() - 6}) {
    SCOPED_TRACE(at);
    std::string damaged = bytes;
    damaged[at] ^= 0x21;
    const std::string path = Write("damaged.tar.zst", damaged);
    Result<LoadedModel> got = Load(path);
    EXPECT_FALSE(got.ok());
    if (!got.ok()) {
      ++errors;
      EXPECT_THAT(got.status(), StatusIs(StatusCode::kDataLoss, HasSubstr("byte offset")));
      EXPECT_THAT(std::string(got.status().message()), HasSubstr(path));
    }
  }
  EXPECT_EQ(errors, 4);
}

TEST_F(StreamLoadTest, MemberShorterThanItsHeaderIsDataLoss) {
  const std::string file = FileText(folder_ + "/vae/diffusion_pytorch_model.safetensors");
  // The tar member itself is shorter than the safetensors header says.
  const std::string short_member = Write(
      "short_member.tar.zst",
      PlainZstd(
          testing::BuildTestTar({{"model.safetensors", file.substr(0, file.size() - 100)}}).bytes));
  EXPECT_THAT(
      Load(short_member),
      StatusIs(StatusCode::kDataLoss, HasSubstr("tar:" + short_member + "!/model.safetensors")));
  // The tar ends inside the member's data (a complete zstd stream of a cut tar).
  const std::string tar = testing::BuildTestTar({{"model.safetensors", file}}, false).bytes;
  const std::string cut = Write("cut_member.tar.zst", PlainZstd(tar.substr(0, tar.size() / 2)));
  EXPECT_THAT(Load(cut), StatusIs(StatusCode::kDataLoss,
                                  AllOf(HasSubstr("tar:" + cut + "!/model.safetensors"),
                                        HasSubstr("member byte offset"), HasSubstr("truncated"))));
  // The tar ends inside a header block.
  const std::string in_header = Write(
      "cut_header.tar.zst",
      PlainZstd(testing::BuildTestTar(MembersOf(folder_), false).bytes.substr(0, 1024 + 300)));
  EXPECT_THAT(Load(in_header),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("inside a tar header"), HasSubstr("byte offset 1024"))));
}

TEST_F(StreamLoadTest, LimitsAreErrorsNamingWhatAndWhere) {
  LoadOptions small_header;
  small_header.header_limit = 64;
  EXPECT_THAT(Load(zst_, small_header),
              StatusIs(StatusCode::kDataLoss, HasSubstr("tar:" + zst_ + "!/")));
  // A stream whose window is above the limit.
  StreamLoadOptions s;
  s.zstd.window_log_max = 10;
  const std::string wide = Write("wide.tar.zst", PlainZstd(tar_, 0, 20));
  EXPECT_THAT(LoadStreamedArchive(wide, {}, s),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr(wide), HasSubstr("window"), HasSubstr("byte offset"))));
  StreamLoadOptions few;
  few.limits.max_members = 3;
  EXPECT_THAT(LoadStreamedArchive(zst_, {}, few),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("more than 3 members")));
  StreamLoadOptions no_json;
  no_json.max_json_bytes = 10;  // model_index.json is not kept
  EXPECT_THAT(LoadStreamedArchive(zst_, {}, no_json),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("model_index.json")));
}

TEST_F(StreamLoadTest, PathLeavingTheArchiveIsRefused) {
  std::string tar = testing::BuildTestTar({{"model.safetensors", "x"}}).bytes;
  // Rewrite the name to "../e.safetensors" and fix the header checksum.
  const std::string evil = "../e.safetensors";
  std::copy(evil.begin(), evil.end(), tar.begin());
  std::fill(tar.begin() + 148, tar.begin() + 156, ' ');
  unsigned sum = 0;
  for (int i = 0; i < 512; ++i) sum += static_cast<unsigned char>(tar[i]);
  const std::string octal = fmt::format("{:06o}", sum);
  std::copy(octal.begin(), octal.end(), tar.begin() + 148);
  tar[154] = '\0';
  const std::string path = Write("evil.tar.zst", PlainZstd(tar));
  EXPECT_THAT(Load(path), StatusIs(StatusCode::kInvalidArgument, HasSubstr("..")));
}

TEST_F(StreamLoadTest, InjectedFaultsAreErrorsNeverAModel) {
  for (FaultKind kind :
       {FaultKind::kIoError, FaultKind::kInterrupted, FaultKind::kShortRead, FaultKind::kCorrupt}) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(fmt::format("kind {} seed {}", static_cast<int>(kind), seed));
      LoadOptions o;
      o.opener = Faulty({.kind = kind, .seed = seed, .one_in = 3, .after_requests = 2});
      StreamLoadOptions s;
      s.zstd.read_bytes = 16 << 10;
      Result<LoadedModel> got = LoadStreamedArchive(zst_, o, s);
      ASSERT_FALSE(got.ok());
      EXPECT_THAT(std::string(got.status().message()), HasSubstr(zst_));
      EXPECT_THAT(std::string(got.status().message()), HasSubstr("byte offset"));
    }
  }
  // Through Load(): the fault lands in the middle of the archive, which only the stream reads.
  LoadOptions o;
  o.opener = Faulty({.kind = FaultKind::kIoError, .at_offsets = {FileText(zst_).size() / 2}});
  EXPECT_THAT(Load(zst_, o), StatusIs(StatusCode::kIoError, HasSubstr(zst_)));
}

TEST_F(StreamLoadTest, GpuOrConversionIsAClearError) {
  LoadOptions gpu;
  gpu.device = Device{DeviceType::kCuda, 0};
  EXPECT_THAT(LoadStreamedArchive(zst_, gpu),
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(zst_), HasSubstr("cuda:0"), HasSubstr("flashload pack"))));
  LoadOptions convert;
  convert.dtype = "bf16";
  EXPECT_THAT(Load(zst_, convert),
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(zst_), HasSubstr("bf16"), HasSubstr("flashload unpack"))));
}

TEST_F(StreamLoadTest, PlanProgressAndCancel) {
  FL_ASSERT_OK_AND_ASSIGN(const std::string plan, DescribeLoadPlan(zst_));
  EXPECT_THAT(plan, AllOf(HasSubstr(zst_), HasSubstr("no plan to print")));

  LoadOptions o;
  std::vector<Progress> seen;
  o.progress = [&seen](const Progress& p) {
    seen.push_back(p);
    return true;
  };
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(zst_, o));
  ASSERT_FALSE(seen.empty());
  const uint64_t size = fs::file_size(zst_);
  EXPECT_EQ(seen.back().bytes_done, size);
  EXPECT_EQ(seen.back().bytes_total, size);
  EXPECT_EQ(seen.back().files_done, got.layout.files.size());

  std::atomic<bool> cancel{true};
  LoadOptions c;
  c.cancel = &cancel;
  EXPECT_THAT(Load(zst_, c), StatusIs(StatusCode::kCancelled));
}

TEST_F(StreamLoadTest, SeekableAndPlainTarStillLoadByRandomAccess) {
  const std::string seekable =
      Write("seekable.tar.zst",
            testing::BuildTestZst(testing::BuildTestTar(MembersOf(folder_)), 64 << 10).bytes);
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(seekable));
  for (const FileReport& f : got.report.files) EXPECT_NE(f.strategy, kStreamStrategy);
  FL_ASSERT_OK_AND_ASSIGN(bool plain, IsPlainZstdArchive(seekable, {}));
  EXPECT_FALSE(plain);
  FL_ASSERT_OK_AND_ASSIGN(plain, IsPlainZstdArchive(zst_, {}));
  EXPECT_TRUE(plain);
  FL_ASSERT_OK_AND_ASSIGN(plain, IsPlainZstdArchive(ArchiveMemberUri(zst_, "unet"), {}));
  EXPECT_TRUE(plain);
  FL_ASSERT_OK_AND_ASSIGN(plain, IsPlainZstdArchive(Write("plain.tar", tar_), {}));
  EXPECT_FALSE(plain);
  // A gzip archive stays refused as before.
  EXPECT_THAT(Load(Write("g.tar.zst", std::string("\x1f\x8b\x08\0", 4) + std::string(100, 'x'))),
              StatusIs(StatusCode::kUnimplemented, HasSubstr("gzip")));
}

TEST_F(StreamLoadTest, PlainArchiveOverHttp) {
  ASSERT_EQ(mkdir(dir_.File("root").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(dir_.File("root/bucket").c_str(), 0755), 0);
  fs::copy_file(zst_, dir_.File("root/bucket/m.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RangeServer> server,
                          RangeServer::Start(RangeServerScript(), dir_.File("root"), dir_.path()));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel want, Load(folder_));
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel got, Load(server->Url("bucket/m.tar.zst")));
  ExpectSameTensors(want, got);
  EXPECT_TRUE(got.layout.files[0].path.starts_with("tar:http://")) << got.layout.files[0].path;
  // Transient server errors are retried by the registry's policy for http.
  FL_ASSERT_OK(server->SetFaults("status=503:every=3"));
  LoadOptions o;
  o.remote.retry_base_ms = 1;
  o.remote.max_attempts = 8;
  StreamLoadOptions s;
  s.zstd.read_bytes = 64 << 10;
  FL_ASSERT_OK_AND_ASSIGN(const LoadedModel retried,
                          LoadStreamedArchive(server->Url("bucket/m.tar.zst"), o, s));
  ExpectSameTensors(want, retried);
}

}  // namespace
}  // namespace flashload
