// Reads through a file mapping that survive the file being truncated underneath (SIGBUS turned into
// a short copy), in one thread and in many, and SIGBUS outside a guarded read left to what was
// there before.
#include "io/mapping_guard.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "support/test_files.h"

namespace flashload::io_internal {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;

constexpr size_t kSize = 4 << 20;
constexpr uint64_t kSeed = 11;

// A shared read-only mapping of a positional file of kSize bytes, and its descriptor.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    WriteFile(path, PositionalBytes(kSize, kSeed));
    fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd_, 0);
    void* p = ::mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd_, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<const std::byte*>(p);
  }
  ~MappedFile() {
    ::munmap(const_cast<std::byte*>(base_), kSize);
    ::close(fd_);
  }
  const std::byte* base() const { return base_; }
  void Truncate(off_t size) { ASSERT_EQ(::ftruncate(fd_, size), 0); }

 private:
  int fd_ = -1;
  const std::byte* base_ = nullptr;
};

TEST(MappingGuardTest, CopiesAWholeMappingInOrder) {
  TempDir dir;
  MappedFile file(dir.File("whole.bin"));
  std::vector<std::byte> out(kSize);
  const void* fault = &out;  // overwritten
  EXPECT_EQ(GuardedCopy(out.data(), file.base(), kSize, &fault), kSize);
  EXPECT_EQ(fault, nullptr);
  EXPECT_EQ(FirstPositionMismatch(out, 0, kSeed), -1);
}

TEST(MappingGuardTest, TruncatedFileIsAShortCopyNotACrash) {
  TempDir dir;
  MappedFile file(dir.File("truncated.bin"));
  const off_t now = (1 << 20) + 100;
  file.Truncate(now);
  std::vector<std::byte> out(kSize);
  const void* fault = nullptr;
  const size_t copied = GuardedCopy(out.data(), file.base(), kSize, &fault);
  ASSERT_NE(fault, nullptr);
  const auto at = static_cast<const std::byte*>(fault) - file.base();
  // The page holding the new end is still readable (zeros past it); the next one faults.
  EXPECT_EQ(at, (now + 4095) / 4096 * 4096);
  EXPECT_LE(copied, static_cast<size_t>(now));
  EXPECT_GT(copied, 0u);
  EXPECT_EQ(FirstPositionMismatch({out.data(), copied}, 0, kSeed), -1);
}

TEST(MappingGuardTest, FaultsAgainAfterAFault) {
  // SIGBUS must not stay blocked after the first recovery (a blocked SIGBUS from a fault kills).
  TempDir dir;
  MappedFile file(dir.File("again.bin"));
  file.Truncate(0);
  std::vector<std::byte> out(4096);
  for (int i = 0; i < 3; ++i) {
    const void* fault = nullptr;
    EXPECT_EQ(GuardedCopy(out.data(), file.base() + 8192, out.size(), &fault), 0u);
    EXPECT_EQ(fault, file.base() + 8192);
  }
}

TEST(MappingGuardTest, EightThreadsFaultingAtOnce) {
  TempDir dir;
  MappedFile file(dir.File("threads.bin"));
  file.Truncate(1 << 20);
  std::vector<std::thread> threads;
  std::vector<size_t> copied(8);
  std::vector<const void*> faults(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> out(kSize);
      for (int i = 0; i < 20; ++i) {
        copied[t] = GuardedCopy(out.data(), file.base(), kSize, &faults[t]);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(copied[t], 1u << 20) << t;
    EXPECT_EQ(faults[t], file.base() + (1 << 20)) << t;
  }
}

TEST(MappingGuardTest, RunGuardedReturnsNullWhenNothingFaults) {
  int calls = 0;
  EXPECT_EQ(RunGuarded([](void* c) { ++*static_cast<int*>(c); }, &calls), nullptr);
  EXPECT_EQ(calls, 1);
}

TEST(MappingGuardDeathTest, SigbusOutsideAGuardedCopyStillKills) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(
      {
        std::byte b{};
        GuardedCopy(&b, &b, 1);  // installs the handler
        raise(SIGBUS);
      },
      "");
}

void ExitFortyTwo(int) { _exit(42); }

TEST(MappingGuardDeathTest, SigbusOutsideAGuardedCopyGoesToTheHandlerBefore) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = ExitFortyTwo;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, nullptr);
        std::byte b{};
        GuardedCopy(&b, &b, 1);  // installs ours over it
        raise(SIGBUS);
      },
      ::testing::ExitedWithCode(42), "");
}

}  // namespace
}  // namespace flashload::io_internal
