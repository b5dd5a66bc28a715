#include "dist/shard_rules.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::dist {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Shape = std::vector<uint64_t>;

// ---------------------------------------------------------------------------------------------
// SplitIndex: torch.tensor_split(torch.arange(n), world)[rank], worked out by hand.

struct SplitCase {
  uint64_t n;
  uint32_t world;
  std::vector<IndexRange> ranks;  // expected range of each rank
};

TEST(SplitIndexTest, MatchesTensorSplitTable) {
  const std::vector<SplitCase> cases = {
      // tensor_split(arange(10), 4): [0,1,2] [3,4,5] [6,7] [8,9]
      {10, 4, {{0, 3}, {3, 6}, {6, 8}, {8, 10}}},
      // tensor_split(arange(2), 4): [0] [1] [] []
      {2, 4, {{0, 1}, {1, 2}, {2, 2}, {2, 2}}},
      // tensor_split(arange(7), 3): [0,1,2] [3,4] [5,6]
      {7, 3, {{0, 3}, {3, 5}, {5, 7}}},
      // tensor_split(arange(11), 8): three of 2, five of 1
      {11, 8, {{0, 2}, {2, 4}, {4, 6}, {6, 7}, {7, 8}, {8, 9}, {9, 10}, {10, 11}}},
      // tensor_split(arange(0), 3): [] [] []
      {0, 3, {{0, 0}, {0, 0}, {0, 0}}},
      // tensor_split(arange(5), 1): all of it
      {5, 1, {{0, 5}}},
      // tensor_split(arange(8), 8): one each
      {8, 8, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 7}, {7, 8}}},
      // a Llama vocabulary among 3 ranks: 32000 = 3 * 10666 + 2
      {32000, 3, {{0, 10667}, {10667, 21334}, {21334, 32000}}},
      // a dimension of 5 among 7: five of 1, two empty
      {5, 7, {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 5}, {5, 5}}},
  };
  for (const SplitCase& c : cases) {
    ASSERT_EQ(c.ranks.size(), c.world);
    for (uint32_t r = 0; r < c.world; ++r) {
      const IndexRange got = SplitIndex(c.n, c.world, r);
      // An empty range's start does not matter; a non-empty one must be exact.
      if (c.ranks[r].size() == 0) {
        EXPECT_EQ(got.size(), 0u) << "n=" << c.n << " world=" << c.world << " rank=" << r;
      } else {
        EXPECT_EQ(got, c.ranks[r]) << "n=" << c.n << " world=" << c.world << " rank=" << r;
      }
    }
  }
}

TEST(SplitIndexTest, BadWorldOrRankIsEmpty) {
  EXPECT_EQ(SplitIndex(10, 0, 0).size(), 0u);
  EXPECT_EQ(SplitIndex(10, 4, 4).size(), 0u);
  EXPECT_EQ(SplitIndex(10, 4, 100).size(), 0u);
}

TEST(SplitIndexTest, LargeDimensionDoesNotOverflow) {
  const uint64_t n = (uint64_t{1} << 62) + 3;
  EXPECT_EQ(SplitIndex(n, 4, 3), (IndexRange{3 * (uint64_t{1} << 60) + 3, n}));
}

// ---------------------------------------------------------------------------------------------
// Globs.

struct GlobCase {
  std::string glob;
  std::string name;
  bool matches;
};

TEST(GlobTest, EdgeCases) {
  const std::vector<GlobCase> cases = {
      {"*", "", true},
      {"*", "model.layers.0.self_attn.q_proj.weight", true},
      {"*.q_proj.weight", "model.layers.0.self_attn.q_proj.weight", true},
      {"*.q_proj.weight", "text_encoder/model.layers.0.self_attn.q_proj.weight", true},  // '/' too
      {"*.q_proj.weight", "q_proj.weight", false},  // the '.' must be there
      {"*.q_proj.weight", "model.layers.0.self_attn.q_proj.weight_scale", false},  // whole name
      {"q_proj", "model.q_proj", false},                                           // whole name
      {"model.norm.weight", "model.norm.weight", true},
      {"model.norm.weight", "model_norm_weight", false},  // '.' is literal
      {"*norm*", "model.layers.3.input_layernorm.weight", true},
      {"*norm*", "norm", true},
      {"*norm*", "model.layers.3.mlp.up_proj.weight", false},
      {"layers.?.mlp", "layers.7.mlp", true},
      {"layers.?.mlp", "layers.17.mlp", false},
      {"layers.?.mlp", "layers..mlp", false},
      {"layers.[0-3].mlp", "layers.2.mlp", true},
      {"layers.[0-3].mlp", "layers.4.mlp", false},
      {"layers.[!0-3].mlp", "layers.4.mlp", true},
      {"layers.[^0-3].mlp", "layers.1.mlp", false},
      {"[qkv]_proj", "k_proj", true},
      {"[qkv]_proj", "o_proj", false},
      {"[]x]", "]", true},  // ']' first in a class is a member
      {"[]x]", "x", true},
      {"[a-]", "-", true},  // '-' last in a class is a member
      {"[-a]", "-", true},  // and first
      {"[-a]", "b", false},
      {"a#b", "a#b", true},
      {"\\*.weight", "*.weight", true},
      {"\\*.weight", "a.weight", false},
      {"a\\[1]", "a[1]", true},
      {"**.weight", "x.weight", true},
      {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},  // no blow-up
      {"*a*b", "xaxxbyb", true},
      {"*.weight", ".weight", true},
      {"", "", true},
      {"", "x", false},
  };
  for (const GlobCase& c : cases) {
    EXPECT_EQ(GlobMatches(c.glob, c.name), c.matches) << "glob " << c.glob << " name " << c.name;
  }
}

TEST(GlobTest, ValidateRejectsMalformed) {
  FL_EXPECT_OK(ValidateGlob("*.q_proj.weight"));
  FL_EXPECT_OK(ValidateGlob("[]]"));
  FL_EXPECT_OK(ValidateGlob("a\\[b"));
  EXPECT_THAT(ValidateGlob(""), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateGlob("layers.[0-3.mlp"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("character 8 is never closed")));
  EXPECT_THAT(ValidateGlob("[]"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("never closed")));
  EXPECT_THAT(ValidateGlob("[!]"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("never closed")));
  EXPECT_THAT(ValidateGlob("[z-a]"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("backwards")));
  EXPECT_THAT(ValidateGlob("abc\\"), StatusIs(StatusCode::kInvalidArgument, HasSubstr("lone")));
}

// ---------------------------------------------------------------------------------------------
// Rules files.

constexpr char kExample[] = R"(# glob                      action
*.q_proj.weight             split 0
*.qkv_proj.weight           split 0 blocks 4096,1024,1024
*.gate_up_proj.weight       split 0 blocks 2

*.o_proj.weight             split 1   # row-parallel
	*norm*	replicate
)";

TEST(ShardRulesParseTest, ParsesExample) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::Parse(kExample, "rules.txt"));
  EXPECT_EQ(rules.source(), "rules.txt");
  ASSERT_EQ(rules.rules().size(), 5u);
  const std::vector<ShardRule>& r = rules.rules();
  EXPECT_EQ(r[0], (ShardRule{"*.q_proj.weight", ShardAction::kSplit, 0, 0, {}, "rules.txt:2"}));
  EXPECT_EQ(
      r[1],
      (ShardRule{
          "*.qkv_proj.weight", ShardAction::kSplit, 0, 0, {4096, 1024, 1024}, "rules.txt:3"}));
  EXPECT_EQ(r[2],
            (ShardRule{"*.gate_up_proj.weight", ShardAction::kSplit, 0, 2, {}, "rules.txt:4"}));
  EXPECT_EQ(r[3], (ShardRule{"*.o_proj.weight", ShardAction::kSplit, 1, 0, {}, "rules.txt:6"}));
  EXPECT_EQ(r[4], (ShardRule{"*norm*", ShardAction::kReplicate, 0, 0, {}, "rules.txt:7"}));
}

TEST(ShardRulesParseTest, EmptyAndCommentOnlyTextsHaveNoRules) {
  for (const char* text : {"", "\n\n", "# only a comment\n   # another\n", "\r\n  \t\r\n"}) {
    FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::Parse(text, "empty.rules"));
    EXPECT_TRUE(rules.rules().empty()) << text;
  }
}

TEST(ShardRulesParseTest, HashStartsACommentOnlyAfterWhiteSpace) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules,
                          ShardRules::Parse("a#b split 0 # a comment\n#c split 1\n", "hash.rules"));
  ASSERT_EQ(rules.rules().size(), 1u);
  EXPECT_EQ(rules.rules()[0].glob, "a#b");
}

TEST(ShardRulesParseTest, CrlfLinesParse) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules,
                          ShardRules::Parse("a split 1\r\nb replicate\r\n", "dos.rules"));
  ASSERT_EQ(rules.rules().size(), 2u);
  EXPECT_EQ(rules.rules()[0].dim, 1u);
  EXPECT_EQ(rules.rules()[1].action, ShardAction::kReplicate);
}

struct ParseErrorCase {
  std::string text;
  std::string location;  // "rules.txt:N"
  std::string detail;    // the bad token or what is wrong
};

TEST(ShardRulesParseTest, ErrorsNameFileLineAndToken) {
  const std::vector<ParseErrorCase> cases = {
      {"a split 0\n*.weight split x\n", "rules.txt:2", "bad dimension 'x'"},
      {"*.weight split -1\n", "rules.txt:1", "bad dimension '-1'"},
      {"*.weight split 99999999999\n", "rules.txt:1", "bad dimension '99999999999'"},
      {"# c\n\n*.weight split\n", "rules.txt:3", "`split` without a dimension"},
      {"*.weight splti 0\n", "rules.txt:1", "unknown action 'splti'"},
      {"*.weight Replicate\n", "rules.txt:1", "unknown action 'Replicate'"},
      {"*.weight\n", "rules.txt:1", "glob '*.weight' has no action"},
      {"layers.[0-3.weight split 0\n", "rules.txt:1", "bad glob"},
      {"layers.[3-0].weight split 0\n", "rules.txt:1", "backwards"},
      {"*.weight\\ split 0\n", "rules.txt:1", "lone"},
      {"*.weight replicate now\n", "rules.txt:1", "unexpected 'now' after `replicate`"},
      {"*.weight split 0 blockz 2\n", "rules.txt:1", "unexpected 'blockz' after `split 0`"},
      {"*.weight split 0 blocks\n", "rules.txt:1", "`blocks` without a count"},
      {"*.weight split 0 blocks 0\n", "rules.txt:1", "bad block count '0'"},
      {"*.weight split 0 blocks two\n", "rules.txt:1", "bad block count 'two'"},
      {"*.weight split 0 blocks 4096,,1024\n", "rules.txt:1", "bad block size ''"},
      {"*.weight split 0 blocks 4096,0\n", "rules.txt:1", "bad block size '0'"},
      {"*.weight split 0 blocks 4096,1024,\n", "rules.txt:1", "bad block size ''"},
      {"*.weight split 0 blocks 4096, 1024\n", "rules.txt:1", "unexpected '1024' after the blocks"},
      {"*.weight split 0\nx replicate\n*.weight split 1\n", "rules.txt:3", "line 1"},
  };
  for (const ParseErrorCase& c : cases) {
    Result<ShardRules> rules = ShardRules::Parse(c.text, "rules.txt");
    EXPECT_THAT(rules, StatusIs(StatusCode::kInvalidArgument,
                                AllOf(HasSubstr(c.location + ":"), HasSubstr(c.detail))))
        << c.text;
  }
}

TEST(ShardRulesParseTest, ToTextParsesBackToTheSameRules) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules preset, ShardRules::Preset("llama"));
  FL_ASSERT_OK_AND_ASSIGN(ShardRules parsed, ShardRules::Parse(preset.ToText(), "copy.rules"));
  ASSERT_EQ(parsed.rules().size(), preset.rules().size());
  for (size_t i = 0; i < parsed.rules().size(); ++i) {
    ShardRule a = preset.rules()[i];
    ShardRule b = parsed.rules()[i];
    a.origin.clear();
    b.origin.clear();
    EXPECT_EQ(a, b) << i;
  }
  EXPECT_THAT(preset.ToText(), HasSubstr("# Shard rules from llama preset"));
  FL_ASSERT_OK_AND_ASSIGN(ShardRules fused, ShardRules::Parse(kExample, "rules.txt"));
  EXPECT_THAT(fused.ToText(), HasSubstr("split 0 blocks 4096,1024,1024\n"));
  EXPECT_THAT(fused.ToText(), HasSubstr("split 0 blocks 2\n"));
}

// ---------------------------------------------------------------------------------------------
// Applying rules to tensors.

TEST(ShardRulesApplyTest, FirstMatchWins) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules specific_first, ShardRules::Parse("*.q_proj.weight split 0\n"
                                                                       "*.weight split 1\n",
                                                                       "order.rules"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard q, specific_first.ShardFor("m.q_proj.weight", Shape{8, 4}));
  EXPECT_EQ(q.dim, 0u);
  EXPECT_EQ(q.origin, "order.rules:1");
  FL_ASSERT_OK_AND_ASSIGN(TensorShard o, specific_first.ShardFor("m.o_proj.weight", Shape{8, 4}));
  EXPECT_EQ(o.dim, 1u);
  EXPECT_EQ(o.origin, "order.rules:2");

  FL_ASSERT_OK_AND_ASSIGN(ShardRules general_first, ShardRules::Parse("*.weight split 1\n"
                                                                      "*.q_proj.weight split 0\n",
                                                                      "order.rules"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard q2, general_first.ShardFor("m.q_proj.weight", Shape{8, 4}));
  EXPECT_EQ(q2.dim, 1u);
  EXPECT_EQ(q2.rule, "*.weight");

  // An earlier replicate shadows a later split too.
  FL_ASSERT_OK_AND_ASSIGN(ShardRules replicate_first,
                          ShardRules::Parse("*norm* replicate\n*.weight split 0\n", "order.rules"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard n, replicate_first.ShardFor("model.norm.weight", Shape{8}));
  EXPECT_EQ(n.action, ShardAction::kReplicate);
  EXPECT_EQ(n.rule, "*norm*");
}

TEST(ShardRulesApplyTest, UnmatchedTensorIsReplicatedAndSaysSo) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules,
                          ShardRules::Parse("*.q_proj.weight split 0\n", "r.rules"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard s, rules.ShardFor("model.rotary_emb.inv_freq", Shape{64}));
  EXPECT_EQ(s.action, ShardAction::kReplicate);
  EXPECT_TRUE(s.rule.empty());
  EXPECT_EQ(Describe(s), "replicate (no rule matches in r.rules)");
  FL_ASSERT_OK_AND_ASSIGN(TensorPart part,
                          rules.PartFor("model.rotary_emb.inv_freq", Shape{64}, 4, 3));
  EXPECT_TRUE(part.whole());
  EXPECT_EQ(Describe(TensorShard{}), "replicate (no rule matches)");
}

TEST(ShardRulesApplyTest, DimensionBeyondTheTensorNamesTensorShapeRuleAndLine) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules,
                          ShardRules::Parse("# biases are 1-D\n*.bias split 1\n", "rules.txt"));
  EXPECT_THAT(
      rules.ShardFor("model.layers.0.self_attn.q_proj.bias", Shape{4096}),
      StatusIs(StatusCode::kInvalidArgument,
               AllOf(HasSubstr("'model.layers.0.self_attn.q_proj.bias'"), HasSubstr("[4096]"),
                     HasSubstr("'*.bias'"), HasSubstr("rules.txt:2"), HasSubstr("dimension 1"))));
  EXPECT_THAT(
      rules.ShardFor("scale.bias", Shape{}),
      StatusIs(StatusCode::kInvalidArgument,
               AllOf(HasSubstr("'scale.bias'"), HasSubstr("scalar"), HasSubstr("rules.txt:2"))));
  EXPECT_THAT(rules.PartFor("x.bias", Shape{4096}, 2, 0),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("rules.txt:2")));
}

TEST(ShardRulesApplyTest, BlocksThatDoNotAddUpNameTensorShapeRuleAndLine) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::Parse(kExample, "rules.txt"));
  EXPECT_THAT(rules.ShardFor("model.layers.0.self_attn.qkv_proj.weight", Shape{12288, 4096}),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'model.layers.0.self_attn.qkv_proj.weight'"),
                             HasSubstr("[12288, 4096]"), HasSubstr("'*.qkv_proj.weight'"),
                             HasSubstr("rules.txt:3"), HasSubstr("4096,1024,1024"),
                             HasSubstr("add up to 6144"))));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard ok, rules.ShardFor("model.layers.0.self_attn.qkv_proj.weight",
                                                         Shape{6144, 4096}));
  EXPECT_THAT(ok.blocks, ElementsAre(4096, 1024, 1024));
}

TEST(ShardRulesApplyTest, BlockSizesThatOverflowAreRefused) {
  FL_ASSERT_OK_AND_ASSIGN(
      ShardRules rules,
      ShardRules::Parse("w split 0 blocks 18446744073709551615,2\n", "big.rules"));
  EXPECT_THAT(rules.ShardFor("w", Shape{1}),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("more than 2^64")));
}

TEST(ShardRulesApplyTest, EqualBlocksThatDoNotDivideAreRefused) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::Parse(kExample, "rules.txt"));
  EXPECT_THAT(
      rules.ShardFor("model.layers.1.mlp.gate_up_proj.weight", Shape{11, 4}),
      StatusIs(StatusCode::kInvalidArgument,
               AllOf(HasSubstr("'model.layers.1.mlp.gate_up_proj.weight'"), HasSubstr("[11, 4]"),
                     HasSubstr("rules.txt:4"), HasSubstr("2 equal blocks"))));
}

TEST(ShardRulesApplyTest, BadWorldOrRank) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::Preset("llama"));
  EXPECT_THAT(rules.PartFor("lm_head.weight", Shape{8, 2}, 0, 0),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'lm_head.weight'")));
  EXPECT_THAT(rules.PartFor("lm_head.weight", Shape{8, 2}, 4, 4),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("rank 4")));
}

TEST(ShardRulesApplyTest, DescribeNamesRuleAndOrigin) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard q,
                          llama.ShardFor("model.layers.0.self_attn.q_proj.weight", Shape{64, 64}));
  EXPECT_EQ(Describe(q), "split dim 0 (rule '*.q_proj.weight', llama preset)");
  FL_ASSERT_OK_AND_ASSIGN(TensorShard n, llama.ShardFor("model.norm.weight", Shape{64}));
  EXPECT_EQ(Describe(n), "replicate (rule '*norm*', llama preset)");
  FL_ASSERT_OK_AND_ASSIGN(
      TensorShard gu, llama.ShardFor("model.layers.0.mlp.gate_up_proj.weight", Shape{22016, 4096}));
  EXPECT_EQ(Describe(gu),
            "split dim 0 in 2 blocks of 11008 (rule '*.gate_up_proj.weight', llama preset)");

  FL_ASSERT_OK_AND_ASSIGN(ShardRules file, ShardRules::Parse(kExample, "rules.txt"));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard qkv, file.ShardFor("a.qkv_proj.weight", Shape{6144, 8}));
  EXPECT_EQ(Describe(qkv),
            "split dim 0 in blocks 4096,1024,1024 (rule '*.qkv_proj.weight', rules.txt:3)");
}

// ---------------------------------------------------------------------------------------------
// The llama preset.

struct PresetCase {
  std::string name;
  Shape shape;
  ShardAction action;
  uint32_t dim;      // for kSplit
  std::string rule;  // the glob expected to decide; empty: no rule
};

TEST(LlamaPresetTest, EveryNameFamily) {
  constexpr auto kSplit = ShardAction::kSplit;
  constexpr auto kReplicate = ShardAction::kReplicate;
  const std::string L = "model.layers.7.";
  const std::vector<PresetCase> cases = {
      {L + "self_attn.q_proj.weight", {4096, 4096}, kSplit, 0, "*.q_proj.weight"},
      {L + "self_attn.k_proj.weight", {1024, 4096}, kSplit, 0, "*.k_proj.weight"},
      {L + "self_attn.v_proj.weight", {1024, 4096}, kSplit, 0, "*.v_proj.weight"},
      {L + "self_attn.q_proj.bias", {4096}, kSplit, 0, "*.q_proj.bias"},  // Qwen2 has q/k/v biases
      {L + "self_attn.k_proj.bias", {1024}, kSplit, 0, "*.k_proj.bias"},
      {L + "self_attn.v_proj.bias", {1024}, kSplit, 0, "*.v_proj.bias"},
      {L + "self_attn.o_proj.weight", {4096, 4096}, kSplit, 1, "*.o_proj.weight"},
      {L + "self_attn.o_proj.bias", {4096}, kReplicate, 0, "*.o_proj.bias"},
      {L + "mlp.gate_proj.weight", {14336, 4096}, kSplit, 0, "*.gate_proj.weight"},
      {L + "mlp.up_proj.weight", {14336, 4096}, kSplit, 0, "*.up_proj.weight"},
      {L + "mlp.gate_proj.bias", {14336}, kSplit, 0, "*.gate_proj.bias"},
      {L + "mlp.up_proj.bias", {14336}, kSplit, 0, "*.up_proj.bias"},
      {L + "mlp.down_proj.weight", {4096, 14336}, kSplit, 1, "*.down_proj.weight"},
      {L + "mlp.down_proj.bias", {4096}, kReplicate, 0, "*.down_proj.bias"},
      {"model.embed_tokens.weight", {128256, 4096}, kSplit, 0, "*.embed_tokens.weight"},
      {"embed_tokens.weight", {128256, 4096}, kSplit, 0, "embed_tokens.weight"},
      {"lm_head.weight", {128256, 4096}, kSplit, 0, "lm_head.weight"},
      {L + "input_layernorm.weight", {4096}, kReplicate, 0, "*norm*"},
      {L + "post_attention_layernorm.weight", {4096}, kReplicate, 0, "*norm*"},
      {"model.norm.weight", {4096}, kReplicate, 0, "*norm*"},
      {L + "self_attn.q_norm.weight", {128}, kReplicate, 0, "*norm*"},  // Qwen3
      {L + "self_attn.k_norm.weight", {128}, kReplicate, 0, "*norm*"},
      // Prefixed names: a diffusers component, a multimodal wrapper.
      {"text_encoder/model.layers.0.self_attn.q_proj.weight",
       {4096, 4096},
       kSplit,
       0,
       "*.q_proj.weight"},
      {"text_encoder/model.embed_tokens.weight", {32000, 4096}, kSplit, 0, "*.embed_tokens.weight"},
      {"model.language_model.layers.0.mlp.down_proj.weight",
       {4096, 14336},
       kSplit,
       1,
       "*.down_proj.weight"},
      {"model.language_model.lm_head.weight", {32000, 4096}, kSplit, 0, "*.lm_head.weight"},
      {"model.language_model.norm.weight", {4096}, kReplicate, 0, "*norm*"},
      // Everything else: replicated, by no rule.
      {"model.rotary_emb.inv_freq", {64}, kReplicate, 0, ""},
      {L + "mlp.gate.weight", {8, 4096}, kReplicate, 0, ""},  // a MoE router
      {L + "self_attn.q_proj.weight_scale", {4096, 1}, kReplicate, 0, ""},
  };
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama"));
  for (const PresetCase& c : cases) {
    FL_ASSERT_OK_AND_ASSIGN(TensorShard s, llama.ShardFor(c.name, c.shape));
    EXPECT_EQ(s.action, c.action) << c.name;
    if (c.action == kSplit) {
      EXPECT_EQ(s.dim, c.dim) << c.name;
    }
    EXPECT_TRUE(s.blocks.empty()) << c.name;
    EXPECT_EQ(s.rule, c.rule) << c.name;
    EXPECT_EQ(s.origin, "llama preset") << c.name;
  }
}

TEST(LlamaPresetTest, FusedWithoutConfigAreEqualBlocks) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama"));
  FL_ASSERT_OK_AND_ASSIGN(
      TensorShard qkv,
      llama.ShardFor("model.layers.0.self_attn.qkv_proj.weight", Shape{9216, 3072}));
  EXPECT_THAT(qkv.blocks, ElementsAre(3072, 3072, 3072));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard qkv_bias,
                          llama.ShardFor("model.layers.0.self_attn.qkv_proj.bias", Shape{9216}));
  EXPECT_THAT(qkv_bias.blocks, ElementsAre(3072, 3072, 3072));
  FL_ASSERT_OK_AND_ASSIGN(
      TensorShard gate_up,
      llama.ShardFor("model.layers.0.mlp.gate_up_proj.weight", Shape{16384, 3072}));
  EXPECT_EQ(gate_up.dim, 0u);
  EXPECT_THAT(gate_up.blocks, ElementsAre(8192, 8192));
  // gate/up of rank 1 of 2: the second half of gate, then the second half of up.
  FL_ASSERT_OK_AND_ASSIGN(TensorPart part, llama.PartFor("model.layers.0.mlp.gate_up_proj.weight",
                                                         Shape{16384, 3072}, 2, 1));
  ASSERT_EQ(part.dims.size(), 1u);
  EXPECT_THAT(part.dims[0], ElementsAre(IndexRange{4096, 8192}, IndexRange{12288, 16384}));
}

constexpr char kGqaConfig[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 4096,
  "num_attention_heads": 32,
  "num_key_value_heads": 8,
  "head_dim": 128,
  "rope_scaling": null,
  "torch_dtype": "bfloat16"
})";

TEST(LlamaPresetTest, FusedQkvBlocksFromGqaConfig) {
  FL_ASSERT_OK_AND_ASSIGN(ModelConfig config, ParseModelConfig(kGqaConfig, "config.json"));
  EXPECT_EQ(config.hidden_size, 4096u);
  EXPECT_EQ(config.num_attention_heads, 32u);
  EXPECT_EQ(config.num_key_value_heads, 8u);
  EXPECT_EQ(config.head_dim, 128u);
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama", &config));
  const std::string name = "model.layers.3.self_attn.qkv_proj.weight";
  const Shape shape = {6144, 4096};
  FL_ASSERT_OK_AND_ASSIGN(TensorShard s, llama.ShardFor(name, shape));
  EXPECT_THAT(s.blocks, ElementsAre(4096, 1024, 1024));
  EXPECT_EQ(s.origin, "llama preset, q/k/v sizes from config.json");
  EXPECT_EQ(Describe(s),
            "split dim 0 in blocks 4096,1024,1024 (rule '*.qkv_proj.weight', llama preset, q/k/v "
            "sizes from config.json)");

  // World 2: q [0,2048) k [4096,4608) v [5120,5632) for rank 0; the other halves for rank 1.
  FL_ASSERT_OK_AND_ASSIGN(TensorPart r0, llama.PartFor(name, shape, 2, 0));
  FL_ASSERT_OK_AND_ASSIGN(TensorPart r1, llama.PartFor(name, shape, 2, 1));
  ASSERT_EQ(r0.dims.size(), 1u);
  ASSERT_EQ(r1.dims.size(), 1u);
  EXPECT_THAT(r0.dims[0],
              ElementsAre(IndexRange{0, 2048}, IndexRange{4096, 4608}, IndexRange{5120, 5632}));
  EXPECT_THAT(r1.dims[0],
              ElementsAre(IndexRange{2048, 4096}, IndexRange{4608, 5120}, IndexRange{5632, 6144}));
  // World 4: 1024 rows of q, 256 of k, 256 of v each (two kv heads' worth).
  for (uint32_t r = 0; r < 4; ++r) {
    FL_ASSERT_OK_AND_ASSIGN(TensorPart p, llama.PartFor(name, shape, 4, r));
    ASSERT_EQ(p.dims.size(), 1u);
    EXPECT_THAT(p.dims[0], ElementsAre(IndexRange{r * 1024ull, (r + 1) * 1024ull},
                                       IndexRange{4096 + r * 256ull, 4096 + (r + 1) * 256ull},
                                       IndexRange{5120 + r * 256ull, 5120 + (r + 1) * 256ull}))
        << "rank " << r;
  }
  FL_ASSERT_OK_AND_ASSIGN(TensorShard bias,
                          llama.ShardFor("model.layers.3.self_attn.qkv_proj.bias", Shape{6144}));
  EXPECT_THAT(bias.blocks, ElementsAre(4096, 1024, 1024));
  EXPECT_THAT(llama.ToText(), HasSubstr("split 0 blocks 4096,1024,1024\n"));
  // The same config against a qkv of another model: the error names the config.
  EXPECT_THAT(
      llama.ShardFor(name, Shape{12288, 4096}),
      StatusIs(StatusCode::kInvalidArgument,
               AllOf(HasSubstr("config.json"), HasSubstr(name), HasSubstr("[12288, 4096]"))));
}

TEST(LlamaPresetTest, HeadDimDefaultsToHiddenOverHeads) {
  FL_ASSERT_OK_AND_ASSIGN(
      ModelConfig config,
      ParseModelConfig(R"({"hidden_size": 5120, "num_attention_heads": 40, "num_key_value_heads": 8,
                           "head_dim": null})",
                       "config.json"));
  EXPECT_EQ(config.head_dim, 0u);
  FL_ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> blocks, config.QkvBlocks());
  EXPECT_THAT(blocks, ElementsAre(5120, 1024, 1024));
  // No num_key_value_heads: as many as the attention heads.
  FL_ASSERT_OK_AND_ASSIGN(
      ModelConfig mha,
      ParseModelConfig(R"({"hidden_size": 3072, "num_attention_heads": 32})", "phi3/config.json"));
  FL_ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> mha_blocks, mha.QkvBlocks());
  EXPECT_THAT(mha_blocks, ElementsAre(3072, 3072, 3072));
}

TEST(ModelConfigTest, TextConfigFillsWhatTheTopLevelLacks) {
  FL_ASSERT_OK_AND_ASSIGN(ModelConfig config, ParseModelConfig(R"({
    "model_type": "llava",
    "vision_config": {"hidden_size": 1024, "num_attention_heads": 16},
    "text_config": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8}
  })",
                                                               "config.json"));
  EXPECT_EQ(config.hidden_size, 4096u);
  EXPECT_EQ(config.num_attention_heads, 32u);
  EXPECT_EQ(config.num_key_value_heads, 8u);
  EXPECT_EQ(config.head_dim, 0u);
  EXPECT_EQ(config.source, "config.json");
}

TEST(ModelConfigTest, AbsentFieldsStayZero) {
  FL_ASSERT_OK_AND_ASSIGN(ModelConfig config, ParseModelConfig("{}", "config.json"));
  EXPECT_EQ(config.hidden_size, 0u);
  EXPECT_EQ(config.num_attention_heads, 0u);
  // A preset given such a config falls back to equal blocks.
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama", &config));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard s, llama.ShardFor("a.qkv_proj.weight", Shape{30, 2}));
  EXPECT_THAT(s.blocks, ElementsAre(10, 10, 10));
  EXPECT_EQ(s.origin, "llama preset");
}

TEST(ModelConfigTest, MalformedConfigsAreRefusedNamingFileAndField) {
  EXPECT_THAT(ParseModelConfig("{not json", "m/config.json"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("m/config.json: not valid JSON")));
  EXPECT_THAT(ParseModelConfig("[1, 2]", "m/config.json"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("must be a JSON object")));
  EXPECT_THAT(ParseModelConfig(R"({"num_attention_heads": "32"})", "m/config.json"),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("m/config.json"), HasSubstr("`num_attention_heads`"))));
  EXPECT_THAT(ParseModelConfig(R"({"head_dim": -128})", "m/config.json"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("`head_dim`")));
  EXPECT_THAT(ParseModelConfig(R"({"text_config": {"hidden_size": 1.5}})", "m/config.json"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("`text_config.hidden_size`")));
  EXPECT_THAT(ParseModelConfig(R"({"text_config": 3})", "m/config.json"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("`text_config`")));
}

TEST(ModelConfigTest, UnsizableQkvIsRefusedByThePreset) {
  ModelConfig config;
  config.num_attention_heads = 32;
  config.hidden_size = 4090;  // not a multiple of 32, and no head_dim
  config.source = "odd/config.json";
  EXPECT_THAT(ShardRules::Preset("llama", &config),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("odd/config.json"), HasSubstr("head_dim"))));
  config.hidden_size = 0;
  EXPECT_THAT(ShardRules::Preset("llama", &config),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("odd/config.json")));
  ModelConfig no_heads;
  EXPECT_THAT(no_heads.QkvBlocks(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("num_attention_heads")));
  ModelConfig huge;
  huge.num_attention_heads = uint64_t{1} << 40;
  huge.head_dim = uint64_t{1} << 40;
  EXPECT_THAT(huge.QkvBlocks(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("too large")));
}

TEST(PresetTest, NoneReplicatesEverythingAndUnknownIsRefused) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules none, ShardRules::Preset("none"));
  EXPECT_TRUE(none.rules().empty());
  FL_ASSERT_OK_AND_ASSIGN(TensorShard s, none.ShardFor("lm_head.weight", Shape{32000, 4096}));
  EXPECT_EQ(s.action, ShardAction::kReplicate);
  EXPECT_EQ(Describe(s), "replicate (no rule matches in none preset)");
  EXPECT_THAT(ShardRules::Preset("mixtral"),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'mixtral'"), HasSubstr("llama, none"))));
}

// ---------------------------------------------------------------------------------------------
// Files and specs.

TEST(ShardRulesFileTest, ReadsTheExampleFile) {
  const std::string path = std::string(FL_TEST_DATA_DIR) + "/shard_rules/phi3_fused.rules";
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules, ShardRules::ReadFile(path));
  EXPECT_EQ(rules.source(), path);
  ASSERT_EQ(rules.rules().size(), 7u);
  FL_ASSERT_OK_AND_ASSIGN(
      TensorShard qkv,
      rules.ShardFor("model.layers.0.self_attn.qkv_proj.weight", Shape{9216, 3072}));
  EXPECT_THAT(qkv.blocks, ElementsAre(3072, 3072, 3072));
  EXPECT_EQ(qkv.origin, path + ":5");
  FL_ASSERT_OK_AND_ASSIGN(TensorShard norm, rules.ShardFor("model.norm.weight", Shape{3072}));
  EXPECT_EQ(norm.action, ShardAction::kReplicate);
  EXPECT_EQ(norm.origin, path + ":11");
}

TEST(ShardRulesFileTest, FileErrors) {
  testing::TempDir dir;
  EXPECT_THAT(ShardRules::ReadFile(dir.File("missing.rules")),
              StatusIs(StatusCode::kNotFound, HasSubstr("missing.rules")));
  EXPECT_THAT(ShardRules::ReadFile(dir.path()), StatusIs(StatusCode::kInvalidArgument));
  const std::string big = dir.File("big.rules");
  testing::WriteFile(big, std::string(kMaxRulesFileBytes + 1, '#'));
  EXPECT_THAT(ShardRules::ReadFile(big),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("big.rules")));
  const std::string bad = dir.File("bad.rules");
  testing::WriteFile(bad, "*.q_proj.weight split 0\n*.o_proj.weight split one\n");
  EXPECT_THAT(
      ShardRules::ReadFile(bad),
      StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(bad + ":2:"), HasSubstr("'one'"))));
}

TEST(ShardRulesFileTest, FromSpecTakesPresetOrPath) {
  testing::TempDir dir;
  const std::string path = dir.File("my.rules");
  testing::WriteFile(path, "*.weight split 1\n");

  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::FromSpec("llama"));
  EXPECT_EQ(llama.source(), "llama preset");
  FL_ASSERT_OK_AND_ASSIGN(ShardRules none, ShardRules::FromSpec("none"));
  EXPECT_TRUE(none.rules().empty());
  FL_ASSERT_OK_AND_ASSIGN(ShardRules file, ShardRules::FromSpec(path));
  EXPECT_EQ(file.source(), path);
  ASSERT_EQ(file.rules().size(), 1u);

  FL_ASSERT_OK_AND_ASSIGN(ModelConfig config, ParseModelConfig(kGqaConfig, "config.json"));
  FL_ASSERT_OK_AND_ASSIGN(ShardRules with_config, ShardRules::FromSpec("llama", &config));
  FL_ASSERT_OK_AND_ASSIGN(TensorShard s, with_config.ShardFor("x.qkv_proj.weight", Shape{6144, 8}));
  EXPECT_THAT(s.blocks, ElementsAre(4096, 1024, 1024));

  // A file named like a preset is reached with a '/'.
  const std::string preset_named = dir.File("llama");
  testing::WriteFile(preset_named, "only.this replicate\n");
  FL_ASSERT_OK_AND_ASSIGN(ShardRules by_path, ShardRules::FromSpec(preset_named));
  EXPECT_EQ(by_path.rules().size(), 1u);

  EXPECT_THAT(
      ShardRules::FromSpec("lama"),
      StatusIs(StatusCode::kNotFound, AllOf(HasSubstr("'lama'"), HasSubstr("llama, none"))));
  EXPECT_THAT(ShardRules::FromSpec(dir.File("nope.rules")), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(ShardRules::FromSpec(""), StatusIs(StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------------
// Coverage: across the ranks, every index of every tensor is loaded exactly once (split tensors),
// or by every rank (replicated ones).

// Checks the parts of all `world` ranks of `name`; `what` names the case in failures.
void ExpectExactCover(const ShardRules& rules, const std::string& name, const Shape& shape,
                      uint32_t world) {
  SCOPED_TRACE(name + " world " + std::to_string(world));
  Result<TensorShard> shard = rules.ShardFor(name, shape);
  ASSERT_THAT(shard, IsOk());
  if (shard->action == ShardAction::kReplicate) {
    for (uint32_t r = 0; r < world; ++r) {
      FL_ASSERT_OK_AND_ASSIGN(TensorPart p, rules.PartFor(name, shape, world, r));
      EXPECT_TRUE(p.whole());
    }
    return;
  }
  const uint32_t dim = shard->dim;
  std::vector<int> seen(shape[dim], 0);
  for (uint32_t r = 0; r < world; ++r) {
    FL_ASSERT_OK_AND_ASSIGN(TensorPart p, rules.PartFor(name, shape, world, r));
    ASSERT_EQ(p.dims.size(), dim + 1);
    for (uint32_t d = 0; d < dim; ++d) EXPECT_TRUE(p.dims[d].empty());  // other dims whole
    const std::vector<IndexRange>& ranges = p.dims[dim];
    ASSERT_FALSE(ranges.empty());  // never "whole" for a split tensor
    if (PartIsEmpty(p)) {
      ASSERT_EQ(ranges.size(), 1u);  // the one empty marker range
      continue;
    }
    uint64_t last_stop = 0;
    for (size_t i = 0; i < ranges.size(); ++i) {
      const IndexRange& rg = ranges[i];
      EXPECT_GT(rg.size(), 0u);  // Load() refuses empty ranges
      EXPECT_LE(rg.stop, shape[dim]);
      if (i > 0) {
        EXPECT_GE(rg.start, last_stop);  // ascending, no overlap
      }
      last_stop = rg.stop;
      for (uint64_t k = rg.start; k < rg.stop && k < shape[dim]; ++k) ++seen[k];
    }
  }
  for (uint64_t k = 0; k < seen.size(); ++k) {
    ASSERT_EQ(seen[k], 1) << "index " << k << " of dim " << dim;
  }
}

TEST(ShardCoverageTest, EveryIndexExactlyOnceForWorldsOneToEight) {
  FL_ASSERT_OK_AND_ASSIGN(ModelConfig config, ParseModelConfig(
                                                  R"({"hidden_size": 48, "num_attention_heads": 6,
                                                      "num_key_value_heads": 2})",
                                                  "tiny/config.json"));
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama", &config));
  FL_ASSERT_OK_AND_ASSIGN(ShardRules odd, ShardRules::Parse("*.fused split 1 blocks 5,1,3,7\n"
                                                            "*.tri split 2 blocks 3\n"
                                                            "*.col split 1\n",
                                                            "odd.rules"));
  struct Case {
    const ShardRules* rules;
    std::string name;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {&llama, "model.layers.0.self_attn.q_proj.weight", {48, 48}},
      {&llama, "model.layers.0.self_attn.k_proj.weight", {16, 48}},
      {&llama, "model.layers.0.self_attn.k_proj.bias", {16}},
      {&llama, "model.layers.0.self_attn.qkv_proj.weight", {80, 48}},  // 48,16,16
      {&llama, "model.layers.0.mlp.gate_up_proj.weight", {26, 48}},    // 13,13
      {&llama, "model.layers.0.mlp.down_proj.weight", {48, 13}},
      {&llama, "model.embed_tokens.weight", {1001, 48}},
      {&llama, "lm_head.weight", {3, 48}},  // fewer rows than ranks
      {&llama, "model.norm.weight", {48}},
      {&odd, "a.fused", {2, 16, 3}},
      {&odd, "a.tri", {2, 2, 9}},
      {&odd, "a.col", {4, 5, 6}},
      {&odd, "a.col", {4, 0}},  // an empty dimension
  };
  for (const Case& c : cases) {
    for (uint32_t world = 1; world <= 8; ++world) {
      ExpectExactCover(*c.rules, c.name, c.shape, world);
    }
  }
}

TEST(ShardCoverageTest, RankWithNothingGetsAnEmptyPartNotTheWhole) {
  FL_ASSERT_OK_AND_ASSIGN(ShardRules llama, ShardRules::Preset("llama"));
  FL_ASSERT_OK_AND_ASSIGN(TensorPart p, llama.PartFor("lm_head.weight", Shape{2, 8}, 4, 3));
  EXPECT_FALSE(p.whole());
  EXPECT_TRUE(PartIsEmpty(p));
  // Blocks of which a rank gets only some: the empty ones are left out.
  FL_ASSERT_OK_AND_ASSIGN(ShardRules rules,
                          ShardRules::Parse("w split 0 blocks 8,1,1\n", "small.rules"));
  FL_ASSERT_OK_AND_ASSIGN(TensorPart r1, rules.PartFor("w", Shape{10, 2}, 2, 1));
  ASSERT_EQ(r1.dims.size(), 1u);
  EXPECT_THAT(r1.dims[0], ElementsAre(IndexRange{4, 8}));
  EXPECT_FALSE(PartIsEmpty(r1));
  FL_ASSERT_OK_AND_ASSIGN(TensorPart r0, rules.PartFor("w", Shape{10, 2}, 2, 0));
  EXPECT_THAT(r0.dims[0], ElementsAre(IndexRange{0, 4}, IndexRange{8, 9}, IndexRange{9, 10}));
  EXPECT_FALSE(PartIsEmpty(TensorPart{}));
}

}  // namespace
}  // namespace flashload::dist
