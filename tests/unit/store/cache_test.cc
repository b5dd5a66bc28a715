#include "store/cache.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "io/sigv4.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::ReadFile;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// ---- the manifest --------------------------------------------------------------------------

const std::string kSha(64, 'a');

TEST(ManifestTest, RoundTripsThroughItsJson) {
  Manifest m;
  m.files = {{"models--a--b--fp16.tar.zst", 12, kSha}, {"sub/\"quoted\".json", 0, kSha}};
  Result<Manifest> back = ParseManifest(ManifestJson(m), "m");
  ASSERT_THAT(back, IsOk());
  ASSERT_EQ(back->files.size(), 2u);
  EXPECT_EQ(back->files[1].name, "sub/\"quoted\".json");
  EXPECT_EQ(back->files[0].size, 12u);
  EXPECT_TRUE(back->verified);
  m.source = "s3://b/k";
  m.verified = false;
  back = ParseManifest(ManifestJson(m), "m");
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->source, "s3://b/k");
  EXPECT_FALSE(back->verified);
}

TEST(ManifestTest, RefusesUnsafeNamesBadFieldsAndOtherFormats) {
  auto manifest_with = [](std::string_view name, std::string_view size, std::string_view sha) {
    return fmt::format(
        R"({{"format": 1, "files": [{{"name": "{}", "size": {}, "sha256": "{}"}}]}})", name, size,
        sha);
  };
  for (std::string_view bad :
       {"../x", "/abs", "a//b", "a/./b", "", ".flashload-manifest.json", ".flashload/other",
        ".flashload/compile-cache", ".flashload/compile-cache/../x", ".flashload-tmp-1"}) {
    EXPECT_THAT(ParseManifest(manifest_with(bad, "1", kSha), "m.json"),
                StatusIs(StatusCode::kDataLoss))
        << bad;
  }
  EXPECT_THAT(ParseManifest(manifest_with("a", "-1", kSha), "m"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseManifest(manifest_with("a", "1", "ABC"), "m"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseManifest(manifest_with("a", "1", std::string(64, 'A')), "m"),
              StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseManifest(R"({"format": 2, "files": []})", "m"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseManifest(R"({"format": 1, "files": []})", "m"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseManifest("not json", "m"), StatusIs(StatusCode::kDataLoss));
  Result<Manifest> twice = ParseManifest(
      fmt::format(R"({{"format": 1, "files": [{{"name": "a", "size": 1, "sha256": "{0}"}},
                  {{"name": "a", "size": 1, "sha256": "{0}"}}]}})",
                  kSha),
      "s3://b/m.json");
  EXPECT_THAT(twice, StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(twice.status().message(), HasSubstr("s3://b/m.json: files[1]: 'a' is listed twice"));
}

TEST(ManifestTest, TheCompileCacheFolderTravelsWithTheModel) {
  const std::string json = fmt::format(
      R"({{"format": 1, "files": [{{"name": "unet/w.safetensors", "size": 1, "sha256": "{0}"}},
      {{"name": ".flashload/compile-cache/k/manifest.json", "size": 1, "sha256": "{0}"}}]}})",
      kSha);
  Result<Manifest> m = ParseManifest(json, "m.json");
  ASSERT_THAT(m, IsOk());
  ASSERT_EQ(m->files.size(), 2u);
  EXPECT_EQ(m->files[1].name, ".flashload/compile-cache/k/manifest.json");
}

TEST(CacheEntryNameTest, IsStableSanitizedAndDiffersBetweenStores) {
  const std::string a = CacheEntryName("s3://one/models--o--n--fp16.tar.zst");
  EXPECT_EQ(a, CacheEntryName("s3://one/models--o--n--fp16.tar.zst"));
  EXPECT_TRUE(a.starts_with("models--o--n--fp16.tar.zst-")) << a;
  EXPECT_NE(a, CacheEntryName("s3://two/models--o--n--fp16.tar.zst"));
  EXPECT_EQ(CacheEntryName("s3://b/folder/"), CacheEntryName("s3://b/folder"));
  EXPECT_TRUE(CacheEntryName("https://h/x%20y?z").starts_with("x_20y_z-"));
  EXPECT_FALSE(CacheEntryName("https://h/.hidden").starts_with("."));
}

TEST(ResolvePullUrlTest, TakesUrlsAndReferencesAndRefusesLocalPaths) {
  EXPECT_EQ(*ResolvePullUrl("s3://b/k"), "s3://b/k");
  EXPECT_EQ(*ResolvePullUrl("https://h/k"), "https://h/k");
  EXPECT_THAT(ResolvePullUrl("/tmp/x"), StatusIs(StatusCode::kInvalidArgument));
  ASSERT_EQ(setenv("FLASHLOAD_STORE", "s3://bucket/models", 1), 0);
  Result<std::string> url = ResolvePullUrl("acme/tiny@fp16");
  unsetenv("FLASHLOAD_STORE");
  ASSERT_THAT(url, IsOk());
  EXPECT_EQ(*url, "s3://bucket/models/models--acme--tiny--fp16.tar.zst");
  EXPECT_THAT(ResolvePullUrl("acme/tiny@fp16"), StatusIs(StatusCode::kFailedPrecondition));
}

// ---- pulls from an HTTP server --------------------------------------------------------------

class PullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.File("root/b"));
    Result<std::unique_ptr<RangeServer>> s =
        RangeServer::Start(RangeServerScript(), dir_.File("root"), dir_.path());
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
  }

  // Writes root/b/<key> and, unless `manifest` is false, root/b/<key>.manifest.json.
  std::vector<std::byte> Publish(const std::string& key, uint64_t size, uint64_t seed,
                                 bool manifest = true, const std::string& sha = "") {
    std::vector<std::byte> data = PositionalBytes(size, seed);
    fs::create_directories(fs::path(dir_.File("root/b/" + key)).parent_path());
    WriteFile(dir_.File("root/b/" + key), data);
    if (manifest) {
      Manifest m;
      m.files = {{key.substr(key.rfind('/') + 1), size, sha.empty() ? Sha256Hex(data) : sha}};
      WriteFile(dir_.File("root/b/" + key + ".manifest.json"), ManifestJson(m));
    }
    return data;
  }

  PullOptions Options(const std::string& cache = "cache") {
    PullOptions o;
    o.cache_dir = dir_.File(cache);
    o.transfer.chunk_bytes = kMiB;
    o.transfer.open.remote.max_attempts = 1;
    return o;
  }

  std::vector<std::string> Entries(const std::string& cache = "cache") {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_.File(cache), ec)) {
      const std::string name = e.path().filename().string();
      if (e.is_directory() && !name.starts_with(".")) out.push_back(name);
    }
    return out;
  }

  size_t PartialCount(const std::string& cache = "cache") {
    std::error_code ec;
    size_t n = 0;
    for (auto it = fs::directory_iterator(dir_.File(cache + "/.partial"), ec);
         !ec && it != fs::directory_iterator(); ++it) {
      ++n;
    }
    return n;
  }

  uint64_t Requests() {
    Result<uint64_t> n = server_->Stat("requests");
    EXPECT_THAT(n, IsOk());
    return n.ok() ? *n : 0;
  }

  TempDir dir_;
  std::unique_ptr<RangeServer> server_;
};

TEST_F(PullTest, VerifiesAgainstTheManifestThenReusesTheEntryWithoutADownload) {
  const std::vector<std::byte> data = Publish("models--o--n--fp16.tar.zst", 3 * kMiB + 5, 1);
  const std::string url = server_->Url("b/models--o--n--fp16.tar.zst");
  Result<PullResult> first = Pull(url, Options());
  ASSERT_THAT(first, IsOk());
  EXPECT_TRUE(first->downloaded);
  EXPECT_TRUE(first->verified);
  EXPECT_EQ(first->note, "");
  EXPECT_EQ(first->path, first->entry_dir + "/models--o--n--fp16.tar.zst");
  EXPECT_EQ(ReadFile(first->path), data);

  const uint64_t before = Requests();
  Result<PullResult> second = Pull(url, Options());
  ASSERT_THAT(second, IsOk());
  EXPECT_FALSE(second->downloaded);
  EXPECT_EQ(second->path, first->path);
  EXPECT_EQ(Requests(), before + 1);  // only the statistics request itself
  EXPECT_EQ(Entries().size(), 1u);
  EXPECT_EQ(PartialCount(), 0u);
}

TEST_F(PullTest, ConcurrentPullsFromTwoThreadsLeaveOneEntryAndDownloadOnce) {
  const std::vector<std::byte> data = Publish("race.bin", 6 * kMiB, 2);
  const std::string url = server_->Url("b/race.bin");
  // What one pull costs, in a cache of its own.
  uint64_t before = Requests();
  ASSERT_THAT(Pull(url, Options("solo")), IsOk());
  const uint64_t one_pull = Requests() - before - 1;

  before = Requests();
  Result<PullResult> results[2] = {InternalError("not run"), InternalError("not run")};
  {
    std::jthread a([&] { results[0] = Pull(url, Options()); });
    std::jthread b([&] { results[1] = Pull(url, Options()); });
  }
  ASSERT_THAT(results[0], IsOk());
  ASSERT_THAT(results[1], IsOk());
  EXPECT_NE(results[0]->downloaded, results[1]->downloaded);
  EXPECT_EQ(results[0]->path, results[1]->path);
  EXPECT_EQ(ReadFile(results[0]->path), data);
  EXPECT_EQ(Entries().size(), 1u);
  EXPECT_EQ(Requests() - before - 1, one_pull);
}

TEST_F(PullTest, AFailedDownloadLeavesNothingValidAndALaterPullSucceeds) {
  const std::vector<std::byte> data = Publish("flaky.bin", 3 * kMiB, 3);
  const std::string url = server_->Url("b/flaky.bin");
  // Request 1 is the manifest, 2 the object's opening GET (its first MiB), 3 the next range:
  // the connection is reset halfway through it, with part of the object already written.
  ASSERT_THAT(server_->SetFaults("reset:every=3"), IsOk());
  Result<PullResult> failed = Pull(url, Options());
  EXPECT_THAT(failed, StatusIs(StatusCode::kUnavailable));
  EXPECT_TRUE(Entries().empty());
  EXPECT_EQ(PartialCount(), 0u);

  ASSERT_THAT(server_->SetFaults(""), IsOk());
  Result<PullResult> ok = Pull(url, Options());
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ReadFile(ok->path), data);
}

TEST_F(PullTest, AChecksumOrSizeThatDiffersFromTheManifestIsRefusedAndNothingIsKept) {
  Publish("bad.bin", 2 * kMiB, 4, /*manifest=*/true, /*sha=*/std::string(64, '0'));
  Result<PullResult> r = Pull(server_->Url("b/bad.bin"), Options());
  EXPECT_THAT(r, StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(r.status().message(), HasSubstr("SHA-256"));
  EXPECT_THAT(r.status().message(), HasSubstr("bad.bin"));
  EXPECT_TRUE(Entries().empty());
  EXPECT_EQ(PartialCount(), 0u);

  std::vector<std::byte> data = Publish("short.bin", kMiB, 5);
  WriteFile(dir_.File("root/b/short.bin"), std::span(data).first(kMiB - 1));
  EXPECT_THAT(Pull(server_->Url("b/short.bin"), Options()), StatusIs(StatusCode::kDataLoss));
  EXPECT_TRUE(Entries().empty());
}

TEST_F(PullTest, AnObjectWithoutAManifestIsAcceptedUnverifiedWithItsChecksumRecorded) {
  const std::vector<std::byte> data = Publish("plain.bin", kMiB + 1, 6, /*manifest=*/false);
  Result<PullResult> r = Pull(server_->Url("b/plain.bin"), Options());
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->verified);
  EXPECT_EQ(r->note, "unverified: no manifest on the server");
  EXPECT_EQ(r->manifest.files.at(0).sha256, Sha256Hex(data));
  Result<PullResult> again = Pull(server_->Url("b/plain.bin"), Options());
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->downloaded);
  EXPECT_EQ(again->note, "unverified: no manifest on the server");
}

TEST_F(PullTest, APresignedUrlIsNamedByItsPathAndPulledUnverified) {
  const std::vector<std::byte> data = Publish("signed.bin", kMiB, 11);  // a manifest is there
  const std::string url = server_->Url("b/signed.bin");
  Result<PullResult> first = Pull(url + "?X-Amz-Signature=abc&X-Amz-Expires=60", Options());
  ASSERT_THAT(first, IsOk());
  EXPECT_TRUE(first->downloaded);
  EXPECT_FALSE(first->verified);  // its manifest cannot be derived from a signed URL
  EXPECT_EQ(first->note, "unverified: no manifest is looked up for a URL with a query string");
  EXPECT_EQ(ReadFile(first->path), data);
  EXPECT_TRUE(first->path.ends_with("/signed.bin"));
  // Another signature of the same object finds the same entry.
  Result<PullResult> second = Pull(url + "?X-Amz-Signature=def", Options());
  ASSERT_THAT(second, IsOk());
  EXPECT_FALSE(second->downloaded);
  EXPECT_EQ(second->path, first->path);
  EXPECT_THAT(Pull(server_->Url("b/folder/?sig=1"), Options()),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(PullTest, AFolderIsPulledFromItsManifestAndRefusedWithoutOne) {
  const std::vector<std::byte> a = Publish("folder/a.bin", 100, 7, false);
  const std::vector<std::byte> b = Publish("folder/sub/b.bin", 2 * kMiB + 3, 8, false);
  const std::vector<std::byte> c = Publish("folder/sub dir/c%d.bin", 10, 12, false);
  EXPECT_THAT(Pull(server_->Url("b/folder/"), Options()),
              StatusIs(StatusCode::kFailedPrecondition));
  Manifest m;
  m.files = {{"a.bin", a.size(), Sha256Hex(a)},
             {"sub/b.bin", b.size(), Sha256Hex(b)},
             {"sub dir/c%d.bin", c.size(), Sha256Hex(c)}};  // percent-encoded on the wire
  WriteFile(dir_.File("root/b/folder.manifest.json"), ManifestJson(m));
  Result<PullResult> r = Pull(server_->Url("b/folder/"), Options());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->path, r->entry_dir);
  EXPECT_EQ(ReadFile(r->path + "/a.bin"), a);
  EXPECT_EQ(ReadFile(r->path + "/sub/b.bin"), b);
  EXPECT_EQ(ReadFile(r->path + "/sub dir/c%d.bin"), c);
}

TEST_F(PullTest, AFolderPullBringsTheCompileCacheWithTheWeights) {
  const std::vector<std::byte> w = Publish("sd/unet/w.safetensors", 4096, 21, false);
  const std::string entry = ".flashload/compile-cache/torch2.15-cpython-3.11-x86_64-avx2-opt1";
  const std::vector<std::byte> manifest = Publish("sd/" + entry + "/manifest.json", 300, 22, false);
  const std::vector<std::byte> blob = Publish("sd/" + entry + "/inductor.tar", kMiB + 7, 23, false);
  Manifest m;
  m.files = {{"unet/w.safetensors", w.size(), Sha256Hex(w)},
             {entry + "/manifest.json", manifest.size(), Sha256Hex(manifest)},
             {entry + "/inductor.tar", blob.size(), Sha256Hex(blob)}};
  WriteFile(dir_.File("root/b/sd.manifest.json"), ManifestJson(m));
  Result<PullResult> r = Pull(server_->Url("b/sd/"), Options());
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->verified);
  EXPECT_EQ(ReadFile(r->path + "/unet/w.safetensors"), w);
  EXPECT_EQ(ReadFile(r->path + "/" + entry + "/manifest.json"), manifest);
  EXPECT_EQ(ReadFile(r->path + "/" + entry + "/inductor.tar"), blob);
}

TEST_F(PullTest, APartialFolderLeftByAKilledPullIsRemovedAndNeverUsed) {
  const std::vector<std::byte> data = Publish("killed.bin", kMiB, 9);
  const std::string url = server_->Url("b/killed.bin");
  const std::string leftover =
      dir_.File(fmt::format("cache/.partial/{}.99999.0", CacheEntryName(url)));
  fs::create_directories(leftover);
  WriteFile(leftover + "/killed.bin", std::string("half"));
  Result<PullResult> r = Pull(url, Options());
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->downloaded);
  EXPECT_EQ(ReadFile(r->path), data);
  EXPECT_FALSE(fs::exists(leftover));
}

TEST_F(PullTest, VerifyRehashesAndRemovesADamagedEntry) {
  Publish("v.bin", kMiB, 10);
  const std::string url = server_->Url("b/v.bin");
  Result<PullResult> r = Pull(url, Options());
  ASSERT_THAT(r, IsOk());
  PullOptions verify = Options();
  verify.verify = true;
  Result<PullResult> ok = Pull(url, verify);
  ASSERT_THAT(ok, IsOk());
  EXPECT_TRUE(ok->rehashed);
  EXPECT_EQ(ok->bytes, kMiB);

  std::vector<std::byte> damaged = ReadFile(r->path);
  damaged[12345] ^= std::byte{1};
  WriteFile(r->path, damaged);
  Result<PullResult> bad = Pull(url, verify);
  EXPECT_THAT(bad, StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(bad.status().message(), HasSubstr("removed"));
  EXPECT_TRUE(Entries().empty());
  Result<PullResult> again = Pull(url, Options());
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->downloaded);
}

}  // namespace
}  // namespace flashload::store
