// Shard rules: how each tensor of a model is split across the ranks of a tensor-parallel job, and
// which part of it a rank loads.
//
// A rule set is an ordered list of rules `<glob> <action>`; the first rule whose glob matches the
// whole tensor name decides, and a tensor no rule matches is replicated (every rank loads all of
// it). An action is one of
//   replicate                       every rank loads the whole tensor;
//   split D                         rank r loads torch.tensor_split(t, world, D)[r];
//   split D blocks N                dimension D stacks N equal blocks (gate and up in gate_up_proj);
//   split D blocks S1,S2,...        dimension D stacks blocks of sizes S1, S2, ... (q, k, v in a
//                                   GQA qkv_proj);
// and with blocks each block is split on its own (tensor_split semantics) and rank r loads its
// range of every block, in order. The file format is documented in docs/shard-rules.md.
//
// Usage:
//   FL_ASSIGN_OR_RETURN(dist::ShardRules rules, dist::ShardRules::FromSpec("llama", &config));
//   FL_ASSIGN_OR_RETURN(TensorPart part, rules.PartFor(name, info.shape, world, rank));
//   selection.tensors[name] = part;  // an empty part loads as an empty tensor
//
// Errors: parsing names the file, the line and the bad token (kInvalidArgument); applying a rule to
// a tensor it does not fit (a dimension the tensor lacks, blocks that do not add up to the
// dimension or do not divide it) names the tensor, its shape, the rule and where the rule was
// written (kInvalidArgument).
//
// Thread-safety: a ShardRules is immutable once built; any number of threads may call its const
// methods at once. The free functions are pure.
#ifndef FLASHLOAD_DIST_SHARD_RULES_H_
#define FLASHLOAD_DIST_SHARD_RULES_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flashload/selection.h"
#include "flashload/status.h"

namespace flashload::dist {

// Rank `rank`'s indices of a dimension of `n` indices split `world` ways, exactly as
// torch.tensor_split(t, world, dim)[rank]: the first n % world ranks get n / world + 1 indices, the
// others n / world, in rank order. The range is empty (start == stop) when n < world and
// rank >= n. Requires world >= 1 and rank < world (otherwise the range is empty).
IndexRange SplitIndex(uint64_t n, uint32_t world, uint32_t rank);

// What a Hugging Face config.json says about attention, as far as sharding needs it. Zero means
// "not given".
struct ModelConfig {
  uint64_t hidden_size = 0;
  uint64_t num_attention_heads = 0;
  uint64_t num_key_value_heads = 0;  // 0: as many as num_attention_heads (no GQA)
  uint64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  std::string source;                // where it was read, for messages ("config.json")

  // The sizes of the q, k and v blocks of a fused qkv projection along its output dimension:
  // {heads * head_dim, kv_heads * head_dim, kv_heads * head_dim}. kInvalidArgument naming `source`
  // and the missing or inconsistent field when num_attention_heads is 0, or head_dim is 0 and
  // hidden_size is 0 or not a multiple of num_attention_heads.
  Result<std::vector<uint64_t>> QkvBlocks() const;
};

// The fields of ModelConfig read from the text of a Hugging Face config.json named `source_name`.
// Absent fields (and JSON null) stay 0; a field absent at the top level is taken from
// "text_config" when there is one (multimodal models keep the language model's fields there).
// Errors (kDataLoss, naming `source_name`): the text is not a JSON object; a present field (or
// "text_config") has the wrong type: the message names the field.
Result<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source_name);

enum class ShardAction {
  kReplicate,  // every rank loads the whole tensor
  kSplit,      // each rank loads its slice along one dimension (of every block, when fused)
};

// The decision for one tensor of a given shape.
struct TensorShard {
  ShardAction action = ShardAction::kReplicate;
  // kSplit: the dimension split.
  uint32_t dim = 0;
  // kSplit of a fused dimension: the sizes of its blocks, in order (they add up to shape[dim]);
  // empty for a plain split.
  std::vector<uint64_t> blocks;
  // The glob of the rule that decided; empty when no rule matched (then action is kReplicate).
  std::string rule;
  // Where that rule was written: "rules.txt:12", or a preset ("llama preset"); when no rule
  // matched, the rule set's source.
  std::string origin;

  bool operator==(const TensorShard&) const = default;
};

// One line for reports, e.g. "split dim 0 (rule '*.q_proj.weight', llama preset)",
// "split dim 0 in blocks 4096,1024,1024 (rule '*.qkv_proj.weight', rules.txt:3)",
// "replicate (no rule matches in llama preset)".
std::string Describe(const TensorShard& shard);

// Rank `rank`'s part of a tensor of `shape` sharded by `shard` among `world` ranks (world >= 1,
// rank < world; `shard` as ShardFor() made it for this shape):
// - kReplicate: the whole tensor (a TensorPart with no ranges);
// - kSplit: on `dim`, SplitIndex() of the dimension, or with blocks SplitIndex() of every block
//   offset to where the block starts, one range per block in block order. A block of which this
//   rank gets nothing (a block smaller than `world`) adds no range, since a selection's ranges are
//   non-empty. When the rank gets nothing at all, dims[dim] holds one empty range: the part is
//   empty (PartIsEmpty()): a load gives it as a tensor with 0 along `dim`, as tensor_split does;
//   it is never "whole".
TensorPart ShardPart(const TensorShard& shard, std::span<const uint64_t> shape, uint32_t world,
                     uint32_t rank);

// Whether `part` selects no element (some dimension lists only empty ranges).
bool PartIsEmpty(const TensorPart& part);

// Whether `name` matches `glob` as a whole: `*` any run of characters ('.' and '/' included), `?`
// one character, `[abc]`, `[a-z]` and `[!abc]` (or `[^abc]`) one character of (not of) a class,
// `\c` the character c itself. A glob ShardRules did not validate (ValidateGlob) never matches when
// malformed.
bool GlobMatches(std::string_view glob, std::string_view name);

// OK when `glob` is well formed; otherwise kInvalidArgument saying what is wrong with it (an
// unclosed or empty class, a trailing backslash, an empty glob) and where, without naming a file.
Status ValidateGlob(std::string_view glob);

// One rule of a rule set as written.
struct ShardRule {
  std::string glob;
  ShardAction action = ShardAction::kReplicate;
  uint32_t dim = 0;
  // Fused dimension: either a count of equal blocks (> 0) or explicit block sizes (two or more,
  // each > 0); neither for a plain split.
  uint32_t equal_blocks = 0;
  std::vector<uint64_t> block_sizes;
  std::string origin;  // "rules.txt:12", "llama preset"

  bool operator==(const ShardRule&) const = default;
};

// An ordered rule set; see the top of this file.
class ShardRules {
 public:
  // No rules: every tensor is replicated.
  ShardRules() = default;

  // The rules in `text`, the contents of a rules file named `source_name` (used in origins and
  // messages). Errors: kInvalidArgument naming `source_name`:<line>, the bad token and what a
  // line should look like (an unknown action, a bad or missing dimension, bad blocks, a malformed
  // glob, extra tokens).
  static Result<ShardRules> Parse(std::string_view text, std::string_view source_name);

  // The rules in the local file `path` (at most kMaxRulesFileBytes). Errors: those of opening and
  // reading the file, naming it (kNotFound when missing); kResourceExhausted when it is too large;
  // those of Parse().
  static Result<ShardRules> ReadFile(const std::string& path);

  // A built-in rule set: "llama" (Hugging Face Llama, Mistral, Qwen2 and Phi-3 style names; see
  // docs/shard-rules.md) or "none" (no rules: everything replicated). With `config`, the llama
  // preset sizes the q, k and v blocks of a fused qkv_proj from it (when it gives
  // num_attention_heads); without, a fused qkv_proj is three equal blocks. Errors:
  // kInvalidArgument for an unknown name (listing the presets) or a config whose blocks cannot be
  // computed (ModelConfig::QkvBlocks()).
  static Result<ShardRules> Preset(std::string_view name, const ModelConfig* config = nullptr);

  // The names Preset() accepts.
  static std::vector<std::string> PresetNames();

  // `spec` as a command line or Python caller gives it: a preset name, or else the path of a rules
  // file. A spec containing '/' is always a path (write ./llama for a file named like a preset).
  // kNotFound naming the spec and the presets when it is neither a preset nor an existing file.
  static Result<ShardRules> FromSpec(std::string_view spec, const ModelConfig* config = nullptr);

  // The decision for tensor `name` of `shape` (the first matching rule, else replicate).
  // kInvalidArgument naming the tensor, its shape, the rule and its origin when the rule splits a
  // dimension the tensor lacks, or its blocks do not add up to (explicit sizes) or do not divide
  // (equal count) the size of the dimension.
  Result<TensorShard> ShardFor(std::string_view name, std::span<const uint64_t> shape) const;

  // ShardPart(ShardFor(name, shape), shape, world, rank); kInvalidArgument also when world is 0
  // or rank >= world.
  Result<TensorPart> PartFor(std::string_view name, std::span<const uint64_t> shape, uint32_t world,
                             uint32_t rank) const;

  const std::vector<ShardRule>& rules() const { return rules_; }
  // Where the rules came from: the file name, "llama preset", "none preset"; empty for ShardRules().
  const std::string& source() const { return source_; }

  // The rules in the file format, one per line, headed by a comment naming source(); Parse() of it
  // gives the same rules (with the new file's origins).
  std::string ToText() const;

 private:
  ShardRules(std::vector<ShardRule> rules, std::string source)
      : rules_(std::move(rules)), source_(std::move(source)) {}

  std::vector<ShardRule> rules_;
  std::string source_;
};

// The largest rules file ReadFile() reads.
inline constexpr uint64_t kMaxRulesFileBytes = 1ull << 20;

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_SHARD_RULES_H_
