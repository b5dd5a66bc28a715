#include "store/transfer.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "io/fault_source.h"
#include "io/memory_source.h"
#include "io/sigv4.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::ReadFile;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// "faultmem://NAME": an in-memory object wrapped in a FaultSource, registered once in the
// default registry so CopyObject() opens it like any other URI.
struct FaultyObject {
  std::vector<std::byte> bytes;
  std::optional<FaultOptions> fault;
};
std::mutex g_objects_mu;
std::map<std::string, FaultyObject> g_objects;

void RegisterFaultScheme() {
  static std::once_flag once;
  std::call_once(once, [] {
    DefaultSourceRegistry().Register(
        "faultmem",
        [](const std::string& uri, const OpenOptions&) -> Result<std::unique_ptr<Source>> {
          std::lock_guard lock(g_objects_mu);
          auto it = g_objects.find(uri);
          if (it == g_objects.end()) return NotFoundError(uri + ": no such test object");
          MemorySourceOptions mo;
          mo.name = uri;
          std::unique_ptr<Source> s = NewMemorySourceView(it->second.bytes, mo);
          if (it->second.fault) s = std::make_unique<FaultSource>(std::move(s), *it->second.fault);
          return s;
        });
  });
}

std::string AddObject(const std::string& name, std::vector<std::byte> bytes,
                      std::optional<FaultOptions> fault = std::nullopt) {
  RegisterFaultScheme();
  std::string uri = "faultmem://" + name;
  std::lock_guard lock(g_objects_mu);
  g_objects[uri] = {std::move(bytes), std::move(fault)};
  return uri;
}

TransferOptions SmallChunks() {
  TransferOptions o;
  o.chunk_bytes = kMiB;
  o.parallel = 4;
  return o;
}

// Files in `dir` whose name marks a temporary copy.
std::vector<std::string> TempFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename().string().find("flashload-tmp") != std::string::npos) {
      out.push_back(e.path().string());
    }
  }
  return out;
}

TEST(LocationOfTest, TellsLocalHttpAndS3Apart) {
  EXPECT_EQ(*LocationOf("/a/b"), Location::kLocal);
  EXPECT_EQ(*LocationOf("rel/b"), Location::kLocal);
  EXPECT_EQ(*LocationOf("file:///a/b"), Location::kLocal);
  EXPECT_EQ(*LocationOf("https://h/x"), Location::kHttp);
  EXPECT_EQ(*LocationOf("HTTP://h/x"), Location::kHttp);
  EXPECT_EQ(*LocationOf("s3://b/k"), Location::kS3);
  Result<Location> gs = LocationOf("gs://b/k");
  EXPECT_THAT(gs, StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(gs.status().message(), HasSubstr("gs://"));
}

TEST(CopyObjectTest, LocalCopyIsBitIdenticalWithItsSha256AndProgress) {
  TempDir dir;
  const std::vector<std::byte> data = PositionalBytes(5 * kMiB + 4321, /*seed=*/9);
  WriteFile(dir.File("src"), data);
  TransferOptions options = SmallChunks();
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  options.progress = [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); };
  Result<TransferResult> r = CopyObject(dir.File("src"), dir.File("dst"), options);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->bytes, data.size());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  const std::vector<std::byte> copied = ReadFile(dir.File("dst"));
  ASSERT_EQ(copied.size(), data.size());
  EXPECT_EQ(FirstPositionMismatch(copied, 0, 9), -1);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), std::make_pair(uint64_t{data.size()}, uint64_t{data.size()}));
  EXPECT_TRUE(TempFiles(dir.path()).empty());
}

TEST(CopyObjectTest, DirectWritesArePaddedThenCutToTheExactSize) {
  TempDir dir;
  const std::vector<std::byte> data = PositionalBytes(5 * kMiB + 4321, /*seed=*/6);
  WriteFile(dir.File("src"), data);
  TransferOptions options = SmallChunks();
  options.direct = true;
  options.chunk_bytes = kMiB + 1;  // rounded up to a multiple of 4096
  Result<TransferResult> r = CopyObject(dir.File("src"), dir.File("dst"), options);
  if (r.status().code() == StatusCode::kFailedPrecondition) {
    GTEST_SKIP() << "the temporary folder's file system refuses O_DIRECT: " << r.status().message();
  }
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  const std::vector<std::byte> copied = ReadFile(dir.File("dst"));
  ASSERT_EQ(copied.size(), data.size());
  EXPECT_EQ(FirstPositionMismatch(copied, 0, 6), -1);
  EXPECT_TRUE(TempFiles(dir.path()).empty());
}

TEST(CopyObjectTest, AnEmptyObjectCopiesToAnEmptyFile) {
  TempDir dir;
  WriteFile(dir.File("src"), std::string());
  Result<TransferResult> r =
      CopyObject("file://" + dir.File("src"), dir.File("dst"), SmallChunks());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->bytes, 0u);
  EXPECT_EQ(r->sha256, kEmptyPayloadSha256);
  EXPECT_TRUE(ReadFile(dir.File("dst")).empty());
}

TEST(CopyObjectTest, ShortReadsAreResumedAndTheBytesStayExact) {
  TempDir dir;
  const std::vector<std::byte> data = PositionalBytes(3 * kMiB + 7, 4);
  FaultOptions fault;
  fault.kind = FaultKind::kShortRead;
  fault.one_in = 2;
  fault.seed = 11;
  const std::string uri = AddObject("short", data, fault);
  Result<TransferResult> r = CopyObject(uri, dir.File("dst"), SmallChunks());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  EXPECT_EQ(FirstPositionMismatch(ReadFile(dir.File("dst")), 0, 4), -1);
}

TEST(CopyObjectTest, ASourceErrorLeavesTheOldDestinationAndNoTemporaryFile) {
  TempDir dir;
  WriteFile(dir.File("dst"), std::string("old contents"));
  FaultOptions fault;
  fault.kind = FaultKind::kIoError;
  fault.at_offsets = {2 * kMiB + 5};
  const std::string uri = AddObject("eio", PositionalBytes(4 * kMiB), fault);
  Result<TransferResult> r = CopyObject(uri, dir.File("dst"), SmallChunks());
  EXPECT_THAT(r, StatusIs(StatusCode::kIoError));
  EXPECT_THAT(r.status().message(), HasSubstr("faultmem://eio"));
  const std::vector<std::byte> kept = ReadFile(dir.File("dst"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(kept.data()), kept.size()), "old contents");
  EXPECT_TRUE(TempFiles(dir.path()).empty());
}

TEST(CopyObjectTest, CorruptedBytesChangeTheSha256) {
  TempDir dir;
  const std::vector<std::byte> data = PositionalBytes(2 * kMiB, 5);
  FaultOptions fault;
  fault.kind = FaultKind::kCorrupt;
  fault.max_faults = 1;
  const std::string uri = AddObject("flip", data, fault);
  Result<TransferResult> r = CopyObject(uri, dir.File("dst"), SmallChunks());
  ASSERT_THAT(r, IsOk());
  EXPECT_NE(r->sha256, Sha256Hex(data));  // what a manifest check catches
  EXPECT_EQ(r->sha256, Sha256Hex(ReadFile(dir.File("dst"))));
}

TEST(CopyObjectTest, CancellationStopsWithNothingWritten) {
  TempDir dir;
  WriteFile(dir.File("src"), PositionalBytes(8 * kMiB));
  std::atomic<bool> cancel{false};
  TransferOptions options = SmallChunks();
  options.parallel = 1;
  options.cancel = &cancel;
  options.progress = [&](uint64_t done, uint64_t) {
    if (done > 0) cancel = true;
  };
  Result<TransferResult> r = CopyObject(dir.File("src"), dir.File("dst"), options);
  EXPECT_THAT(r, StatusIs(StatusCode::kCancelled));
  EXPECT_FALSE(std::filesystem::exists(dir.File("dst")));
  EXPECT_TRUE(TempFiles(dir.path()).empty());
}

TEST(CopyObjectTest, RefusesHttpAsADestinationAndAMissingFolder) {
  TempDir dir;
  WriteFile(dir.File("src"), std::string("x"));
  EXPECT_THAT(CopyObject(dir.File("src"), "https://example.invalid/x", SmallChunks()),
              StatusIs(StatusCode::kInvalidArgument));
  Result<TransferResult> r = CopyObject(dir.File("src"), dir.File("no/such/dst"), SmallChunks());
  EXPECT_THAT(r, StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(r.status().message(), HasSubstr(dir.File("no/such/dst")));
}

TEST(HashObjectTest, MatchesTheSha256OfTheBytes) {
  const std::vector<std::byte> data = PositionalBytes(3 * kMiB + 1, 2);
  Result<TransferResult> r = HashObject(AddObject("hash", data), SmallChunks());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->bytes, data.size());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
}

TEST(PutBytesTest, WritesALocalFileWholeAndRefusesHttp) {
  TempDir dir;
  const std::string text = "{\"format\": 1}";
  const auto bytes = std::as_bytes(std::span(text.data(), text.size()));
  ASSERT_THAT(PutBytes(dir.File("m.json"), bytes, {}), IsOk());
  EXPECT_EQ(ReadFile(dir.File("m.json")).size(), text.size());
  EXPECT_TRUE(TempFiles(dir.path()).empty());
  EXPECT_THAT(PutBytes("http://example.invalid/m.json", bytes, {}),
              StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace flashload::store
