#include "cli/gen.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "flashload/header.h"
#include "flashload/model_store.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

GenPlan Plan(const std::string& kind) {
  GenOptions o;
  o.kind = kind;
  auto plan = PlanModel(o);
  EXPECT_THAT(plan, IsOk());
  return plan.ok() ? *plan : GenPlan{};
}

const PlannedFile* FindFile(const GenPlan& plan, const std::string& component) {
  for (const PlannedFile& f : plan.files) {
    if (f.component == component) return &f;
  }
  return nullptr;
}

std::map<std::string, std::vector<uint64_t>> Shapes(const PlannedFile& f) {
  std::map<std::string, std::vector<uint64_t>> m;
  for (const PlannedTensor& t : f.tensors) m[t.name] = t.shape;
  return m;
}

void ExpectNear(uint64_t got, double real, const char* what) {
  EXPECT_NEAR(static_cast<double>(got), real, 0.03 * real) << what << ": " << got;
}

TEST(GenPlanTest, EveryKindPlansWithUniqueNames) {
  for (const GenKind& k : GenKinds()) {
    GenPlan plan = Plan(k.name);
    ASSERT_FALSE(plan.files.empty()) << k.name;
    for (const PlannedFile& f : plan.files) {
      std::set<std::string> names;
      for (const PlannedTensor& t : f.tensors) {
        EXPECT_TRUE(names.insert(t.name).second) << k.name << " " << f.path << " " << t.name;
        EXPECT_GT(t.elements(), 0u) << t.name;
      }
    }
  }
}

TEST(GenPlanTest, UnknownKindIsInvalidArgument) {
  GenOptions o;
  o.kind = "sd99";
  EXPECT_THAT(PlanModel(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("sd15")));
}

TEST(GenPlanTest, Sd15MatchesTheRealParamCountsAndNames) {
  GenPlan plan = Plan("sd15");
  const PlannedFile* unet = FindFile(plan, "unet");
  const PlannedFile* vae = FindFile(plan, "vae");
  const PlannedFile* text = FindFile(plan, "text_encoder");
  ASSERT_TRUE(unet && vae && text);
  ExpectNear(unet->params(), 859.52e6, "unet");
  ExpectNear(vae->params(), 83.65e6, "vae");
  ExpectNear(text->params(), 123.06e6, "text_encoder");
  // The real files' tensor counts (text_encoder without the position_ids buffer).
  EXPECT_THAT(unet->tensors, SizeIs(686));
  EXPECT_THAT(vae->tensors, SizeIs(248));
  EXPECT_THAT(text->tensors, SizeIs(196));
  EXPECT_EQ(unet->path, "unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(text->path, "text_encoder/model.safetensors");
  for (const PlannedFile& f : plan.files) {
    for (const PlannedTensor& t : f.tensors) EXPECT_EQ(t.dtype, Dtype::kF16);
  }
  auto u = Shapes(*unet);
  using S = std::vector<uint64_t>;
  EXPECT_EQ(u["conv_in.weight"], (S{320, 4, 3, 3}));
  EXPECT_EQ(u["time_embedding.linear_1.weight"], (S{1280, 320}));
  EXPECT_EQ(u["down_blocks.0.resnets.0.conv1.weight"], (S{320, 320, 3, 3}));
  EXPECT_EQ(u["down_blocks.1.resnets.0.conv_shortcut.weight"], (S{640, 320, 1, 1}));
  EXPECT_EQ(u["down_blocks.0.attentions.0.proj_in.weight"], (S{320, 320, 1, 1}));
  EXPECT_EQ(u["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"], (S{320, 768}));
  EXPECT_EQ(u["down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight"],
            (S{10240, 1280}));
  EXPECT_EQ(u["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"], (S{1280, 1280}));
  EXPECT_EQ(u["up_blocks.0.resnets.0.conv1.weight"], (S{1280, 2560, 3, 3}));
  EXPECT_EQ(u["up_blocks.3.resnets.0.conv1.weight"], (S{320, 960, 3, 3}));
  EXPECT_EQ(u["up_blocks.3.resnets.2.conv_shortcut.weight"], (S{320, 640, 1, 1}));
  EXPECT_EQ(u["up_blocks.2.upsamplers.0.conv.weight"], (S{640, 640, 3, 3}));
  EXPECT_EQ(u.count("up_blocks.3.upsamplers.0.conv.weight"), 0u);
  EXPECT_EQ(u.count("down_blocks.3.attentions.0.norm.weight"), 0u);
  EXPECT_EQ(u["conv_out.weight"], (S{4, 320, 3, 3}));
  auto v = Shapes(*vae);
  EXPECT_EQ(v["encoder.conv_out.weight"], (S{8, 512, 3, 3}));
  EXPECT_EQ(v["decoder.up_blocks.2.resnets.0.conv_shortcut.weight"], (S{256, 512, 1, 1}));
  EXPECT_EQ(v["encoder.mid_block.attentions.0.to_q.weight"], (S{512, 512}));
  EXPECT_EQ(v["quant_conv.weight"], (S{8, 8, 1, 1}));
  auto t = Shapes(*text);
  EXPECT_EQ(t["text_model.embeddings.token_embedding.weight"], (S{49408, 768}));
  EXPECT_EQ(t["text_model.encoder.layers.11.self_attn.q_proj.weight"], (S{768, 768}));
  EXPECT_EQ(t["text_model.encoder.layers.0.mlp.fc1.weight"], (S{3072, 768}));
  std::set<std::string> texts;
  for (const PlannedText& x : plan.texts) texts.insert(x.path);
  EXPECT_TRUE(texts.count("model_index.json"));
  EXPECT_TRUE(texts.count("scheduler/scheduler_config.json"));
  EXPECT_TRUE(texts.count("tokenizer/tokenizer_config.json"));
  EXPECT_TRUE(texts.count("unet/config.json"));
  EXPECT_NEAR(static_cast<double>(plan.bytes()), 2.13e9, 0.1e9);
}

TEST(GenPlanTest, Sd21HasLinearProjectionsAndOpenClipH) {
  GenPlan plan = Plan("sd21");
  const PlannedFile* unet = FindFile(plan, "unet");
  const PlannedFile* text = FindFile(plan, "text_encoder");
  ASSERT_TRUE(unet && text);
  ExpectNear(unet->params(), 865.91e6, "unet");
  ExpectNear(text->params(), 340.39e6, "text_encoder");
  auto u = Shapes(*unet);
  using S = std::vector<uint64_t>;
  EXPECT_EQ(u["down_blocks.0.attentions.0.proj_in.weight"], (S{320, 320}));
  EXPECT_EQ(u["up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_v.weight"], (S{1280, 1024}));
  auto t = Shapes(*text);
  EXPECT_EQ(t.count("text_model.encoder.layers.22.mlp.fc2.weight"), 1u);
  EXPECT_EQ(t.count("text_model.encoder.layers.23.mlp.fc2.weight"), 0u);
}

TEST(GenPlanTest, Llm5gIsShardedWithAConsistentIndex) {
  GenPlan plan = Plan("llm-5g");
  EXPECT_NEAR(static_cast<double>(plan.bytes()), 5.2e9, 0.3e9);
  ASSERT_THAT(plan.files, SizeIs(3));
  EXPECT_EQ(plan.files[0].path, "model-00001-of-00003.safetensors");
  uint64_t tensors = 0;
  for (const PlannedFile& f : plan.files) {
    EXPECT_LE(f.bytes(), 2'000'000'000u);
    for (const PlannedTensor& t : f.tensors) EXPECT_EQ(t.dtype, Dtype::kBF16);
    tensors += f.tensors.size();
  }
  EXPECT_EQ(tensors, 18u * 9 + 3);
  const PlannedText* index = nullptr;
  for (const PlannedText& x : plan.texts) {
    if (x.path == "model.safetensors.index.json") index = &x;
  }
  ASSERT_NE(index, nullptr);
  EXPECT_THAT(index->content, HasSubstr(fmt::format("\"total_size\": {}", plan.bytes())));
  FL_ASSERT_OK_AND_ASSIGN(auto map, ParseIndexJson(index->content, "index"));
  EXPECT_EQ(map.size(), tensors);
  EXPECT_EQ(map.at("lm_head.weight"), "model-00003-of-00003.safetensors");
  EXPECT_EQ(map.at("model.embed_tokens.weight"), "model-00001-of-00003.safetensors");
  auto s = Shapes(plan.files[0]);
  EXPECT_EQ(s["model.layers.0.self_attn.k_proj.weight"], (std::vector<uint64_t>{1024, 3072}));
  EXPECT_EQ(s["model.layers.0.mlp.down_proj.weight"], (std::vector<uint64_t>{3072, 8192}));
}

TEST(GenPlanTest, LlmShapeOptions) {
  FL_ASSERT_OK_AND_ASSIGN(LlmShape s,
                          ParseLlmShape("hidden=512,layers=2,heads=8,kv_heads=2,vocab=1000,"
                                        "intermediate=1024,shard_mb=1,tie=1"));
  EXPECT_EQ(s.hidden, 512u);
  EXPECT_EQ(s.shard_bytes, 1'000'000u);
  EXPECT_TRUE(s.tie_embeddings);
  EXPECT_THAT(ParseLlmShape("hidden=x"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseLlmShape("depth=3"), StatusIs(StatusCode::kInvalidArgument, HasSubstr("depth")));
  GenOptions o;
  o.kind = "llm";
  o.llm = s;
  FL_ASSERT_OK_AND_ASSIGN(GenPlan plan, PlanModel(o));
  EXPECT_EQ(plan.tensors(), 2u * 9 + 2);  // tied: no lm_head
  EXPECT_GT(plan.files.size(), 1u);
  o.llm->heads = 7;
  EXPECT_THAT(PlanModel(o), StatusIs(StatusCode::kInvalidArgument));
}

TEST(FillSyntheticTest, IsPositionalAndFinite) {
  std::vector<std::byte> whole(4099), pieces(4099);
  FillSynthetic(whole, 5, 42, Dtype::kU8);
  for (size_t at = 0; at < pieces.size();) {  // odd, unaligned pieces give the same bytes
    const size_t n = std::min<size_t>(pieces.size() - at, 1 + at % 13);
    FillSynthetic(std::span(pieces).subspan(at, n), 5 + at, 42, Dtype::kU8);
    at += n;
  }
  EXPECT_EQ(whole, pieces);
  std::vector<std::byte> other(4099);
  FillSynthetic(other, 5, 43, Dtype::kU8);
  EXPECT_NE(whole, other);

  std::vector<uint16_t> h(1 << 16);
  FillSynthetic(std::as_writable_bytes(std::span(h)), 0, 7, Dtype::kBF16);
  size_t zeros = 0;
  for (uint16_t x : h) {
    EXPECT_NE(x & 0x7f80, 0x7f80) << "bf16 NaN/Inf";
    zeros += x == 0;
  }
  EXPECT_LT(zeros, 10u);
  std::vector<float> f(1 << 14);
  FillSynthetic(std::as_writable_bytes(std::span(f)), 0, 7, Dtype::kF32);
  for (float x : f) EXPECT_TRUE(std::isfinite(x) && std::fabs(x) < 2);
}

TEST(FillWeightsTest, IsPositionalAndLooksLikeTrainedWeights) {
  for (Dtype d : {Dtype::kF16, Dtype::kBF16, Dtype::kF32}) {
    const size_t es = DtypeBits(d) / 8;
    std::vector<std::byte> whole(20001 * es), pieces(whole.size());
    FillWeights(whole, 3 * es, 9, d);
    for (size_t at = 0; at < pieces.size();) {  // pieces that split elements give the same bytes
      const size_t n = std::min<size_t>(pieces.size() - at, 1 + at % 4099);
      FillWeights(std::span(pieces).subspan(at, n), 3 * es + at, 9, d);
      at += n;
    }
    EXPECT_EQ(whole, pieces) << DtypeName(d);
  }
  std::vector<float> f(1 << 16);
  FillWeights(std::as_writable_bytes(std::span(f)), 0, 7, Dtype::kF32);
  double sum = 0, sq = 0;
  for (float x : f) {
    ASSERT_TRUE(std::isfinite(x));
    EXPECT_LT(std::fabs(x), 0.08f);
    sum += x;
    sq += double{x} * x;
  }
  const double mean = sum / f.size();
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(sq / f.size() - mean * mean), 0.02, 0.001);
}

// Reads a written file's header and checks its content is the generator's, not zeros.
void ExpectFileIsGenerated(const std::string& path, const PlannedFile& planned) {
  std::vector<std::byte> bytes = testing::ReadFile(path);
  FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderFromBytes(bytes, path));
  ASSERT_EQ(h.tensors.size(), planned.tensors.size()) << path;
  for (const PlannedTensor& p : planned.tensors) {
    const TensorInfo* t = h.Find(p.name);
    ASSERT_NE(t, nullptr) << p.name;
    EXPECT_EQ(t->shape, p.shape);
    EXPECT_EQ(t->dtype, p.dtype);
    const std::byte* data = bytes.data() + h.data_offset() + t->data_begin;
    size_t zeros = 0;
    for (uint64_t i = 0; i < t->byte_size(); ++i) zeros += data[i] == std::byte{0};
    EXPECT_LT(zeros, t->byte_size() / 16 + 2) << p.name;
  }
  EXPECT_EQ(h.data_size(), planned.bytes());
}

TEST(GenerateModelTest, TinyDiffusersFolderParses) {
  testing::TempDir dir;
  GenOptions o;
  o.kind = "tiny";
  o.out_dir = dir.File("tiny");
  uint64_t last_done = 0, last_total = 0;
  o.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  };
  FL_ASSERT_OK_AND_ASSIGN(GenSummary s, GenerateModel(o));
  FL_ASSERT_OK_AND_ASSIGN(GenPlan plan, PlanModel(o));
  EXPECT_EQ(s.files, 3u);
  EXPECT_EQ(s.bytes, plan.bytes());
  EXPECT_EQ(last_done, plan.bytes());
  EXPECT_EQ(last_total, plan.bytes());
  EXPECT_GT(s.disk_bytes, s.bytes);
  EXPECT_GE(s.bytes, 10'000'000u);
  EXPECT_LE(s.bytes, 30'000'000u);
  ASSERT_THAT(s.components, SizeIs(3));
  EXPECT_EQ(s.components[0].name, "unet");
  for (const PlannedFile& f : plan.files) ExpectFileIsGenerated(o.out_dir + "/" + f.path, f);
  for (const PlannedText& t : plan.texts) {
    EXPECT_TRUE(std::filesystem::is_regular_file(o.out_dir + "/" + t.path)) << t.path;
  }
  FL_ASSERT_OK_AND_ASSIGN(ModelLayout layout, ResolveModel(o.out_dir));
  EXPECT_EQ(layout.kind, ModelLayout::Kind::kDiffusers);
  EXPECT_THAT(layout.files, SizeIs(3));
}

TEST(GenerateModelTest, LlmTinyShardsMatchTheIndex) {
  testing::TempDir dir;
  GenOptions o;
  o.kind = "llm-tiny";
  o.out_dir = dir.path();
  o.alignment = 4096;
  FL_ASSERT_OK_AND_ASSIGN(GenSummary s, GenerateModel(o));
  FL_ASSERT_OK_AND_ASSIGN(GenPlan plan, PlanModel(o));
  EXPECT_GT(s.files, 1u);
  std::map<std::string, std::vector<std::string>> shard_tensors;
  for (const PlannedFile& f : plan.files) {
    const std::string path = dir.File(f.path);
    ExpectFileIsGenerated(path, f);
    std::vector<std::byte> bytes = testing::ReadFile(path);
    FL_ASSERT_OK_AND_ASSIGN(Header h, ParseHeaderFromBytes(bytes, path));
    EXPECT_EQ(h.data_offset() % 4096, 0u);
    for (const TensorInfo& t : h.tensors) shard_tensors[path].push_back(t.name);
  }
  std::vector<std::byte> index = testing::ReadFile(dir.File("model.safetensors.index.json"));
  FL_ASSERT_OK_AND_ASSIGN(
      auto map,
      ParseIndexJson(std::string_view(reinterpret_cast<const char*>(index.data()), index.size()),
                     "index"));
  std::map<std::string, std::string> abs;
  for (const auto& [name, file] : map) abs[name] = dir.File(file);
  FL_EXPECT_OK(CheckWeightMap(dir.File("model.safetensors.index.json"), abs, shard_tensors));
}

TEST(GenerateModelTest, RefusesANonEmptyFolderUnlessForced) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("keep.txt"), std::string("x"));
  GenOptions o;
  o.kind = "llm-tiny";
  o.out_dir = dir.path();
  EXPECT_THAT(GenerateModel(o), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("--force")));
  o.force = true;
  FL_EXPECT_OK(GenerateModel(o));
  EXPECT_TRUE(std::filesystem::exists(dir.File("keep.txt")));
  // Same seed, same bytes.
  FL_ASSERT_OK_AND_ASSIGN(GenPlan plan, PlanModel(o));
  const std::string shard = dir.File(plan.files[0].path);
  const auto first = testing::ReadFile(shard);
  FL_EXPECT_OK(GenerateModel(o));
  EXPECT_EQ(first, testing::ReadFile(shard));
}

}  // namespace
}  // namespace flashload::cli
