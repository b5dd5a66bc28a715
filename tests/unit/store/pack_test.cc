#include "store/pack.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "flashload/convert.h"
#include "flashload/header.h"
#include "flashload/writer.h"
#include "format/tar.h"
#include "format/zstd_seekable.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::vector<std::byte> b = testing::ReadFile(path);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::vector<float> Floats(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>(i % 977) - 488.3f) / 7.1f;
  return v;
}

template <typename T>
std::span<const std::byte> AsBytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

// A small diffusers-like folder: a UNet with F32 and I32 tensors and metadata, a VAE already in
// F16, configs, and an empty folder.
struct ModelFolder {
  testing::TempDir tmp;
  std::string dir;
  std::vector<float> w1 = Floats(3000, 1.0f), w2 = Floats(70'000, 0.01f);
  std::vector<int32_t> ids = std::vector<int32_t>(33, 7);
  std::vector<uint16_t> vae = std::vector<uint16_t>(1000, 0x3C00);

  ModelFolder() {
    dir = tmp.File("model");
    fs::create_directories(dir + "/unet");
    fs::create_directories(dir + "/vae");
    fs::create_directories(dir + "/scheduler");
    fs::create_directories(dir + "/empty");
    std::vector<TensorToWrite> unet(3);
    unet[0] = {"down.0.weight", Dtype::kF32, {3000}, AsBytes(w1), nullptr};
    unet[1] = {"up.1.weight", Dtype::kF32, {70, 1000}, AsBytes(w2), nullptr};
    unet[2] = {"position_ids", Dtype::kI32, {33}, AsBytes(ids), nullptr};
    WriteOptions wo;
    wo.metadata = std::map<std::string, std::string>{{"format", "pt"}};
    EXPECT_THAT(WriteSafetensors(dir + "/unet/diffusion_pytorch_model.safetensors", unet, wo),
                IsOk());
    std::vector<TensorToWrite> v(1);
    v[0] = {"decoder.conv.weight", Dtype::kF16, {10, 100}, AsBytes(vae), nullptr};
    EXPECT_THAT(WriteSafetensors(dir + "/vae/diffusion_pytorch_model.safetensors", v), IsOk());
    testing::WriteFile(dir + "/model_index.json", std::string("{\"_class_name\": \"X\"}\n"));
    testing::WriteFile(dir + "/scheduler/scheduler_config.json", std::string("{}"));
  }
};

// Walks a tar stream, returning (path, kind, size, data) of each member; fails the test on error.
struct Member {
  std::string path;
  format::TarMemberKind kind;
  uint32_t mode;
  std::string data;
  std::string header;  // the 512-byte ustar block
};
std::vector<Member> WalkTar(const std::string& tar) {
  std::vector<Member> out;
  format::TarPending pending;
  uint64_t offset = 0;
  while (offset + 512 <= tar.size()) {
    std::span<const uint8_t> block(reinterpret_cast<const uint8_t*>(tar.data()) + offset, 512);
    auto step = format::ParseTarHeader(block, offset, "test.tar", pending);
    EXPECT_THAT(step, IsOk());
    if (!step.ok() || step->kind == format::TarStep::Kind::kEnd) break;
    if (step->kind == format::TarStep::Kind::kExtension) {
      EXPECT_THAT(format::ApplyTarExtension(*step, tar.substr(offset + 512, step->payload_size),
                                            offset, "test.tar", pending),
                  IsOk());
    } else {
      out.push_back({step->member.path, step->member.kind, step->member.mode,
                     tar.substr(step->member.data_offset, step->member.size),
                     tar.substr(offset, 512)});
    }
    offset = step->next_offset;
  }
  return out;
}

std::string Decompress(const std::string& z) {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  std::string out;
  std::vector<char> buf(1 << 16);
  ZSTD_inBuffer in{z.data(), z.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    const size_t r = ZSTD_decompressStream(d, &o, &in);
    if (ZSTD_isError(r)) {
      ADD_FAILURE() << ZSTD_getErrorName(r);
      break;
    }
    out.append(buf.data(), o.pos);
  }
  ZSTD_freeDCtx(d);
  return out;
}

Result<PackSummary> Pack(const std::string& dir, const std::string& out,
                         const std::string& precision = "", uint32_t threads = 0) {
  PackOptions o;
  o.input_dir = dir;
  o.output = out;
  o.precision = precision;
  o.threads = threads;
  o.frame_bytes = 64 << 10;
  return PackModel(o);
}

// Entries of a folder other than `keep` (to check that a failed pack leaves nothing).
std::vector<std::string> Leftovers(const std::string& dir, const std::string& keep) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename() != keep) v.push_back(e.path().filename().string());
  }
  return v;
}

TEST(PackTest, ListsFoldersAndFilesInBytewiseOrder) {
  testing::TempDir tmp;
  const std::string d = tmp.File("m");
  fs::create_directories(d + "/a/x");
  fs::create_directories(d + "/B");
  testing::WriteFile(d + "/a.txt", std::string("1"));
  testing::WriteFile(d + "/a/x/y", std::string("22"));
  testing::WriteFile(d + "/b", std::string(""));
  FL_ASSERT_OK_AND_ASSIGN(std::vector<PackEntry> e, ListPackEntries(d));
  std::vector<std::string> paths;
  for (const PackEntry& p : e) paths.push_back(p.path + (p.directory ? "/" : ""));
  EXPECT_THAT(paths, ElementsAre("B/", "a/", "a.txt", "a/x/", "a/x/y", "b"));
}

TEST(PackTest, RefusesSymlinksInsideOrOutAndFifos) {
  testing::TempDir tmp;
  const std::string d = tmp.File("m");
  fs::create_directories(d);
  testing::WriteFile(d + "/real", std::string("x"));
  fs::create_symlink("real", d + "/inside");
  EXPECT_THAT(ListPackEntries(d),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("inside is a symbolic link")));
  fs::remove(d + "/inside");
  fs::create_symlink("/etc/passwd", d + "/outside");
  EXPECT_THAT(Pack(d, tmp.File("o.tar")),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("outside is a symbolic link")));
  fs::remove(d + "/outside");
  ASSERT_EQ(::mkfifo((d + "/pipe").c_str(), 0600), 0);
  EXPECT_THAT(Pack(d, tmp.File("o.tar")),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("pipe is a FIFO")));
  EXPECT_THAT(Leftovers(tmp.path(), "m"), ElementsAre());
}

TEST(PackTest, SameFolderGivesTheSameBytes) {
  ModelFolder m;
  for (const char* ext : {".tar", ".tar.zst"}) {
    const std::string a = m.tmp.File(std::string("a") + ext);
    const std::string b = m.tmp.File(std::string("b") + ext);
    FL_ASSERT_OK(Pack(m.dir, a, "", 1).status());
    // A file's times and the folder's listing order do not matter.
    ::utimensat(AT_FDCWD, (m.dir + "/model_index.json").c_str(), nullptr, 0);
    FL_ASSERT_OK(Pack(m.dir, b, "", 4).status());
    EXPECT_EQ(ReadAll(a), ReadAll(b)) << ext;
  }
}

TEST(PackTest, TarMembersAreDeterministicAndHoldTheFiles) {
  ModelFolder m;
  const std::string out = m.tmp.File("m.tar");
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, Pack(m.dir, out));
  EXPECT_EQ(s.format, ArchiveFormat::kTar);
  EXPECT_EQ(s.files, 4u);
  EXPECT_EQ(s.directories, 4u);
  EXPECT_EQ(s.members, 8u);
  const std::string tar = ReadAll(out);
  EXPECT_EQ(s.bytes_out, tar.size());
  EXPECT_EQ(tar.size() % 512, 0u);
  std::vector<Member> members = WalkTar(tar);
  std::vector<std::string> paths;
  for (const Member& mm : members) paths.push_back(mm.path);
  EXPECT_THAT(paths, ElementsAre("empty/", "model_index.json", "scheduler/",
                                 "scheduler/scheduler_config.json", "unet/",
                                 "unet/diffusion_pytorch_model.safetensors", "vae/",
                                 "vae/diffusion_pytorch_model.safetensors"));
  for (const Member& mm : members) {
    const bool dir = mm.kind == format::TarMemberKind::kDirectory;
    EXPECT_EQ(mm.mode, dir ? 0755u : 0644u) << mm.path;
    EXPECT_EQ(mm.header.substr(136, 11), "00000000000") << mm.path << " mtime";
    EXPECT_EQ(mm.header.substr(108, 7), "0000000") << mm.path << " uid";
    EXPECT_EQ(mm.header.substr(116, 7), "0000000") << mm.path << " gid";
    EXPECT_EQ(mm.header[265], '\0') << mm.path << " owner name";
    EXPECT_EQ(mm.header[297], '\0') << mm.path << " group name";
    if (!dir) {
      std::string rel = mm.path;
      EXPECT_EQ(mm.data, ReadAll(m.dir + "/" + rel)) << rel;
    }
  }
}

TEST(PackTest, SeekableArchiveDecompressesToTheTarWithFramesAtHeaders) {
  ModelFolder m;
  FL_ASSERT_OK(Pack(m.dir, m.tmp.File("m.tar")).status());
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, Pack(m.dir, m.tmp.File("m.tar.zst")));
  const std::string tar = ReadAll(m.tmp.File("m.tar"));
  const std::string z = ReadAll(m.tmp.File("m.tar.zst"));
  EXPECT_EQ(s.bytes_out, z.size());
  EXPECT_EQ(s.tar_bytes, tar.size());
  ASSERT_EQ(Decompress(z), tar);

  const auto* p = reinterpret_cast<const uint8_t*>(z.data());
  FL_ASSERT_OK_AND_ASSIGN(uint64_t table_size, format::SeekTableSizeFromFooter(
                                                   std::span(p + z.size() - 9, 9), "m.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(
      format::SeekTable table,
      format::ParseSeekTable(std::span(p + z.size() - table_size, table_size), z.size(), "x"));
  EXPECT_EQ(table.frames.size(), s.frames);
  EXPECT_EQ(table.decompressed_size, tar.size());
  std::set<uint64_t> starts;
  for (const auto& f : table.frames) {
    starts.insert(f.decompressed_offset);
    EXPECT_LE(f.decompressed_size, 64u << 10);
    EXPECT_TRUE(f.checksum.has_value());
  }
  // Every header block, and every member's data, starts a frame.
  format::TarPending pending;
  for (uint64_t offset = 0;;) {
    EXPECT_TRUE(starts.count(offset)) << "header at " << offset;
    auto step = format::ParseTarHeader(
        std::span(reinterpret_cast<const uint8_t*>(tar.data()) + offset, 512), offset, "x",
        pending);
    ASSERT_THAT(step, IsOk());
    if (step->kind == format::TarStep::Kind::kEnd) break;
    ASSERT_EQ(step->kind, format::TarStep::Kind::kMember);
    if (step->member.size > 0) {
      EXPECT_TRUE(starts.count(step->member.data_offset)) << step->member.path;
    }
    offset = step->next_offset;
  }
}

TEST(PackTest, PrecisionConvertsFloatTensorsKeepsTheRestAndRecordsIt) {
  ModelFolder m;
  const std::string out = m.tmp.File("m.tar");
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, Pack(m.dir, out, "fp16"));
  EXPECT_EQ(s.precision, "fp16");
  EXPECT_EQ(s.converted_files, 1u);  // the VAE is F16 already
  EXPECT_EQ(s.converted_tensors, 2u);
  std::map<std::string, std::string> files;
  for (const Member& mm : WalkTar(ReadAll(out))) files[mm.path] = mm.data;
  // Unchanged files are packed byte for byte.
  EXPECT_EQ(files["vae/diffusion_pytorch_model.safetensors"],
            ReadAll(m.dir + "/vae/diffusion_pytorch_model.safetensors"));
  const std::string& unet = files["unet/diffusion_pytorch_model.safetensors"];
  FL_ASSERT_OK_AND_ASSIGN(
      Header h, ParseHeaderFromBytes(std::as_bytes(std::span(unet.data(), unet.size())), "unet"));
  ASSERT_TRUE(h.metadata.has_value());
  EXPECT_EQ((*h.metadata)["flashload.precision"], "fp16");
  EXPECT_EQ((*h.metadata)["format"], "pt");
  auto check = [&](const std::string& name, const std::vector<float>& src) {
    const TensorInfo* t = h.Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, Dtype::kF16);
    std::vector<uint16_t> want(src.size());
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, src.data(), want.data(), src.size()));
    ASSERT_EQ(t->byte_size(), want.size() * 2);
    EXPECT_EQ(
        std::memcmp(unet.data() + h.data_offset() + t->data_begin, want.data(), want.size() * 2), 0)
        << name;
  };
  check("down.0.weight", m.w1);
  check("up.1.weight", m.w2);
  const TensorInfo* ids = h.Find("position_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, Dtype::kI32);
  EXPECT_EQ(std::memcmp(unet.data() + h.data_offset() + ids->data_begin, m.ids.data(), 33 * 4), 0);
}

TEST(PackTest, OutputFolderNamesTheArchiveAndNeedsAName) {
  ModelFolder m;
  const std::string outdir = m.tmp.File("out");
  fs::create_directories(outdir);
  PackOptions o;
  o.input_dir = m.dir;
  o.output = outdir;
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("--name")));
  o.name = "acme/tiny-sd";
  // The folder holds F32 and F16 tensors: no single precision to name it by.
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("--precision")));
  o.precision = "bf16";
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, PackModel(o));
  EXPECT_EQ(s.archive, outdir + "/models--acme--tiny-sd--bf16.tar.zst");
  EXPECT_TRUE(fs::exists(s.archive));
  // A second pack with a precision given names the same file: refused without --force.
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("--force")));
  o.force = true;
  FL_EXPECT_OK(PackModel(o).status());
  o.format = ArchiveFormat::kTar;
  FL_ASSERT_OK_AND_ASSIGN(s, PackModel(o));
  EXPECT_EQ(s.archive, outdir + "/models--acme--tiny-sd--bf16.tar");
}

TEST(PackTest, InfersThePrecisionOfAFolderOfOneFloatDtype) {
  testing::TempDir tmp;
  const std::string d = tmp.File("m");
  fs::create_directories(d);
  std::vector<uint16_t> v(64, 0x3F80);
  std::vector<TensorToWrite> t(1);
  t[0] = {"w", Dtype::kBF16, {64}, AsBytes(v), nullptr};
  FL_ASSERT_OK(WriteSafetensors(d + "/model.safetensors", t));
  PackOptions o;
  o.input_dir = d;
  o.output = tmp.path();
  o.name = "org/m";
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, PackModel(o));
  EXPECT_EQ(s.archive, tmp.path() + "/models--org--m--bf16.tar.zst");
  EXPECT_EQ(s.converted_files, 0u);
}

TEST(PackTest, RefusesBadOutputsWithNothingLeft) {
  ModelFolder m;
  PackOptions o;
  o.input_dir = m.dir;
  o.output = m.tmp.File("m.zip");
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr(".tar.zst")));
  o.output = m.tmp.File("m.tar");
  o.format = ArchiveFormat::kTarZstd;
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("--format")));
  o.format.reset();
  o.output = m.dir + "/unet/self.tar";
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("inside")));
  o.output = m.tmp.File("nofolder/m.tar");
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kNotFound, HasSubstr("nofolder")));
  o.precision = "fp8";
  EXPECT_THAT(PackModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("fp8")));
  EXPECT_THAT(Leftovers(m.tmp.path(), "model"), ElementsAre());
}

TEST(PackTest, AMalformedSafetensorsFileFailsTheConversionAndLeavesNothing) {
  ModelFolder m;
  const std::string bad = m.dir + "/unet/broken.safetensors";
  testing::WriteFile(bad, std::string("\x10\0\0\0\0\0\0\0{\"a\":", 13));
  EXPECT_THAT(Pack(m.dir, m.tmp.File("m.tar.zst"), "fp16"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("broken.safetensors")));
  EXPECT_THAT(Leftovers(m.tmp.path(), "model"), ElementsAre());
  // Without a conversion the file is packed as it is.
  FL_EXPECT_OK(Pack(m.dir, m.tmp.File("m.tar.zst")).status());
}

TEST(PackTest, LongPathsAndLargeFilesSpanFramesAndRoundTrip) {
  testing::TempDir tmp;
  const std::string d = tmp.File("m");
  const std::string deep = std::string(120, 'd') + "/" + std::string(90, 'e');
  fs::create_directories(d + "/" + deep);
  const std::vector<std::byte> big = testing::PositionalBytes(300'000, 5);
  testing::WriteFile(d + "/" + deep + "/w.bin", big);
  FL_ASSERT_OK(Pack(d, tmp.File("m.tar.zst")).status());
  const std::string tar = Decompress(ReadAll(tmp.File("m.tar.zst")));
  std::vector<Member> members = WalkTar(tar);
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[2].path, deep + "/w.bin");
  ASSERT_EQ(members[2].data.size(), big.size());
  EXPECT_EQ(std::memcmp(members[2].data.data(), big.data(), big.size()), 0);
}

// Lowers the process's file-size limit for the scope (write() then fails with EFBIG once a file
// would grow past it, as on a full disk), with SIGXFSZ ignored.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit r = saved_;
    r.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t old_handler_;
};

TEST(PackTest, AWriteErrorNamesTheTemporaryFileAndLeavesNothing) {
  ModelFolder m;
  for (const char* name : {"m.tar", "m.tar.zst"}) {
    Result<PackSummary> r = InternalError("not run");
    {
      FileSizeLimit limit(2000);
      r = Pack(m.dir, m.tmp.File(name), "fp16");
    }
    EXPECT_THAT(r, StatusIs(StatusCode::kIoError, AllOf(HasSubstr(std::string(name) + ".tmp."),
                                                        HasSubstr("byte offset"))))
        << name;
    EXPECT_THAT(Leftovers(m.tmp.path(), "model"), ElementsAre()) << name;
  }
}

// A model folder with a saved compile cache (flashload.torch.save_compile_cache's layout).
void AddCompileCache(const std::string& dir) {
  const std::string entry = dir + "/.flashload/compile-cache/torch2.15-cpython-3.11-avx2-opt1";
  fs::create_directories(entry);
  testing::WriteFile(entry + "/manifest.json", std::string("{\"format\": 1}\n"));
  testing::WriteFile(entry + "/inductor.tar", std::string(1536, 'k'));
  testing::WriteFile(dir + "/.flashload/compile-cache/index.json", std::string("{}"));
}

std::vector<std::string> MemberPaths(const std::string& tar_path) {
  std::vector<std::string> paths;
  for (const Member& mm : WalkTar(ReadAll(tar_path))) paths.push_back(mm.path);
  return paths;
}

TEST(PackTest, TheCompileCacheIsPackedByDefault) {
  ModelFolder m;
  AddCompileCache(m.dir);
  const std::string out = m.tmp.File("m.tar");
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, Pack(m.dir, out));
  EXPECT_EQ(s.compile_cache_files, 3u);
  EXPECT_FALSE(s.compile_cache_left_out);
  const std::vector<std::string> paths = MemberPaths(out);
  const std::string entry = ".flashload/compile-cache/torch2.15-cpython-3.11-avx2-opt1";
  EXPECT_THAT(paths,
              ::testing::IsSupersetOf(std::vector<std::string>{
                  ".flashload/", ".flashload/compile-cache/", ".flashload/compile-cache/index.json",
                  entry + "/", entry + "/inductor.tar", entry + "/manifest.json"}));
  for (const Member& mm : WalkTar(ReadAll(out))) {
    if (mm.path == entry + "/inductor.tar") EXPECT_EQ(mm.data, std::string(1536, 'k'));
  }
}

TEST(PackTest, NoCompileCacheLeavesItOutAndTheEmptyDotFolderToo) {
  ModelFolder m;
  AddCompileCache(m.dir);
  const std::string with = m.tmp.File("with.tar");
  const std::string without = m.tmp.File("without.tar");
  const std::string plain = m.tmp.File("plain.tar");
  FL_ASSERT_OK(Pack(m.dir, with).status());
  PackOptions o;
  o.input_dir = m.dir;
  o.output = without;
  o.compile_cache = false;
  FL_ASSERT_OK_AND_ASSIGN(PackSummary s, PackModel(o));
  EXPECT_EQ(s.compile_cache_files, 0u);
  EXPECT_TRUE(s.compile_cache_left_out);
  EXPECT_EQ(s.members, 8u);
  // Left out, the archive is the one of the folder without a compile cache, byte for byte.
  fs::remove_all(m.dir + "/.flashload");
  FL_ASSERT_OK(Pack(m.dir, plain).status());
  EXPECT_EQ(ReadAll(without), ReadAll(plain));
  EXPECT_NE(ReadAll(with), ReadAll(plain));
}

TEST(PackTest, NoCompileCacheKeepsTheRestOfTheDotFolder) {
  ModelFolder m;
  AddCompileCache(m.dir);
  testing::WriteFile(m.dir + "/.flashload/notes.txt", std::string("kept"));
  // A name that only starts like the cache folder is not the cache.
  testing::WriteFile(m.dir + "/.flashload/compile-cache-notes", std::string("kept too"));
  PackOptions o;
  o.input_dir = m.dir;
  o.output = m.tmp.File("m.tar");
  o.compile_cache = false;
  FL_ASSERT_OK(PackModel(o).status());
  std::vector<std::string> dot;
  for (const std::string& p : MemberPaths(o.output)) {
    if (p.starts_with(".flashload")) dot.push_back(p);
  }
  EXPECT_THAT(dot,
              ElementsAre(".flashload/", ".flashload/compile-cache-notes", ".flashload/notes.txt"));
}

TEST(PackTest, CompileCachePathsAreTheFolderAndWhatItHolds) {
  EXPECT_TRUE(IsCompileCachePath(".flashload/compile-cache"));
  EXPECT_TRUE(IsCompileCachePath(".flashload/compile-cache/k/manifest.json"));
  EXPECT_FALSE(IsCompileCachePath(".flashload/compile-cache-notes"));
  EXPECT_FALSE(IsCompileCachePath(".flashload"));
  EXPECT_FALSE(IsCompileCachePath("unet/.flashload/compile-cache/x"));
  std::vector<PackEntry> none = {{"a", false, 1}};
  EXPECT_FALSE(RemoveCompileCache(none));
  EXPECT_EQ(none.size(), 1u);
}

}  // namespace
}  // namespace flashload::store
