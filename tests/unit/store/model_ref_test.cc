#include "store/model_ref.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "support/status_matchers.h"

namespace flashload::store {
namespace {

TEST(ModelRefTest, ParsesAndNamesTheArchive) {
  auto r = ParseModelRef("stabilityai/stable-diffusion-2-1-base@fp16");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->org, "stabilityai");
  EXPECT_EQ(r->name, "stable-diffusion-2-1-base");
  EXPECT_EQ(r->precision, "fp16");
  EXPECT_EQ(ArchiveName(*r), "models--stabilityai--stable-diffusion-2-1-base--fp16.tar.zst");
  EXPECT_EQ(ArchiveName(*r, ".tar"), "models--stabilityai--stable-diffusion-2-1-base--fp16.tar");
  EXPECT_EQ(ArchiveUrl(*r, "s3://bucket/models"),
            "s3://bucket/models/models--stabilityai--stable-diffusion-2-1-base--fp16.tar.zst");
  EXPECT_EQ(ArchiveUrl(*r, "s3://bucket/models/"),
            "s3://bucket/models/models--stabilityai--stable-diffusion-2-1-base--fp16.tar.zst");
}

TEST(ModelRefTest, RefusesMalformedReferencesNamingThePart) {
  for (const char* bad : {"noslash@fp16", "org/name", "/name@fp16", "org/na--me@fp16", "org/name@",
                          "org/../x@fp16", "org/na me@fp16", "org/-x@fp16"}) {
    auto r = ParseModelRef(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
  }
}

TEST(ModelRefTest, ArchiveNameRoundTrips) {
  std::string ext;
  auto r = ParseArchiveName("models--runwayml--stable-diffusion-v1-5--bf16.tar", &ext);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->org, "runwayml");
  EXPECT_EQ(r->name, "stable-diffusion-v1-5");
  EXPECT_EQ(r->precision, "bf16");
  EXPECT_EQ(ext, ".tar");
  EXPECT_FALSE(ParseArchiveName("model.tar.zst").ok());
  EXPECT_FALSE(ParseArchiveName("models--a--b.tar.zst").ok());
  EXPECT_FALSE(ParseArchiveName("models--a--b--c--d.tar.zst").ok());
  EXPECT_FALSE(ParseArchiveName("models--a--b--fp16.zip").ok());
}

TEST(ModelRefTest, TellsReferencesFromPathsAndUrls) {
  EXPECT_TRUE(LooksLikeModelRef("org/name@fp16"));
  EXPECT_FALSE(LooksLikeModelRef("s3://bucket/org/name@fp16"));
  EXPECT_FALSE(LooksLikeModelRef("/abs/name@fp16"));
  EXPECT_FALSE(LooksLikeModelRef("./org/name@fp16"));
  EXPECT_FALSE(LooksLikeModelRef("a/b/c@fp16"));
  EXPECT_FALSE(LooksLikeModelRef("org/name"));
}

TEST(ModelRefTest, CacheFolderFollowsTheEnvironment) {
  setenv("FLASHLOAD_CACHE", "/tmp/fl-cache-test", 1);
  EXPECT_EQ(*CacheDirFromEnv(), "/tmp/fl-cache-test");
  unsetenv("FLASHLOAD_CACHE");
  setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(*CacheDirFromEnv(), "/tmp/xdg/flashload");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(*CacheDirFromEnv(), "/home/someone/.cache/flashload");
  unsetenv("FLASHLOAD_STORE");
  EXPECT_EQ(StoreUrlFromEnv().status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace flashload::store
