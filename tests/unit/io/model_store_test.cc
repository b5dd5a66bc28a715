#include "flashload/model_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string Abs(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

TEST(ResolveModelTest, SingleFile) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("m.safetensors"), std::string("x"));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout m, ResolveModel(dir.File("m.safetensors")));
  EXPECT_EQ(m.kind, ModelLayout::Kind::kSingleFile);
  ASSERT_EQ(m.files.size(), 1u);
  EXPECT_EQ(m.files[0].path, Abs(dir.File("m.safetensors")));
}

TEST(ResolveModelTest, FolderWithOneFileIgnoresVariantsAndOtherFiles) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("model.fp16.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("config.json"), std::string("{}"));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout m, ResolveModel(dir.path()));
  EXPECT_EQ(m.kind, ModelLayout::Kind::kFolder);
  ASSERT_EQ(m.files.size(), 1u);
  EXPECT_EQ(m.files[0].path, Abs(dir.File("model.safetensors")));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout v, ResolveModel(dir.path(), {.variant = "fp16"}));
  EXPECT_EQ(v.files[0].path, Abs(dir.File("model.fp16.safetensors")));
}

TEST(ResolveModelTest, ShardedIndex) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors.index.json"),
                     std::string(R"({"metadata":{"total_size":3},"weight_map":{)"
                                 R"("a":"model-00001-of-00002.safetensors",)"
                                 R"("b":"model-00002-of-00002.safetensors",)"
                                 R"("c":"model-00001-of-00002.safetensors"}})"));
  testing::WriteFile(dir.File("model-00001-of-00002.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("model-00002-of-00002.safetensors"), std::string("x"));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout m, ResolveModel(dir.path()));
  EXPECT_EQ(m.kind, ModelLayout::Kind::kShardedIndex);
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.files[0].path, Abs(dir.File("model-00001-of-00002.safetensors")));
  EXPECT_EQ(m.weight_maps.at("").at("b"), Abs(dir.File("model-00002-of-00002.safetensors")));
  // The index can also be named directly.
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout direct,
                          ResolveModel(dir.File("model.safetensors.index.json")));
  EXPECT_EQ(direct.files.size(), 2u);
}

TEST(ResolveModelTest, MissingShardIsNamed) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors.index.json"),
                     std::string(R"({"weight_map":{"a":"shard-1.safetensors"}})"));
  EXPECT_THAT(
      ResolveModel(dir.path()),
      StatusIs(StatusCode::kNotFound, HasSubstr("'shard-1.safetensors', which is missing")));
}

TEST(ResolveModelTest, FolderWithoutWeightsSaysWhatItFound) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("pytorch_model.bin"), std::string("x"));
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kNotFound, HasSubstr("found pytorch_model.bin")));
  EXPECT_THAT(ResolveModel(dir.File("nope")), StatusIs(StatusCode::kNotFound));
}

TEST(ResolveModelTest, SeveralShardsWithoutIndexIsAnError) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("a.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("b.safetensors"), std::string("x"));
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kNotFound, HasSubstr("no *.safetensors.index.json")));
}

TEST(ResolveModelTest, DiffusersFolder) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model_index.json"),
                     std::string(R"({"_class_name":"StableDiffusionPipeline",)"
                                 R"("unet":["diffusers","UNet2DConditionModel"],)"
                                 R"("scheduler":["diffusers","PNDMScheduler"],)"
                                 R"("safety_checker":[null,null],)"
                                 R"("vae":["diffusers","AutoencoderKL"]})"));
  for (const char* d : {"unet", "scheduler", "vae"}) fs::create_directory(dir.File(d));
  testing::WriteFile(dir.File("scheduler/scheduler_config.json"), std::string("{}"));
  testing::WriteFile(dir.File("unet/diffusion_pytorch_model.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("unet/diffusion_pytorch_model.fp16.safetensors"), std::string("x"));
  testing::WriteFile(dir.File("vae/diffusion_pytorch_model.safetensors"), std::string("x"));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout m, ResolveModel(dir.path()));
  EXPECT_EQ(m.kind, ModelLayout::Kind::kDiffusers);
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.files[0].component, "unet");
  EXPECT_EQ(m.files[1].component, "vae");
  EXPECT_EQ(m.files[1].path, Abs(dir.File("vae/diffusion_pytorch_model.safetensors")));
  // The fp16 variant exists for unet only: the error names the component folder lacking it.
  EXPECT_THAT(ResolveModel(dir.path(), {.variant = "fp16"}),
              StatusIs(StatusCode::kNotFound, HasSubstr("*.fp16.safetensors")));
  testing::WriteFile(dir.File("vae/diffusion_pytorch_model.fp16.safetensors"), std::string("x"));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout v, ResolveModel(dir.path(), {.variant = "fp16"}));
  EXPECT_EQ(v.files[0].path, Abs(dir.File("unet/diffusion_pytorch_model.fp16.safetensors")));
}

TEST(ResolveModelTest, DiffusersMissingComponentFolderIsNamed) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model_index.json"),
                     std::string(R"({"text_encoder":["transformers","CLIPTextModel"]})"));
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kNotFound, HasSubstr("'text_encoder' but the folder")));
}

// A store of URIs held in memory, as an object store presents them: keys, with folders implied.
class FakeObjectStore final : public ModelStore {
 public:
  explicit FakeObjectStore(std::map<std::string, std::string> objects)
      : objects_(std::move(objects)) {}
  Result<EntryKind> Stat(const std::string& path) const override {
    if (objects_.count(path)) return EntryKind::kFile;
    const std::string prefix = path + "/";
    for (const auto& [key, _] : objects_) {
      if (key.rfind(prefix, 0) == 0) return EntryKind::kFolder;
    }
    return EntryKind::kMissing;
  }
  Result<std::vector<Entry>> List(const std::string& folder) const override {
    std::map<std::string, EntryKind> seen;
    const std::string prefix = folder + "/";
    for (const auto& [key, _] : objects_) {
      if (key.rfind(prefix, 0) != 0) continue;
      const std::string rest = key.substr(prefix.size());
      const size_t slash = rest.find('/');
      seen[rest.substr(0, slash)] =
          slash == std::string::npos ? EntryKind::kFile : EntryKind::kFolder;
    }
    std::vector<Entry> out;
    for (const auto& [name, kind] : seen) out.push_back({name, kind});
    return out;
  }
  Result<std::string> ReadText(const std::string& path) const override {
    auto it = objects_.find(path);
    if (it == objects_.end()) return NotFoundError(path + ": no such object");
    return it->second;
  }
  std::string Canonical(const std::string& path) const override { return path; }

 private:
  std::map<std::string, std::string> objects_;
};

TEST(ResolveModelTest, RemoteStoreResolvesDiffusersAndShardedLayoutsToUris) {
  const FakeObjectStore store({
      {"s3://b/sd/model_index.json", R"({"unet": ["diffusers", "UNet2DConditionModel"],
                                         "vae": ["diffusers", "AutoencoderKL"],
                                         "scheduler": ["diffusers", "PNDMScheduler"]})"},
      {"s3://b/sd/unet/diffusion_pytorch_model.safetensors.index.json",
       R"({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                          "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}})"},
      {"s3://b/sd/unet/diffusion_pytorch_model-00001-of-00002.safetensors", ""},
      {"s3://b/sd/unet/diffusion_pytorch_model-00002-of-00002.safetensors", ""},
      {"s3://b/sd/vae/diffusion_pytorch_model.safetensors", ""},
      {"s3://b/sd/scheduler/scheduler_config.json", "{}"},
  });
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout layout, ResolveModel(store, "s3://b/sd"));
  EXPECT_EQ(layout.kind, ModelLayout::Kind::kDiffusers);
  ASSERT_EQ(layout.files.size(), 3u);
  EXPECT_EQ(layout.files[0].path,
            "s3://b/sd/unet/diffusion_pytorch_model-00001-of-00002.safetensors");
  EXPECT_EQ(layout.files[2].component, "vae");
  EXPECT_EQ(layout.files[2].path, "s3://b/sd/vae/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(layout.weight_maps.at("unet").at("b"),
            "s3://b/sd/unet/diffusion_pytorch_model-00002-of-00002.safetensors");

  EXPECT_THAT(ResolveModel(store, "s3://b/nothing"), StatusIs(StatusCode::kNotFound));
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout one,
                          ResolveModel(store, "s3://b/sd/vae/diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(one.kind, ModelLayout::Kind::kSingleFile);
}

// Regression: a folder whose index is a dangling symbolic link (an interrupted download into a hub
// cache) loaded the one shard present as if it were the model.
TEST(ResolveModelTest, DanglingIndexLinkIsAnErrorNamingIt) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model-00001-of-00002.safetensors"), std::string("x"));
  const std::string index = dir.File("model.safetensors.index.json");
  ASSERT_EQ(::symlink("../blobs/missing-blob", index.c_str()), 0);
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kNotFound, AllOf(HasSubstr(index), HasSubstr("dangling"),
                                                    HasSubstr("../blobs/missing-blob"))));
  // Named directly, the same.
  EXPECT_THAT(ResolveModel(index), StatusIs(StatusCode::kNotFound, HasSubstr("dangling")));
}

TEST(ResolveModelTest, FifoIndexIsAnErrorAndNeverBlocks) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors"), std::string("x"));
  const std::string index = dir.File("model.safetensors.index.json");
  ASSERT_EQ(::mkfifo(index.c_str(), 0600), 0);
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(index), HasSubstr("FIFO"))));
  EXPECT_THAT(ResolveModel(index),
              StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(index), HasSubstr("FIFO"))));
}

// Regression: a FIFO or dangling link as the only weights file gave "found nothing".
TEST(ResolveModelTest, WeightsFileThatIsNotARegularFileIsNamedNotSkipped) {
  testing::TempDir fifo_dir;
  const std::string fifo = fifo_dir.File("model.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(ResolveModel(fifo_dir.path()),
              StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(fifo), HasSubstr("FIFO"))));
  testing::TempDir link_dir;
  const std::string link = link_dir.File("model.safetensors");
  ASSERT_EQ(::symlink("nowhere.safetensors", link.c_str()), 0);
  EXPECT_THAT(ResolveModel(link_dir.path()),
              StatusIs(StatusCode::kNotFound, AllOf(HasSubstr(link), HasSubstr("dangling"))));
  // Beside a regular weights file too: never silently one of two.
  testing::WriteFile(link_dir.File("other.safetensors"), std::string("x"));
  EXPECT_THAT(ResolveModel(link_dir.path()), StatusIs(StatusCode::kNotFound, HasSubstr(link)));
}

TEST(ResolveModelTest, DanglingShardLinkNamesTheIndexAndTheLink) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors.index.json"),
                     std::string(R"({"weight_map":{"a":"model-00001-of-00001.safetensors"}})"));
  const std::string shard = dir.File("model-00001-of-00001.safetensors");
  ASSERT_EQ(::symlink("blob", shard.c_str()), 0);
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kNotFound,
                       AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("dangling"))));
}

TEST(ResolveModelTest, SymlinkLoopIsReportedAsALoop) {
  testing::TempDir dir;
  const std::string a = dir.File("a.safetensors"), b = dir.File("b.safetensors");
  ASSERT_EQ(::symlink(b.c_str(), a.c_str()), 0);
  ASSERT_EQ(::symlink(a.c_str(), b.c_str()), 0);
  EXPECT_THAT(ResolveModel(a), StatusIs(StatusCode::kInvalidArgument,
                                        AllOf(HasSubstr(a), HasSubstr("symbolic link loop"))));
}

TEST(ResolveModelTest, UnreadableIndexIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: permission bits do not stop reads";
  testing::TempDir dir;
  testing::WriteFile(dir.File("model.safetensors"), std::string("x"));
  const std::string index = dir.File("model.safetensors.index.json");
  testing::WriteFile(index, std::string("{}"));
  ASSERT_EQ(::chmod(index.c_str(), 0), 0);
  EXPECT_THAT(ResolveModel(dir.path()),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr(index)));
}

TEST(ParseIndexJsonTest, ParsesWeightMap) {
  FL_ASSERT_OK_AND_ASSIGN(auto map, ParseIndexJson(R"({"weight_map":{"a":"s1","b":"s2"}})", "i"));
  EXPECT_THAT(map, ElementsAre(std::pair<const std::string, std::string>{"a", "s1"},
                               std::pair<const std::string, std::string>{"b", "s2"}));
}

TEST(ParseIndexJsonTest, RejectsMalformedIndexes) {
  EXPECT_THAT(ParseIndexJson("{", "i.json"), StatusIs(StatusCode::kDataLoss, HasSubstr("i.json")));
  EXPECT_THAT(ParseIndexJson("{}", "i"), StatusIs(StatusCode::kDataLoss, HasSubstr("weight_map")));
  EXPECT_THAT(ParseIndexJson(R"({"weight_map":[]})", "i"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseIndexJson(R"({"weight_map":{"a":1}})", "i"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("'a'")));
  EXPECT_THAT(ParseIndexJson(R"({"weight_map":{"a":"../x.safetensors"}})", "i"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("outside")));
  EXPECT_THAT(ParseIndexJson(R"({"weight_map":{"a":"/etc/passwd"}})", "i"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("outside")));
  EXPECT_THAT(ParseIndexJson(R"({"weight_map":{"a":"s","a":"t"}})", "i"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("twice")));
}

// Regression: an HTTP index's shard "%2e%2e/x" was joined to the index URL and decoded by the
// server into "../x", outside the index's folder ("../x" itself was already refused).
TEST(ParseIndexJsonTest, RejectsPercentEncodedDotSegments) {
  for (const char* shard : {"%2e%2e/x.safetensors", "%2E%2E/x.safetensors", ".%2e/x.safetensors",
                            "%2e./x.safetensors", "a/%2e%2e/%2e%2e/x.safetensors",
                            "..%2fx.safetensors", "%2e%2e%2Fx.safetensors", "%2e%2e"}) {
    const std::string json = std::string(R"({"weight_map":{"layer.0.w":")") + shard + R"("}})";
    EXPECT_THAT(
        ParseIndexJson(json, "http://h/m/model.safetensors.index.json"),
        StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("http://h/m/model.safetensors.index.json"),
                                              HasSubstr("'layer.0.w'"), HasSubstr(shard),
                                              HasSubstr("outside the index's folder"))))
        << shard;
  }
  // Dots that are not a whole segment stay allowed.
  for (const char* shard : {"a%2e%2eb.safetensors", "%2e%2e%2e/x.safetensors", "x.%2esafetensors",
                            "%2e/x.safetensors"}) {
    const std::string json = std::string(R"({"weight_map":{"w":")") + shard + R"("}})";
    EXPECT_THAT(ParseIndexJson(json, "i"), IsOk()) << shard;
  }
}

TEST(CheckWeightMapTest, AcceptsConsistentShards) {
  FL_EXPECT_OK(CheckWeightMap("idx", {{"a", "/s1"}, {"b", "/s2"}, {"c", "/s1"}},
                              {{"/s1", {"a", "c"}}, {"/s2", {"b"}}}));
}

TEST(CheckWeightMapTest, NamesMissingExtraMisplacedAndDuplicateTensors) {
  EXPECT_THAT(CheckWeightMap("idx", {{"a", "/s1"}, {"b", "/s1"}}, {{"/s1", {"a"}}}),
              StatusIs(StatusCode::kDataLoss, HasSubstr("idx: index lists tensor 'b' in shard "
                                                        "/s1, but that shard does not hold it")));
  EXPECT_THAT(CheckWeightMap("idx", {{"a", "/s1"}}, {{"/s1", {"a", "x"}}}),
              StatusIs(StatusCode::kDataLoss, HasSubstr("shard /s1 holds tensor 'x'")));
  EXPECT_THAT(CheckWeightMap("idx", {{"a", "/s2"}}, {{"/s1", {"a"}}, {"/s2", {}}}),
              StatusIs(StatusCode::kDataLoss, HasSubstr("to shard /s2, but it is in shard /s1")));
  EXPECT_THAT(CheckWeightMap("idx", {{"a", "/s1"}}, {{"/s1", {"a"}}, {"/s2", {"a"}}}),
              StatusIs(StatusCode::kDataLoss, HasSubstr("'a' is in two shards, /s1 and /s2")));
}

}  // namespace
}  // namespace flashload
