// Every local backend (io_uring direct and buffered, pread direct and buffered, mmap) against the
// same contract: positional bytes, odd sizes, aligned direct reads with the tail at EOF, many
// requests in flight, deadlines, cancellation, errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/page_cache.h"
#include "io/uring_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint64_t kOddSize = (1 << 20) + 123;
constexpr uint64_t kSeed = 7;

struct BackendCase {
  const char* label;
  LocalBackend backend;
  bool direct;
  const char* expected_backend;
};

std::string CaseName(const ::testing::TestParamInfo<BackendCase>& info) { return info.param.label; }

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, FreeDeleter>;

AlignedBuffer Allocate(size_t bytes, size_t alignment) {
  const size_t a = std::max<size_t>(alignment, 64);
  const size_t rounded = (bytes + a - 1) / a * a;
  return AlignedBuffer(static_cast<std::byte*>(std::aligned_alloc(a, std::max(rounded, a))));
}

class LocalSourceTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    path_ = dir_.File("odd.bin");
    WriteFile(path_, PositionalBytes(kOddSize, kSeed));
    if (GetParam().direct && !SupportsDirectIo(path_)) {
      GTEST_SKIP() << "the file system under " << dir_.path() << " refuses O_DIRECT";
    }
  }

  LocalOpenOptions Options() const {
    LocalOpenOptions o;
    o.backend = GetParam().backend;
    o.direct = GetParam().direct;
    o.fallback = false;  // a test of io_uring must not silently test the thread pool
    o.queue_depth = 8;
    o.threads = 4;
    return o;
  }

  std::unique_ptr<Source> Open(const std::string& path) {
    Result<std::unique_ptr<Source>> s = OpenLocalFile(path, Options());
    EXPECT_THAT(s, IsOk());
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // Reaps exactly `count` completions (in batches of `batch`), failing the test after 10 s.
  std::vector<ReadResult> ReapAll(Source& s, size_t count, size_t batch = 5) {
    std::vector<ReadResult> all;
    std::vector<ReadResult> out(batch);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (all.size() < count && std::chrono::steady_clock::now() < give_up) {
      Result<size_t> n = s.Reap(out, Deadline::In(std::chrono::milliseconds(500)));
      EXPECT_THAT(n, IsOk());
      if (!n.ok()) break;
      for (size_t i = 0; i < *n; ++i) all.push_back(std::move(out[i]));
    }
    EXPECT_EQ(all.size(), count);
    return all;
  }

  TempDir dir_;
  std::string path_;
};

TEST_P(LocalSourceTest, ReportsBackendSizeAndCaps) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->backend(), GetParam().expected_backend);
  EXPECT_EQ(s->size(), kOddSize);
  EXPECT_EQ(s->name(), path_);
  const SourceCaps caps = s->caps();
  EXPECT_EQ(caps.direct_io, GetParam().direct);
  EXPECT_GE(caps.max_in_flight, 1u);
  if (caps.direct_io) {
    EXPECT_GE(caps.alignment, 512u);
    EXPECT_EQ(caps.alignment & (caps.alignment - 1), 0u) << "alignment must be a power of two";
  }
}

TEST_P(LocalSourceTest, ReadAtWholeFileOfOddSize) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 1);
  // An aligned buffer of aligned length, longer than the file: the tail stops at EOF.
  const size_t len = (kOddSize + a - 1) / a * a;
  AlignedBuffer buf = Allocate(len, a);
  Result<size_t> n = s->ReadAt(0, {buf.get(), len});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, kOddSize);
  EXPECT_EQ(FirstPositionMismatch({buf.get(), kOddSize}, 0, kSeed), -1);
}

TEST_P(LocalSourceTest, ReadAtUnalignedEvenOnDirectSources) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(5001);
  Result<size_t> n = s->ReadAt(777, std::span(buf).subspan(1, 5000));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 5000u);
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).subspan(1, 5000), 777, kSeed), -1);
}

TEST_P(LocalSourceTest, ReadAtPastEndOfFile) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(100);
  Result<size_t> n = s->ReadAt(kOddSize - 10, buf);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).first(10), kOddSize - 10, kSeed), -1);
  n = s->ReadAt(kOddSize, buf);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  n = s->ReadAt(kOddSize + 4096 * 10, buf);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_THAT(ReadExact(*s, kOddSize - 10, buf), StatusIs(StatusCode::kDataLoss, HasSubstr(path_)));
}

TEST_P(LocalSourceTest, ManyAlignedRequestsInFlightIncludingTailAtEof) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  const uint64_t chunk = 4 * a;  // ~65 requests against a queue depth of 8
  const uint64_t total = (kOddSize + a - 1) / a * a;
  AlignedBuffer buf = Allocate(total, a);
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < total; off += chunk) {
    reqs.push_back({off, std::min(chunk, total - off), buf.get() + off, 1000 + off});
  }
  ASSERT_GT(reqs.size(), 2 * s->caps().max_in_flight);
  FL_ASSERT_OK(s->Submit(reqs));
  std::vector<ReadResult> done = ReapAll(*s, reqs.size());
  std::set<uint64_t> tags;
  for (const ReadResult& r : done) {
    ASSERT_THAT(r.status, IsOk());
    const uint64_t off = r.tag - 1000;
    ASSERT_TRUE(tags.insert(r.tag).second) << "tag " << r.tag << " completed twice";
    const uint64_t expected = std::min(chunk, kOddSize - off);
    EXPECT_EQ(r.bytes, expected) << "at offset " << off;
  }
  EXPECT_EQ(FirstPositionMismatch({buf.get(), kOddSize}, 0, kSeed), -1);
}

TEST_P(LocalSourceTest, RequestsPastEndOfFileCompleteWithZeroBytes) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  AlignedBuffer buf = Allocate(2 * a, a);
  const uint64_t past = (kOddSize / a + 4) * a;
  ReadRequest reqs[] = {{past, a, buf.get(), 1}, {0, 0, buf.get() + a, 2}};
  FL_ASSERT_OK(s->Submit(reqs));
  for (const ReadResult& r : ReapAll(*s, 2)) {
    EXPECT_THAT(r.status, IsOk());
    EXPECT_EQ(r.bytes, 0u) << "tag " << r.tag;
  }
}

TEST_P(LocalSourceTest, ReapReturnsZeroWhenTheDeadlinePasses) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  std::vector<ReadResult> out(4);
  Result<size_t> n = s->Reap(out, Deadline::Now());
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  const auto start = std::chrono::steady_clock::now();
  n = s->Reap(out, Deadline::In(std::chrono::milliseconds(30)));
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_GE(waited, std::chrono::milliseconds(25));
  EXPECT_LT(waited, std::chrono::seconds(2));
}

TEST_P(LocalSourceTest, ReapFromAnotherThreadWhileSubmitting) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  const uint64_t n_reqs = kOddSize / a;
  AlignedBuffer buf = Allocate(n_reqs * a, a);
  std::vector<ReadResult> done;
  std::thread reaper([&] { done = ReapAll(*s, n_reqs, 7); });
  for (uint64_t i = 0; i < n_reqs; ++i) {
    ReadRequest r{i * a, a, buf.get() + i * a, i};
    ASSERT_THAT(s->Submit({&r, 1}), IsOk());
  }
  reaper.join();
  for (const ReadResult& r : done) {
    EXPECT_THAT(r.status, IsOk());
    EXPECT_EQ(r.bytes, a);
  }
  EXPECT_EQ(FirstPositionMismatch({buf.get(), n_reqs * a}, 0, kSeed), -1);
}

TEST_P(LocalSourceTest, ConcurrentReadAt) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> buf(10007);
      for (uint64_t off = t * 1013; off < kOddSize; off += 100003) {
        Result<size_t> n = s->ReadAt(off, buf);
        const size_t want = std::min<uint64_t>(buf.size(), kOddSize - off);
        if (!n.ok() || *n != want ||
            FirstPositionMismatch(std::span(buf).first(want), off, kSeed) != -1) {
          ++bad;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_P(LocalSourceTest, CancelCompletesEveryRequestOnce) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  const uint64_t n_reqs = kOddSize / a;
  AlignedBuffer buf = Allocate(n_reqs * a, a);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < n_reqs; ++i) reqs.push_back({i * a, a, buf.get() + i * a, i});
  FL_ASSERT_OK(s->Submit(reqs));
  s->Cancel();
  std::set<uint64_t> tags;
  for (const ReadResult& r : ReapAll(*s, n_reqs)) {
    EXPECT_TRUE(tags.insert(r.tag).second);
    if (r.status.ok()) {
      EXPECT_EQ(r.bytes, a);
      EXPECT_EQ(FirstPositionMismatch({buf.get() + r.tag * a, a}, r.tag * a, kSeed), -1);
    } else {
      EXPECT_THAT(r.status, StatusIs(StatusCode::kCancelled));
    }
  }
  // Still usable after a cancel.
  ReadRequest again{0, a, buf.get(), 77};
  FL_ASSERT_OK(s->Submit({&again, 1}));
  std::vector<ReadResult> done = ReapAll(*s, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_THAT(done[0].status, IsOk());
  EXPECT_EQ(done[0].tag, 77u);
}

TEST_P(LocalSourceTest, DestroyWithRequestsInFlight) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  const uint64_t n_reqs = kOddSize / a;
  AlignedBuffer buf = Allocate(n_reqs * a, a);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < n_reqs; ++i) reqs.push_back({i * a, a, buf.get() + i * a, i});
  FL_ASSERT_OK(s->Submit(reqs));
  s.reset();  // must wait for the reads in the kernel before the buffer is freed below
  buf.reset();
}

TEST_P(LocalSourceTest, MisalignedBatchesAreRejectedOnlyByDirectSources) {
  auto s = Open(path_);
  ASSERT_NE(s, nullptr);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 512);
  AlignedBuffer buf = Allocate(4 * a, a);
  ReadRequest misaligned[] = {{0, a, buf.get(), 1}, {1, a, buf.get() + a + 3, 2}};
  if (!GetParam().direct) {
    // Buffered sources take any offset, length and buffer.
    FL_ASSERT_OK(s->Submit(misaligned));
    for (const ReadResult& r : ReapAll(*s, 2)) {
      ASSERT_THAT(r.status, IsOk());
      EXPECT_EQ(r.bytes, a);
    }
    EXPECT_EQ(FirstPositionMismatch({buf.get(), a}, 0, kSeed), -1);
    EXPECT_EQ(FirstPositionMismatch({buf.get() + a + 3, a}, 1, kSeed), -1);
    return;
  }
  EXPECT_THAT(s->Submit(misaligned), StatusIs(StatusCode::kInvalidArgument, HasSubstr("aligned")));
  ReadRequest bad_length{0, a + 1, buf.get(), 3};
  EXPECT_THAT(s->Submit({&bad_length, 1}), StatusIs(StatusCode::kInvalidArgument));
  ReadRequest bad_buffer{0, a, buf.get() + 1, 4};
  EXPECT_THAT(s->Submit({&bad_buffer, 1}), StatusIs(StatusCode::kInvalidArgument));
  // None of the failed batches was queued (the first request of `misaligned` was fine on its own).
  std::vector<ReadResult> out(4);
  Result<size_t> n = s->Reap(out, Deadline::In(std::chrono::milliseconds(20)));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

TEST_P(LocalSourceTest, EmptyFile) {
  const std::string empty = dir_.File("empty.bin");
  WriteFile(empty, std::string());
  auto s = Open(empty);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->size(), 0u);
  const uint32_t a = std::max<uint32_t>(s->caps().alignment, 4096);
  AlignedBuffer buf = Allocate(a, a);
  Result<size_t> n = s->ReadAt(0, {buf.get(), a});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  ReadRequest r{0, a, buf.get(), 5};
  FL_ASSERT_OK(s->Submit({&r, 1}));
  std::vector<ReadResult> done = ReapAll(*s, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_THAT(done[0].status, IsOk());
  EXPECT_EQ(done[0].bytes, 0u);
}

TEST_P(LocalSourceTest, MissingFileIsNotFoundAndNamesThePath) {
  const std::string missing = dir_.File("nope.safetensors");
  EXPECT_THAT(OpenLocalFile(missing, Options()),
              StatusIs(StatusCode::kNotFound, HasSubstr(missing)));
}

TEST_P(LocalSourceTest, DirectoryIsRejected) {
  EXPECT_THAT(OpenLocalFile(dir_.path(), Options()),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("directory")));
}

// A FIFO must be refused at once, never opened and waited on for a writer (safe_open hung here).
TEST_P(LocalSourceTest, FifoIsRejectedAtOnceAndNamed) {
  const std::string fifo = dir_.File("pipe.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(OpenLocalFile(fifo, Options()),
              StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(fifo), HasSubstr("FIFO"))));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// Truncated by another process after it was opened: every backend returns the bytes still in the
// file (a short read the engine reports as DATA_LOSS), and the mmap backend does not die of SIGBUS.
TEST_P(LocalSourceTest, TruncatedAfterOpenReadsWhatRemainsAndSurvives) {
  std::unique_ptr<Source> s = Open(path_);
  ASSERT_NE(s, nullptr);
  constexpr uint64_t kNow = 300000;  // mid-page, below the first 1 MiB
  ASSERT_EQ(::truncate(path_.c_str(), kNow), 0);
  AlignedBuffer buf = Allocate(kOddSize, 4096);
  Result<size_t> n = s->ReadAt(0, {buf.get(), kOddSize & ~uint64_t{4095}});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, kNow);
  EXPECT_EQ(FirstPositionMismatch({buf.get(), static_cast<size_t>(*n)}, 0, kSeed), -1);
  // Past the new end: nothing, as at end of file.
  Result<size_t> past = s->ReadAt(1 << 20, {buf.get(), 4096});
  ASSERT_THAT(past, IsOk());
  EXPECT_EQ(*past, 0u);
  // The same through Submit/Reap.
  ReadRequest r{1 << 19, 4096, buf.get(), 7};
  ASSERT_THAT(s->Submit({&r, 1}), IsOk());
  std::vector<ReadResult> done = ReapAll(*s, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_THAT(done[0].status, IsOk());
  EXPECT_EQ(done[0].bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, LocalSourceTest,
    ::testing::Values(BackendCase{"IoUringDirect", LocalBackend::kIoUring, true, "io_uring+direct"},
                      BackendCase{"IoUring", LocalBackend::kIoUring, false, "io_uring"},
                      BackendCase{"PreadDirect", LocalBackend::kThreadPool, true, "pread+direct"},
                      BackendCase{"Pread", LocalBackend::kThreadPool, false, "pread"},
                      BackendCase{"Mmap", LocalBackend::kMmap, false, "mmap"}),
    CaseName);

// Permission checks live in the open shared by every backend, so one backend proves them.
TEST(LocalFileErrorsTest, UnreadableFileIsAPermissionError) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: permission bits do not stop reads";
  TempDir dir;
  const std::string path = dir.File("locked.bin");
  WriteFile(path, PositionalBytes(100));
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  LocalOpenOptions o;
  o.backend = LocalBackend::kThreadPool;
  EXPECT_THAT(OpenLocalFile(path, o), StatusIs(StatusCode::kFailedPrecondition, HasSubstr(path)));
}

// A request larger than one SQE carries completes in pieces (the piece size shrunk so a small file
// shows it), direct and buffered, with the tail at EOF.
class UringPiecesTest : public ::testing::TestWithParam<bool> {};

TEST_P(UringPiecesTest, RequestLargerThanOneSqeCompletesInPieces) {
  TempDir dir;
  const std::string path = dir.File("big.bin");
  WriteFile(path, PositionalBytes(kOddSize, kSeed));
  const bool direct = GetParam();
  if (direct && !SupportsDirectIo(path)) GTEST_SKIP() << "the file system refuses O_DIRECT";
  LocalOpenOptions o;
  o.direct = direct;
  o.fallback = false;
  Result<std::unique_ptr<Source>> s = OpenUringSource(path, o, {.max_bytes_per_sqe = 64 << 10});
  ASSERT_THAT(s, IsOk());
  const uint32_t a = std::max<uint32_t>((*s)->caps().alignment, 4096);
  const uint64_t len = (kOddSize + a - 1) / a * a;
  AlignedBuffer buf = Allocate(len, a);
  ReadRequest reqs[] = {{0, len, buf.get(), 9}};
  FL_ASSERT_OK((*s)->Submit(reqs));
  std::vector<ReadResult> out(1);
  Result<size_t> n = (*s)->Reap(out, Deadline::In(std::chrono::seconds(10)));
  ASSERT_THAT(n, IsOk());
  ASSERT_EQ(*n, 1u);
  ASSERT_THAT(out[0].status, IsOk());
  EXPECT_EQ(out[0].tag, 9u);
  EXPECT_EQ(out[0].bytes, kOddSize);
  EXPECT_EQ(FirstPositionMismatch({buf.get(), kOddSize}, 0, kSeed), -1);
}

INSTANTIATE_TEST_SUITE_P(DirectAndBuffered, UringPiecesTest, ::testing::Bool());

// io_uring refused (simulated through the documented switch): fallback to the pool, or an error.
TEST(LocalFileFallbackTest, FallsBackToThreadPoolWhenIoUringIsUnavailable) {
  TempDir dir;
  const std::string path = dir.File("f.bin");
  WriteFile(path, PositionalBytes(10000, 1));
  ASSERT_EQ(::setenv("FLASHLOAD_DISABLE_IO_URING", "1", 1), 0);
  LocalOpenOptions o;
  o.backend = LocalBackend::kIoUring;
  o.fallback = true;
  Result<std::unique_ptr<Source>> s = OpenLocalFile(path, o);
  o.fallback = false;
  Result<std::unique_ptr<Source>> refused = OpenLocalFile(path, o);
  ::unsetenv("FLASHLOAD_DISABLE_IO_URING");
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ((*s)->backend(), "pread+fallback");
  std::vector<std::byte> buf(10000);
  ASSERT_THAT(ReadExact(**s, 0, buf), IsOk());
  EXPECT_EQ(FirstPositionMismatch(buf, 0, 1), -1);
  EXPECT_THAT(refused, StatusIs(StatusCode::kUnimplemented, HasSubstr("io_uring")));
}

}  // namespace
}  // namespace flashload
