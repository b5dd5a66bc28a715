#include "io/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "flashload/source.h"
#include "io/memory_source.h"
#include "io/retry_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("model.safetensors");
    WriteFile(path_, PositionalBytes(4000, 3));
  }
  void ExpectReadsTheFile(const std::string& uri) {
    Result<std::unique_ptr<Source>> s = OpenSource(uri);
    ASSERT_THAT(s, IsOk()) << uri;
    EXPECT_EQ((*s)->size(), 4000u);
    std::vector<std::byte> buf(4000);
    ASSERT_THAT(ReadExact(**s, 0, buf), IsOk());
    EXPECT_EQ(FirstPositionMismatch(buf, 0, 3), -1);
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(RegistryTest, PlainPathOpensTheLocalFile) { ExpectReadsTheFile(path_); }

TEST_F(RegistryTest, FileUriOpensTheLocalFile) {
  ExpectReadsTheFile("file://" + path_);
  ExpectReadsTheFile("FILE://" + path_);
  ExpectReadsTheFile("file://localhost" + path_);
}

TEST_F(RegistryTest, FileUriNeedsAnAbsolutePath) {
  EXPECT_THAT(OpenSource("file://relative/x"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(FileUriPath("http://x/y"), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(RegistryTest, UnknownSchemeListsTheKnownOnes) {
  EXPECT_THAT(
      OpenSource("gopher://host/model.safetensors"),
      StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr("gopher"), HasSubstr("file://"))));
}

TEST_F(RegistryTest, MissingFileIsNotFoundWithThePath) {
  const std::string missing = dir_.File("missing.safetensors");
  EXPECT_THAT(OpenSource(missing), StatusIs(StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(OpenSource("file://" + missing), StatusIs(StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(OpenSource(""), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(RegistryTest, RegisteredSchemesRouteToTheirFactory) {
  // The registry is process-wide and outlives this test, so the factory captures nothing local.
  static std::vector<std::string> seen;
  seen.clear();
  DefaultSourceRegistry().Register(
      "memtest", [](const std::string& uri, const OpenOptions&) -> Result<std::unique_ptr<Source>> {
        seen.push_back(uri);
        return NewMemorySource(PositionalBytes(10), {.name = uri});
      });
  EXPECT_THAT(RegisteredSourceSchemes(), Contains("memtest"));
  EXPECT_THAT(RegisteredSourceSchemes(), Contains("file"));
  Result<std::unique_ptr<Source>> a = OpenSource("memtest://bucket/key");
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ((*a)->name(), "memtest://bucket/key");
  // "scheme:rest" (as in "tar:") routes too once the scheme is registered.
  ASSERT_THAT(OpenSource("memtest:inner"), IsOk());
  EXPECT_EQ(seen, (std::vector<std::string>{"memtest://bucket/key", "memtest:inner"}));
}

TEST_F(RegistryTest, ModelStoresAreOnlyForRegisteredRemoteSchemes) {
  EXPECT_EQ(RemoteScheme("/a/b"), "");
  EXPECT_EQ(RemoteScheme("file:///a/b"), "");
  EXPECT_EQ(RemoteScheme("S3://bucket/key"), "s3");
  EXPECT_EQ(RemoteScheme("tar:x"), "") << "only scheme:// URIs name remote stores";
  Result<std::unique_ptr<ModelStore>> local = OpenModelStore("/a/b", {});
  ASSERT_THAT(local, IsOk());
  EXPECT_EQ(*local, nullptr);
  EXPECT_THAT(OpenModelStore("nostore://x/y", {}),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("nostore://x/y")));
}

TEST_F(RegistryTest, ColonInAPlainPathIsNotAScheme) {
  const std::string odd = dir_.File("weights:v2.bin");
  WriteFile(odd, PositionalBytes(4000, 3));
  const std::string cwd_relative = "weights:v2.bin";
  ExpectReadsTheFile(odd);
  EXPECT_THAT(OpenSource(cwd_relative), StatusIs(StatusCode::kNotFound, HasSubstr(cwd_relative)));
}

// A registry of its own: the policy is the registry's, the same for every scheme registered remote.
TEST(SourceRegistryTest, RemoteSchemesAreRetriedOpenAndReadsLocalOnesAreNot) {
  SourceRegistry registry;
  int opens = 0;
  auto flaky = [&opens](const std::string& uri,
                        const OpenOptions&) -> Result<std::unique_ptr<Source>> {
    if (++opens < 3) return UnavailableError(uri + ": HTTP 503 (opening)");
    return NewMemorySource(PositionalBytes(100), {.name = uri});
  };
  registry.Register("flaky", flaky, {.remote = true});
  registry.Register("LOCALISH", [](const std::string& uri, const OpenOptions&) {
    return Result<std::unique_ptr<Source>>(NewMemorySource(PositionalBytes(10), {.name = uri}));
  });
  EXPECT_EQ(registry.Schemes(), (std::vector<std::string>{"flaky", "localish"}));

  OpenOptions options;
  options.remote.retry_base_ms = 0;
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> remote, registry.Open("FLAKY://b/k", options));
  EXPECT_EQ(opens, 3) << "the open is retried while it fails retryably";
  auto* retry = dynamic_cast<RetrySource*>(remote.get());
  ASSERT_NE(retry, nullptr) << "every read of a remote scheme is retried";
  EXPECT_EQ(retry->policy().max_attempts, options.remote.max_attempts);

  opens = 0;
  options.remote.max_attempts = 2;
  EXPECT_THAT(registry.Open("flaky://b/k", options),
              StatusIs(StatusCode::kUnavailable, HasSubstr("gave up after 2 attempts")));

  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> local, registry.Open("localish://x", options));
  EXPECT_EQ(dynamic_cast<RetrySource*>(local.get()), nullptr);
  EXPECT_THAT(registry.Open("file:///x", options),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("known schemes: flaky://")))
      << "an empty registry knows no file:// either";
}

TEST(SourceRegistryTest, StoresOfRemoteSchemesAreRetried) {
  SourceRegistry registry;
  registry.Register("flaky",
                    [](const std::string&, const OpenOptions&) {
                      return Result<std::unique_ptr<Source>>(NewMemorySource({}));
                    },
                    {.remote = true});
  class FlakyStore : public ModelStore {
   public:
    Result<EntryKind> Stat(const std::string& path) const override {
      if (++calls_ < 2) return UnavailableError(path + ": HTTP 503 SlowDown");
      return EntryKind::kFile;
    }
    Result<std::vector<Entry>> List(const std::string&) const override {
      return std::vector<Entry>{};
    }
    Result<std::string> ReadText(const std::string& path) const override {
      return NotFoundError(path);
    }
    std::string Canonical(const std::string& path) const override { return path; }

   private:
    mutable int calls_ = 0;
  };
  registry.RegisterModelStore("flaky", [](const std::string&, const OpenOptions&) {
    return Result<std::unique_ptr<ModelStore>>(std::make_unique<FlakyStore>());
  });
  OpenOptions options;
  options.remote.retry_base_ms = 0;
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelStore> store,
                          registry.OpenModelStore("flaky://b/model", options));
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->Stat("flaky://b/model/x.safetensors"), IsOk());
  EXPECT_THAT(store->ReadText("flaky://b/i.json"), StatusIs(StatusCode::kNotFound))
      << "a non-retryable error passes through at once";
}

TEST(SourceRegistryTest, BuiltinSchemesAndTheDefaultRegistry) {
  SourceRegistry registry;
  RegisterBuiltinSchemes(registry);
  EXPECT_EQ(registry.Schemes(), (std::vector<std::string>{"file", "http", "https", "s3", "tar"}));
  EXPECT_EQ(&DefaultSourceRegistry(), &DefaultSourceRegistry());
  EXPECT_THAT(RegisteredSourceSchemes(),
              ::testing::IsSupersetOf({"file", "http", "https", "s3", "tar"}));
}

}  // namespace
}  // namespace flashload
