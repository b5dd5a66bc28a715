#include "store/unpack.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zstd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "format/tar.h"
#include "format/zstd_seekable.h"
#include "store/pack.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A ustar header block written by hand, so that members flashload would never write (links,
// devices, absolute paths, "..") can be built.
std::string RawHeader(const std::string& name, char type, uint64_t size,
                      const std::string& link = "") {
  std::string b(512, '\0');
  std::memcpy(b.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::memcpy(b.data() + 100, "0000644", 7);
  std::memcpy(b.data() + 108, "0000000", 7);
  std::memcpy(b.data() + 116, "0000000", 7);
  const std::string sz = fmt::format("{:011o}", size);
  std::memcpy(b.data() + 124, sz.data(), 11);
  std::memcpy(b.data() + 136, "00000000000", 11);
  b[156] = type;
  std::memcpy(b.data() + 157, link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(b.data() + 257,
              "ustar\0"
              "00",
              8);
  std::memset(b.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  const std::string cs = fmt::format("{:06o}", sum);
  std::memcpy(b.data() + 148, cs.data(), 6);
  b[154] = '\0';
  return b;
}

std::string File(const std::string& name, const std::string& data) {
  return RawHeader(name, '0', data.size()) + data +
         std::string(format::TarPadding(data.size()), '\0');
}

std::string End() { return std::string(1024, '\0'); }

std::string Zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

struct Target {
  testing::TempDir tmp;
  std::string archive = tmp.File("a.tar");
  std::string out = tmp.File("out");

  Result<UnpackSummary> Unpack(const std::string& bytes, UnpackLimits limits = {}) {
    testing::WriteFile(archive, bytes);
    UnpackOptions o;
    o.archive = archive;
    o.out_dir = out;
    o.limits = limits;
    return UnpackArchive(o);
  }
  // Nothing but the archive is left beside the target.
  std::vector<std::string> Leftovers() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(tmp.path())) {
      if (e.path() != archive) v.push_back(e.path().filename().string());
    }
    return v;
  }
};

std::string ReadAll(const std::string& path) {
  std::vector<std::byte> b = testing::ReadFile(path);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

TEST(UnpackTest, ExtractsFilesAndFoldersFromTarAndAnyZstd) {
  const std::string tar = RawHeader("./", '5', 0) + RawHeader("./unet/", '5', 0) +
                          File("./unet/w.safetensors", std::string(1500, 'w')) +
                          File("a/b/c.json", "{}") + File("empty", "") + End();
  for (const std::string& bytes : {tar, Zstd(tar)}) {
    Target t;
    FL_ASSERT_OK_AND_ASSIGN(UnpackSummary s, t.Unpack(bytes));
    EXPECT_EQ(s.compressed, bytes != tar);
    EXPECT_EQ(s.files, 3u);
    EXPECT_EQ(s.directories, 1u);  // "./" is the target itself; a/ and a/b/ are implied
    EXPECT_EQ(s.bytes_out, 1502u);
    EXPECT_EQ(ReadAll(t.out + "/unet/w.safetensors"), std::string(1500, 'w'));
    EXPECT_EQ(ReadAll(t.out + "/a/b/c.json"), "{}");
    EXPECT_EQ(ReadAll(t.out + "/empty"), "");
    EXPECT_THAT(t.Leftovers(), ElementsAre("out"));
  }
}

TEST(UnpackTest, RoundTripsAPackedFolder) {
  testing::TempDir tmp;
  const std::string d = tmp.File("m");
  fs::create_directories(d + "/unet");
  fs::create_directories(d + "/empty");
  testing::WriteFile(d + "/unet/w.bin", testing::PositionalBytes(1'000'000, 3));
  testing::WriteFile(d + "/model_index.json", std::string("{}"));
  for (const char* ext : {".tar", ".tar.zst"}) {
    PackOptions p;
    p.input_dir = d;
    p.output = tmp.File(std::string("m") + ext);
    p.frame_bytes = 100'000;
    FL_ASSERT_OK(PackModel(p).status());
    UnpackOptions o;
    o.archive = p.output;
    o.out_dir = tmp.File(std::string("out") + ext);
    FL_ASSERT_OK_AND_ASSIGN(UnpackSummary s, UnpackArchive(o));
    EXPECT_EQ(s.members, 4u);
    EXPECT_EQ(s.seekable, std::string(ext) == ".tar.zst");
    EXPECT_EQ(ReadAll(o.out_dir + "/unet/w.bin"), ReadAll(d + "/unet/w.bin"));
    EXPECT_EQ(ReadAll(o.out_dir + "/model_index.json"), "{}");
    EXPECT_TRUE(fs::is_directory(o.out_dir + "/empty"));
    EXPECT_EQ(fs::status(o.out_dir).permissions() & fs::perms::others_read, fs::perms::others_read);
  }
}

// Each refusal: the error names the member and its header's byte offset, and nothing is left.
struct Refusal {
  std::string what;
  std::string tar;
  StatusCode code;
  std::string message;
};

TEST(UnpackTest, RefusesMaliciousMembersLeavingNothing) {
  const std::string ok = File("ok.txt", "fine");  // 1024 bytes: the bad member's header follows
  std::vector<Refusal> cases = {
      {"traversal", ok + File("../evil", "x") + End(), StatusCode::kInvalidArgument,
       "'../evil' has a '..' segment"},
      {"nested traversal", ok + File("a/../../evil", "x") + End(), StatusCode::kInvalidArgument,
       "'..' segment"},
      {"absolute", ok + File("/abs", "x") + End(), StatusCode::kInvalidArgument, "is absolute"},
      {"symlink out", ok + RawHeader("link", '2', 0, "/etc") + File("link/passwd", "x") + End(),
       StatusCode::kInvalidArgument, "'link' (header at byte offset 1024"},
      {"symlink to passwd", ok + RawHeader("pw", '2', 0, "/etc/passwd") + File("pw", "x") + End(),
       StatusCode::kInvalidArgument, "symbolic link to '/etc/passwd'"},
      {"hardlink", ok + RawHeader("h", '1', 0, "/etc/passwd") + End(), StatusCode::kInvalidArgument,
       "hard link"},
      {"char device", ok + RawHeader("dev", '3', 0) + End(), StatusCode::kInvalidArgument,
       "character device"},
      {"fifo", ok + RawHeader("fifo", '6', 0) + End(), StatusCode::kInvalidArgument, "FIFO"},
      {"duplicate", ok + File("ok.txt", "again") + End(), StatusCode::kInvalidArgument,
       "duplicate"},
      {"file as folder", ok + File("ok.txt/x", "y") + End(), StatusCode::kInvalidArgument,
       "'ok.txt' is a file"},
      {"no end block", ok + File("b", "x"), StatusCode::kDataLoss, "truncated"},
      {"truncated data", ok + RawHeader("big", '0', 5000) + std::string(600, 'x'),
       StatusCode::kDataLoss, "truncated"},
      {"bad checksum", ok + std::string(511, 'q') + std::string(1, '\0') + End(),
       StatusCode::kDataLoss, "1024"},
  };
  for (const Refusal& c : cases) {
    for (bool zstd : {false, true}) {
      Target t;
      EXPECT_THAT(t.Unpack(zstd ? Zstd(c.tar) : c.tar),
                  StatusIs(c.code, AllOf(HasSubstr(t.archive), HasSubstr(c.message))))
          << c.what << (zstd ? " (zstd)" : "");
      EXPECT_THAT(t.Leftovers(), ElementsAre()) << c.what;
    }
  }
}

TEST(UnpackTest, RefusesAMemberClaimingATebibyteBeforeReadingIt) {
  format::TarEntry e;
  e.path = "huge.bin";
  e.size = uint64_t{1} << 40;
  FL_ASSERT_OK_AND_ASSIGN(std::string header, format::BuildTarHeader(e));
  Target t;
  EXPECT_THAT(t.Unpack(File("a", "1") + header + End()),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("huge.bin"), HasSubstr("1099511627776 bytes"),
                             HasSubstr("--max-member-gib"))));
  EXPECT_THAT(t.Leftovers(), ElementsAre());
}

TEST(UnpackTest, RefusesMoreMembersOrDataThanTheLimits) {
  // 200,000 empty files against a limit of 1,000.
  std::string many;
  many.reserve(200'000 * 512 + 1024);
  for (int i = 0; i < 200'000; ++i) many += RawHeader(fmt::format("f{}", i), '0', 0);
  many += End();
  UnpackLimits limits;
  limits.max_members = 1000;
  Target t;
  EXPECT_THAT(t.Unpack(many, limits),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("'f1000'"), HasSubstr("byte offset 512000"),
                             HasSubstr("--max-members"))));
  EXPECT_THAT(t.Leftovers(), ElementsAre());

  limits = {};
  limits.max_total_bytes = 3000;
  Target t2;
  EXPECT_THAT(
      t2.Unpack(File("a", std::string(2000, 'a')) + File("b", std::string(1001, 'b')) + End(),
                limits),
      StatusIs(StatusCode::kResourceExhausted,
               AllOf(HasSubstr("'b'"), HasSubstr("--max-total-gib"))));
  EXPECT_THAT(t2.Leftovers(), ElementsAre());
}

TEST(UnpackTest, RefusesAZstdFrameWithAHugeWindow) {
  // A frame header by hand: magic, descriptor 0 (no content size, not single segment), window
  // descriptor exponent 20 (2^30 bytes), then one empty last raw block.
  const std::string frame("\x28\xB5\x2F\xFD\x00\xA0\x01\x00\x00", 9);
  Target t;
  EXPECT_THAT(t.Unpack(frame),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr(t.archive), HasSubstr("window above 2^27"))));
  EXPECT_THAT(t.Leftovers(), ElementsAre());
  // The same frame is accepted under a larger limit (and then the stream is no tar at all).
  UnpackLimits limits;
  limits.window_log_max = 30;
  Target t2;
  EXPECT_THAT(t2.Unpack(frame, limits), StatusIs(StatusCode::kDataLoss, HasSubstr("tar")));
}

TEST(UnpackTest, RefusesATruncatedZstdStream) {
  std::string z = Zstd(File("a", std::string(100'000, 'a')) + End());
  z.resize(z.size() - 5);
  Target t;
  EXPECT_THAT(t.Unpack(z), StatusIs(StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(t.Leftovers(), ElementsAre());
}

TEST(UnpackTest, TargetMustBeNewOrEmpty) {
  Target t;
  fs::create_directories(t.out);
  FL_ASSERT_OK(t.Unpack(File("a", "1") + End()).status());  // an empty folder is replaced
  EXPECT_EQ(ReadAll(t.out + "/a"), "1");
  EXPECT_THAT(t.Unpack(File("b", "2") + End()),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("not an empty folder")));
  EXPECT_FALSE(fs::exists(t.out + "/b"));
}

TEST(UnpackTest, AWriteErrorNamesTheFileAndLeavesNothing) {
  Target t;
  const std::string tar = File("a/first.bin", std::string(1000, 'a')) +
                          File("a/second.bin", std::string(50'000, 'b')) + End();
  testing::WriteFile(t.archive, tar);
  rlimit saved{};
  ::getrlimit(RLIMIT_FSIZE, &saved);
  sighandler_t old = ::signal(SIGXFSZ, SIG_IGN);
  rlimit low = saved;
  low.rlim_cur = 20'000;  // below the second file, above the archive's reads
  ::setrlimit(RLIMIT_FSIZE, &low);
  UnpackOptions o;
  o.archive = t.archive;
  o.out_dir = t.out;
  Result<UnpackSummary> r = UnpackArchive(o);
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old);
  EXPECT_THAT(r, StatusIs(StatusCode::kIoError,
                          AllOf(HasSubstr("a/second.bin"), HasSubstr("byte offset 20000"))));
  EXPECT_THAT(t.Leftovers(), ElementsAre());
}

// A packed seekable archive of one 1 MB file in frames of 64 KiB.
struct Seekable {
  testing::TempDir tmp;
  std::string archive = tmp.File("m.tar.zst");
  std::string bytes;
  Seekable() {
    fs::create_directories(tmp.File("m"));
    testing::WriteFile(tmp.File("m/w.bin"), testing::PositionalBytes(1'000'000, 3));
    PackOptions p;
    p.input_dir = tmp.File("m");
    p.output = archive;
    p.frame_bytes = 64 << 10;
    EXPECT_THAT(PackModel(p), IsOk());
    bytes = ReadAll(archive);
  }
  Result<UnpackSummary> Unpack(const std::string& content, uint32_t threads = 0) {
    testing::WriteFile(archive, content);
    UnpackOptions o;
    o.archive = archive;
    o.out_dir = tmp.File(fmt::format("out{}", n++));
    o.threads = threads;
    return UnpackArchive(o);
  }
  int n = 0;
};

TEST(UnpackTest, SeekableFramesGiveTheSameFilesWhateverTheThreads) {
  Seekable a;
  for (uint32_t threads : {1u, 3u, 8u}) {
    FL_ASSERT_OK_AND_ASSIGN(UnpackSummary s, a.Unpack(a.bytes, threads));
    EXPECT_TRUE(s.seekable);
    EXPECT_EQ(ReadAll(s.out_dir + "/w.bin"), ReadAll(a.tmp.File("m/w.bin"))) << threads;
  }
}

TEST(UnpackTest, ADamagedFrameOfASeekableArchiveIsDataLossNamingTheFrame) {
  Seekable a;
  std::string bad = a.bytes;
  bad[bad.size() / 2] ^= 0x40;  // inside a frame of w.bin's data
  Result<UnpackSummary> r = a.Unpack(bad);
  EXPECT_THAT(r,
              StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr(a.archive), HasSubstr("zstd frame"),
                                                    HasSubstr("compressed byte offset"))));
  EXPECT_FALSE(fs::exists(a.tmp.File("out0")));
}

TEST(UnpackTest, ASeekTableThatDoesNotParseFallsBackToTheStream) {
  Seekable a;
  std::string bad = a.bytes;
  bad[bad.size() - 5] = static_cast<char>(0x7C);  // reserved descriptor bits set
  FL_ASSERT_OK_AND_ASSIGN(UnpackSummary s, a.Unpack(bad));
  EXPECT_FALSE(s.seekable);
  EXPECT_TRUE(s.compressed);
  EXPECT_EQ(ReadAll(s.out_dir + "/w.bin"), ReadAll(a.tmp.File("m/w.bin")));
}

TEST(UnpackTest, RefusesAHugeWindowInASeekableArchiveToo) {
  const std::string frame("\x28\xB5\x2F\xFD\x00\xA0\x01\x00\x00", 9);
  format::SeekFrame f;
  f.compressed_size = 9;
  f.decompressed_size = 0;
  FL_ASSERT_OK_AND_ASSIGN(std::string table, format::BuildSeekTable(std::span(&f, 1)));
  Target t;
  EXPECT_THAT(t.Unpack(frame + table),
              StatusIs(StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("zstd frame 0"), HasSubstr("window above 2^27"))));
  EXPECT_THAT(t.Leftovers(), ElementsAre());
}

}  // namespace
}  // namespace flashload::store
