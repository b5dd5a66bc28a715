#include "io/page_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::PositionalBytes;
using ::flashload::testing::WriteFile;
using ::testing::HasSubstr;

// A folder on a disk-backed file system: /tmp may be tmpfs, whose pages cannot be evicted. Tries
// $TMPDIR, /var/tmp, then the working directory.
class DiskDir {
 public:
  DiskDir() {
    std::vector<std::string> bases;
    if (const char* t = std::getenv("TMPDIR"); t && *t) bases.push_back(t);
    bases.push_back("/var/tmp");
    bases.push_back(std::filesystem::current_path().string());
    for (const std::string& base : bases) {
      Result<FileSystemInfo> fs = FileSystemKind(base);
      if (!fs.ok() || fs->type == FileSystemType::kTmpfs) continue;
      std::string tmpl = base + "/flashload-pc-XXXXXX";
      if (::mkdtemp(tmpl.data()) != nullptr) {
        path_ = tmpl;
        return;
      }
    }
  }
  ~DiskDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(PageCacheTest, WrittenFileIsResidentAndEvictionDropsIt) {
  DiskDir dir;
  if (dir.path().empty()) GTEST_SKIP() << "no disk-backed writable folder (all candidates tmpfs)";
  const std::string path = dir.path() + "/resident.bin";
  WriteFile(path, PositionalBytes(8 << 20));
  Result<double> before = ResidentFraction(path);
  ASSERT_THAT(before, IsOk());
  EXPECT_GT(*before, 0.9);

  ASSERT_THAT(EvictFromPageCache(path), IsOk());
  Result<double> after = ResidentFraction(path);
  ASSERT_THAT(after, IsOk());
  EXPECT_LT(*after, 0.5) << "fadvise(DONTNEED) after fdatasync should drop most pages";
}

TEST(PageCacheTest, SampledResidencyFollowsTheExactOne) {
  DiskDir dir;
  if (dir.path().empty()) GTEST_SKIP() << "no disk-backed writable folder (all candidates tmpfs)";
  const std::string path = dir.path() + "/sampled.bin";
  WriteFile(path, PositionalBytes((40 << 20) + 123));
  Result<double> hot = SampledResidentFraction(path, 256 << 10, 4 << 20);
  ASSERT_THAT(hot, IsOk());
  EXPECT_GT(*hot, 0.9);
  ASSERT_THAT(EvictFromPageCache(path), IsOk());
  // Bring back only the first half: the sample must see about half.
  {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> buf(20 << 20);
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  }
  Result<double> exact = ResidentFraction(path);
  Result<double> sampled = SampledResidentFraction(path, 256 << 10, 4 << 20);
  ASSERT_THAT(exact, IsOk());
  ASSERT_THAT(sampled, IsOk());
  EXPECT_GT(*exact, 0.3);
  EXPECT_LT(*exact, 0.8);
  EXPECT_NEAR(*sampled, *exact, 0.2);
}

TEST(PageCacheTest, EmptyAndMissingFiles) {
  DiskDir dir;
  if (dir.path().empty()) GTEST_SKIP() << "no disk-backed writable folder (all candidates tmpfs)";
  const std::string empty = dir.path() + "/empty.bin";
  WriteFile(empty, std::string());
  Result<double> f = ResidentFraction(empty);
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(*f, 1.0);
  const std::string missing = dir.path() + "/missing.bin";
  EXPECT_THAT(ResidentFraction(missing), StatusIs(StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(EvictFromPageCache(missing), StatusIs(StatusCode::kNotFound));
  EXPECT_FALSE(SupportsDirectIo(missing));
}

TEST(PageCacheTest, FileSystemKindNamesKnownFileSystems) {
  Result<FileSystemInfo> proc = FileSystemKind("/proc");
  ASSERT_THAT(proc, IsOk());
  EXPECT_EQ(proc->type, FileSystemType::kUnknown);
  EXPECT_EQ(proc->name, "unknown");
  EXPECT_NE(proc->magic, 0u);
  if (FileSystemKind("/dev/shm").ok() && FileSystemKind("/dev/shm")->magic == 0x01021994) {
    EXPECT_EQ(FileSystemKind("/dev/shm")->type, FileSystemType::kTmpfs);
    EXPECT_EQ(FileSystemKind("/dev/shm")->name, "tmpfs");
    EXPECT_FALSE(FileSystemKind("/dev/shm")->network);
  }
  Result<FileSystemInfo> here = FileSystemKind(".");
  ASSERT_THAT(here, IsOk());
  EXPECT_FALSE(here->name.empty());
  EXPECT_THAT(FileSystemKind("/no/such/dir"), StatusIs(StatusCode::kNotFound));
}

TEST(PageCacheTest, DirectIoProbeMatchesTheFileSystem) {
  DiskDir dir;
  if (dir.path().empty()) GTEST_SKIP() << "no disk-backed writable folder (all candidates tmpfs)";
  const std::string path = dir.path() + "/d.bin";
  WriteFile(path, PositionalBytes(4096));
  Result<FileSystemInfo> fs = FileSystemKind(path);
  ASSERT_THAT(fs, IsOk());
  if (fs->type == FileSystemType::kExt4 || fs->type == FileSystemType::kXfs) {
    EXPECT_TRUE(SupportsDirectIo(path)) << fs->name << " supports O_DIRECT";
  }
}

TEST(PageCacheTest, DropAllCachesNeedsRoot) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "running as root: dropping every cache of a shared machine is not a unit test";
  }
  EXPECT_THAT(DropAllCaches(), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("root")));
}

}  // namespace
}  // namespace flashload
