#include "dist/shard_rules.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "format/json_text.h"
#include "io/local_file.h"
#include "io/read_text.h"

namespace flashload::dist {
namespace {

using format_internal::Quote;

constexpr std::string_view kLineForm =
    "a rule is `<glob> replicate`, `<glob> split <dim>`, `<glob> split <dim> blocks <count>` or "
    "`<glob> split <dim> blocks <size>,<size>,...`";

std::string ShapeText(std::span<const uint64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string BlocksText(const std::vector<uint64_t>& sizes) {
  return fmt::format("{}", fmt::join(sizes, ","));
}

// One character of `name` against the glob item starting at glob[g] (not '*'): the position after
// the item when it matches, nullopt when it does not (or the item is malformed).
std::optional<size_t> MatchItem(std::string_view glob, size_t g, char c) {
  const char item = glob[g];
  if (item == '?') return g + 1;
  if (item == '\\') {
    if (g + 1 >= glob.size()) return std::nullopt;
    return glob[g + 1] == c ? std::optional<size_t>(g + 2) : std::nullopt;
  }
  if (item != '[') return item == c ? std::optional<size_t>(g + 1) : std::nullopt;
  size_t i = g + 1;
  bool negate = false;
  if (i < glob.size() && (glob[i] == '!' || glob[i] == '^')) {
    negate = true;
    ++i;
  }
  bool in_class = false;
  bool first = true;
  while (i < glob.size() && (glob[i] != ']' || first)) {
    first = false;
    char lo = glob[i];
    if (lo == '\\' && i + 1 < glob.size()) lo = glob[++i];
    char hi = lo;
    if (i + 2 < glob.size() && glob[i + 1] == '-' && glob[i + 2] != ']') {
      hi = glob[i + 2];
      if (hi == '\\' && i + 3 < glob.size()) hi = glob[++i + 2];
      i += 2;
    }
    if (static_cast<unsigned char>(c) >= static_cast<unsigned char>(lo) &&
        static_cast<unsigned char>(c) <= static_cast<unsigned char>(hi)) {
      in_class = true;
    }
    ++i;
  }
  if (i >= glob.size()) return std::nullopt;  // unclosed class
  return in_class != negate ? std::optional<size_t>(i + 1) : std::nullopt;
}

}  // namespace

IndexRange SplitIndex(uint64_t n, uint32_t world, uint32_t rank) {
  if (world == 0 || rank >= world) return {};
  const uint64_t base = n / world;
  const uint64_t extra = n % world;  // the first `extra` ranks get one more
  const uint64_t start = rank * base + std::min<uint64_t>(rank, extra);
  return {start, start + base + (rank < extra ? 1 : 0)};
}

bool GlobMatches(std::string_view glob, std::string_view name) {
  // Greedy match with one backtrack point: the last '*' seen and where in `name` it resumed. A
  // later '*' supersedes an earlier one, so this is linear in name.size() per '*' (no exponential
  // backtracking).
  constexpr size_t kNone = std::string_view::npos;
  size_t g = 0, n = 0;
  size_t star_g = kNone, star_n = 0;
  while (n < name.size()) {
    if (g < glob.size() && glob[g] == '*') {
      star_g = ++g;
      star_n = n;
      continue;
    }
    if (g < glob.size()) {
      if (std::optional<size_t> next = MatchItem(glob, g, name[n])) {
        g = *next;
        ++n;
        continue;
      }
    }
    if (star_g == kNone) return false;
    g = star_g;
    n = ++star_n;
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

Status ValidateGlob(std::string_view glob) {
  if (glob.empty()) return InvalidArgumentError("bad glob: it is empty");
  for (size_t i = 0; i < glob.size(); ++i) {
    if (glob[i] == '\\') {
      if (i + 1 >= glob.size()) {
        return InvalidArgumentError(fmt::format(
            "bad glob {}: it ends in a lone '\\'; write '\\\\' for a backslash", Quote(glob)));
      }
      ++i;
      continue;
    }
    if (glob[i] != '[') continue;
    const size_t open = i;
    size_t j = i + 1;
    if (j < glob.size() && (glob[j] == '!' || glob[j] == '^')) ++j;
    const size_t members = j;
    while (j < glob.size() && (glob[j] != ']' || j == members)) {
      if (glob[j] == '\\' && j + 1 < glob.size()) ++j;
      const char lo = glob[j];
      if (j + 2 < glob.size() && glob[j + 1] == '-' && glob[j + 2] != ']') {
        size_t h = j + 2;
        if (glob[h] == '\\' && h + 1 < glob.size()) ++h;
        const char hi = glob[h];
        if (static_cast<unsigned char>(hi) < static_cast<unsigned char>(lo)) {
          return InvalidArgumentError(
              fmt::format("bad glob {}: the class at character {} has the range '{}-{}', which is "
                          "backwards; write the lower character first",
                          Quote(glob), open + 1, lo, hi));
        }
        j = h;
      }
      ++j;
    }
    if (j >= glob.size()) {
      return InvalidArgumentError(fmt::format(
          "bad glob {}: the '[' at character {} is never closed by ']'; write '\\[' for a "
          "literal '['",
          Quote(glob), open + 1));
    }
    i = j;
  }
  return Status::Ok();
}

Result<std::vector<uint64_t>> ModelConfig::QkvBlocks() const {
  const std::string where = source.empty() ? std::string("the model config") : source;
  if (num_attention_heads == 0) {
    return InvalidArgumentError(fmt::format(
        "{}: no num_attention_heads, so the q, k and v blocks of a fused qkv_proj cannot be "
        "sized; give a config.json that has it, or a rules file with `split 0 blocks q,k,v`",
        where));
  }
  uint64_t head_dim_value = head_dim;
  if (head_dim_value == 0) {
    if (hidden_size == 0 || hidden_size % num_attention_heads != 0) {
      return InvalidArgumentError(fmt::format(
          "{}: no head_dim, and hidden_size {} is not a positive multiple of "
          "num_attention_heads {}, so the q, k and v blocks of a fused qkv_proj cannot be sized; "
          "give a config.json with head_dim, or a rules file with `split 0 blocks q,k,v`",
          where, hidden_size, num_attention_heads));
    }
    head_dim_value = hidden_size / num_attention_heads;
  }
  const uint64_t kv_heads = num_key_value_heads == 0 ? num_attention_heads : num_key_value_heads;
  constexpr uint64_t kMax = uint64_t{1} << 40;  // far above any real dimension, and no overflow
  if (head_dim_value > kMax || num_attention_heads > kMax / head_dim_value ||
      kv_heads > kMax / head_dim_value) {
    return InvalidArgumentError(fmt::format(
        "{}: num_attention_heads {}, num_key_value_heads {} and head_dim {} give q, k, v blocks "
        "too large for any tensor; check the config",
        where, num_attention_heads, kv_heads, head_dim_value));
  }
  return std::vector<uint64_t>{num_attention_heads * head_dim_value, kv_heads * head_dim_value,
                               kv_heads * head_dim_value};
}

Result<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source_name) {
  simdjson::dom::parser parser;
  simdjson::dom::element root_element;
  if (auto code = parser.parse(json_text.data(), json_text.size(), true).get(root_element); code) {
    return DataLossError(fmt::format("{}: not valid JSON: {}; give the model's config.json",
                                     source_name, simdjson::error_message(code)));
  }
  simdjson::dom::object root;
  if (root_element.get_object().get(root) != simdjson::SUCCESS) {
    return DataLossError(fmt::format(
        "{}: a model config must be a JSON object; give the model's config.json", source_name));
  }
  simdjson::dom::object text_config;
  bool has_text_config = false;
  simdjson::dom::element text_element;
  if (root["text_config"].get(text_element) == simdjson::SUCCESS && !text_element.is_null()) {
    if (text_element.get_object().get(text_config) != simdjson::SUCCESS) {
      return DataLossError(fmt::format("{}: `text_config` must be an object", source_name));
    }
    has_text_config = true;
  }

  // The field `key`: from the top level, else from text_config; 0 when absent or null.
  auto read = [&](std::string_view key, uint64_t& out) -> Status {
    simdjson::dom::element value;
    std::string where(key);
    bool found = root[key].get(value) == simdjson::SUCCESS && !value.is_null();
    if (!found && has_text_config) {
      found = text_config[key].get(value) == simdjson::SUCCESS && !value.is_null();
      where = fmt::format("text_config.{}", key);
    }
    if (!found) return Status::Ok();
    if (value.get_uint64().get(out) != simdjson::SUCCESS) {
      return DataLossError(fmt::format("{}: `{}` must be a non-negative integer, not {}",
                                       source_name, where, simdjson::to_string(value)));
    }
    return Status::Ok();
  };
  ModelConfig config;
  config.source = std::string(source_name);
  FL_RETURN_IF_ERROR(read("hidden_size", config.hidden_size));
  FL_RETURN_IF_ERROR(read("num_attention_heads", config.num_attention_heads));
  FL_RETURN_IF_ERROR(read("num_key_value_heads", config.num_key_value_heads));
  FL_RETURN_IF_ERROR(read("head_dim", config.head_dim));
  return config;
}

std::string Describe(const TensorShard& shard) {
  std::string action;
  if (shard.action == ShardAction::kReplicate) {
    action = "replicate";
  } else if (shard.blocks.empty()) {
    action = fmt::format("split dim {}", shard.dim);
  } else if (std::all_of(shard.blocks.begin(), shard.blocks.end(),
                         [&](uint64_t b) { return b == shard.blocks.front(); })) {
    action = fmt::format("split dim {} in {} blocks of {}", shard.dim, shard.blocks.size(),
                         shard.blocks.front());
  } else {
    action = fmt::format("split dim {} in blocks {}", shard.dim, BlocksText(shard.blocks));
  }
  if (shard.rule.empty()) {
    return fmt::format("{} (no rule matches{}{})", action, shard.origin.empty() ? "" : " in ",
                       shard.origin);
  }
  return fmt::format("{} (rule {}, {})", action, Quote(shard.rule), shard.origin);
}

TensorPart ShardPart(const TensorShard& shard, std::span<const uint64_t> shape, uint32_t world,
                     uint32_t rank) {
  TensorPart part;
  if (shard.action == ShardAction::kReplicate) return part;
  const uint64_t size = shard.dim < shape.size() ? shape[shard.dim] : 0;
  part.dims.resize(shard.dim + 1);
  std::vector<IndexRange>& ranges = part.dims[shard.dim];
  if (shard.blocks.empty()) {
    ranges.push_back(SplitIndex(size, world, rank));
    return part;
  }
  uint64_t block_start = 0;
  for (uint64_t block : shard.blocks) {
    const IndexRange r = SplitIndex(block, world, rank);
    if (r.size() > 0) ranges.push_back({block_start + r.start, block_start + r.stop});
    block_start += block;
  }
  if (ranges.empty()) ranges.push_back({0, 0});  // nothing of any block: empty, never "whole"
  return part;
}

bool PartIsEmpty(const TensorPart& part) {
  return std::any_of(part.dims.begin(), part.dims.end(), [](const std::vector<IndexRange>& d) {
    return !d.empty() &&
           std::all_of(d.begin(), d.end(), [](const IndexRange& r) { return r.size() == 0; });
  });
}

namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// The tokens of one line, up to a '#' that starts the line or follows white space.
std::vector<std::string_view> Tokenize(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsBlank(line[i])) ++i;
    if (i >= line.size() || line[i] == '#') break;
    const size_t start = i;
    while (i < line.size() && !IsBlank(line[i])) ++i;
    tokens.push_back(line.substr(start, i - start));
  }
  return tokens;
}

// One line's rule; `where` is "<source>:<line>" for messages.
Result<ShardRule> ParseRule(const std::vector<std::string_view>& tokens, const std::string& where) {
  ShardRule rule;
  rule.glob = std::string(tokens[0]);
  if (Status s = ValidateGlob(tokens[0]); !s.ok()) {
    return InvalidArgumentError(fmt::format("{}: {}", where, s.message()));
  }
  if (tokens.size() < 2) {
    return InvalidArgumentError(
        fmt::format("{}: glob {} has no action; {}", where, Quote(tokens[0]), kLineForm));
  }
  const std::string_view action = tokens[1];
  if (action == "replicate") {
    rule.action = ShardAction::kReplicate;
    if (tokens.size() > 2) {
      return InvalidArgumentError(fmt::format(
          "{}: unexpected {} after `replicate`; nothing follows it (a `#` starts a comment)", where,
          Quote(tokens[2])));
    }
    return rule;
  }
  if (action != "split") {
    return InvalidArgumentError(
        fmt::format("{}: unknown action {}; {}", where, Quote(action), kLineForm));
  }
  rule.action = ShardAction::kSplit;
  if (tokens.size() < 3) {
    return InvalidArgumentError(fmt::format(
        "{}: `split` without a dimension; write `split 0` for the first dimension", where));
  }
  const std::optional<uint64_t> dim = ParseDecimal(tokens[2]);
  if (!dim || *dim > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError(
        fmt::format("{}: bad dimension {} after `split`; a dimension is a number, 0 for the first "
                    "(for an nn.Linear weight [out, in]: 0 splits the outputs, 1 the inputs)",
                    where, Quote(tokens[2])));
  }
  rule.dim = static_cast<uint32_t>(*dim);
  if (tokens.size() == 3) return rule;
  if (tokens[3] != "blocks") {
    return InvalidArgumentError(
        fmt::format("{}: unexpected {} after `split {}`; only `blocks <count>` or "
                    "`blocks <size>,<size>,...` may follow (a `#` starts a comment)",
                    where, Quote(tokens[3]), rule.dim));
  }
  if (tokens.size() < 5) {
    return InvalidArgumentError(
        fmt::format("{}: `blocks` without a count or sizes; write `blocks 2` (two equal blocks) or "
                    "`blocks 4096,1024,1024` (sizes in order)",
                    where));
  }
  if (tokens.size() > 5) {
    return InvalidArgumentError(fmt::format(
        "{}: unexpected {} after the blocks; write block sizes as one list without spaces, "
        "e.g. `blocks 4096,1024,1024`",
        where, Quote(tokens[5])));
  }
  const std::string_view list = tokens[4];
  if (list.find(',') == std::string_view::npos) {
    const std::optional<uint64_t> count = ParseDecimal(list);
    if (!count || *count == 0 || *count > std::numeric_limits<uint32_t>::max()) {
      return InvalidArgumentError(fmt::format(
          "{}: bad block count {}; write a count of equal blocks from 1 up (`blocks 2`) or the "
          "block sizes separated by commas (`blocks 4096,1024,1024`)",
          where, Quote(list)));
    }
    rule.equal_blocks = static_cast<uint32_t>(*count);
    return rule;
  }
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view item = list.substr(start, comma - start);
    const std::optional<uint64_t> size = ParseDecimal(item);
    if (!size || *size == 0) {
      return InvalidArgumentError(fmt::format(
          "{}: bad block size {} in {}; block sizes are numbers from 1 up separated by commas, "
          "e.g. `blocks 4096,1024,1024`",
          where, Quote(item), Quote(list)));
    }
    rule.block_sizes.push_back(*size);
    start = comma + 1;
  }
  return rule;
}

// Parses `text`; each rule's origin is `origin_of(line)`.
template <typename OriginOf>
Result<std::vector<ShardRule>> ParseLines(std::string_view text, std::string_view source_name,
                                          OriginOf origin_of) {
  std::vector<ShardRule> rules;
  std::vector<size_t> lines;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    const std::vector<std::string_view> tokens = Tokenize(line);
    if (tokens.empty()) continue;
    const std::string where = fmt::format("{}:{}", source_name, line_no);
    FL_ASSIGN_OR_RETURN(ShardRule rule, ParseRule(tokens, where));
    for (size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].glob == rule.glob) {
        return InvalidArgumentError(fmt::format(
            "{}: glob {} is already the glob of line {}, whose rule comes first and always "
            "wins; remove one of the two",
            where, Quote(rule.glob), lines[i]));
      }
    }
    rule.origin = origin_of(line_no);
    rules.push_back(std::move(rule));
    lines.push_back(line_no);
  }
  return rules;
}

}  // namespace

Result<ShardRules> ShardRules::Parse(std::string_view text, std::string_view source_name) {
  FL_ASSIGN_OR_RETURN(std::vector<ShardRule> rules, ParseLines(text, source_name, [&](size_t line) {
                        return fmt::format("{}:{}", source_name, line);
                      }));
  return ShardRules(std::move(rules), std::string(source_name));
}

Result<ShardRules> ShardRules::ReadFile(const std::string& path) {
  Result<io_internal::LocalFile> file = io_internal::OpenLocal(path, /*direct=*/false);
  if (!file.ok()) return file.status().WithContext("shard rules file");
  const int fd = file->fd.get();
  Result<std::string> text = ReadTextFile(
      path, file->size,
      [&](uint64_t offset, std::span<std::byte> dst) {
        return io_internal::PreadFully(fd, offset, dst, /*alignment=*/1, path);
      },
      kMaxRulesFileBytes);
  if (!text.ok()) return text.status().WithContext("shard rules file");
  return Parse(*text, path);
}

std::vector<std::string> ShardRules::PresetNames() { return {"llama", "none"}; }

Result<ShardRules> ShardRules::Preset(std::string_view name, const ModelConfig* config) {
  const std::string source = fmt::format("{} preset", name);
  if (name == "none") return ShardRules({}, source);
  if (name != "llama") {
    return InvalidArgumentError(fmt::format("unknown shard preset {}; the presets are {}",
                                            Quote(name), fmt::join(PresetNames(), ", ")));
  }
  std::string qkv_blocks = "3";
  std::string qkv_origin = source;
  if (config != nullptr && config->num_attention_heads != 0) {
    FL_ASSIGN_OR_RETURN(std::vector<uint64_t> blocks, config->QkvBlocks());
    qkv_blocks = BlocksText(blocks);
    qkv_origin = fmt::format("{}, q/k/v sizes from {}", source,
                             config->source.empty() ? "the model config" : config->source);
  }
  // nn.Linear weights are stored [out, in]: column-parallel layers split dim 0 (and their biases),
  // row-parallel ones dim 1 (their biases are added once, after the reduction: replicated).
  const std::string text = fmt::format(R"(
*.q_proj.weight         split 0
*.q_proj.bias           split 0
*.k_proj.weight         split 0
*.k_proj.bias           split 0
*.v_proj.weight         split 0
*.v_proj.bias           split 0
*.qkv_proj.weight       split 0 blocks {0}
*.qkv_proj.bias         split 0 blocks {0}
*.gate_proj.weight      split 0
*.gate_proj.bias        split 0
*.up_proj.weight        split 0
*.up_proj.bias          split 0
*.gate_up_proj.weight   split 0 blocks 2
*.gate_up_proj.bias     split 0 blocks 2
*.o_proj.weight         split 1
*.o_proj.bias           replicate
*.down_proj.weight      split 1
*.down_proj.bias        replicate
embed_tokens.weight     split 0
*.embed_tokens.weight   split 0
lm_head.weight          split 0
*.lm_head.weight        split 0
*norm*                  replicate
)",
                                       qkv_blocks);
  FL_ASSIGN_OR_RETURN(std::vector<ShardRule> rules,
                      ParseLines(text, source, [&](size_t) { return source; }));
  for (ShardRule& rule : rules) {
    if (rule.glob.starts_with("*.qkv_proj.")) rule.origin = qkv_origin;
  }
  return ShardRules(std::move(rules), source);
}

Result<ShardRules> ShardRules::FromSpec(std::string_view spec, const ModelConfig* config) {
  if (spec.empty()) {
    return InvalidArgumentError(fmt::format(
        "empty shard spec; give a preset ({}) or the path of a rules file (docs/shard-rules.md)",
        fmt::join(PresetNames(), ", ")));
  }
  const std::vector<std::string> presets = PresetNames();
  if (spec.find('/') == std::string_view::npos &&
      std::find(presets.begin(), presets.end(), spec) != presets.end()) {
    return Preset(spec, config);
  }
  const std::string path(spec);
  std::error_code ec;
  if (spec.find('/') == std::string_view::npos && !std::filesystem::exists(path, ec)) {
    return NotFoundError(fmt::format(
        "shard spec {} is neither a preset ({}) nor an existing rules file; check the spelling, "
        "or give the rules file's path",
        Quote(spec), fmt::join(presets, ", ")));
  }
  return ReadFile(path);
}

Result<TensorShard> ShardRules::ShardFor(std::string_view name,
                                         std::span<const uint64_t> shape) const {
  const auto it = std::find_if(rules_.begin(), rules_.end(),
                               [&](const ShardRule& r) { return GlobMatches(r.glob, name); });
  TensorShard shard;
  if (it == rules_.end()) {
    shard.origin = source_;
    return shard;
  }
  const ShardRule& rule = *it;
  shard.action = rule.action;
  shard.rule = rule.glob;
  shard.origin = rule.origin;
  if (rule.action == ShardAction::kReplicate) return shard;

  // "tensor 'x' of shape [..]: rule '*.x' (rules.txt:3) ..."
  const auto fail = [&](std::string what) {
    return InvalidArgumentError(fmt::format(
        "tensor {} of shape {}: rule {} ({}) {}; fix the rule, or put a rule for this tensor "
        "before it",
        Quote(name), ShapeText(shape), Quote(rule.glob), rule.origin, what));
  };
  if (rule.dim >= shape.size()) {
    return fail(
        shape.empty() ? fmt::format("splits dimension {}, but the tensor is a scalar", rule.dim)
        : shape.size() == 1
            ? fmt::format("splits dimension {}, but the tensor has 1 dimension (0)", rule.dim)
            : fmt::format("splits dimension {}, but the tensor has {} dimensions (0 to {})",
                          rule.dim, shape.size(), shape.size() - 1));
  }
  shard.dim = rule.dim;
  const uint64_t size = shape[rule.dim];
  if (rule.equal_blocks != 0) {
    if (size % rule.equal_blocks != 0) {
      return fail(
          fmt::format("cuts dimension {} of size {} into {} equal blocks, but {} is not a "
                      "multiple of {}",
                      rule.dim, size, rule.equal_blocks, size, rule.equal_blocks));
    }
    shard.blocks.assign(rule.equal_blocks, size / rule.equal_blocks);
  } else if (!rule.block_sizes.empty()) {
    uint64_t sum = 0;
    bool overflow = false;
    for (uint64_t b : rule.block_sizes) {
      overflow = overflow || sum > std::numeric_limits<uint64_t>::max() - b;
      sum += b;
    }
    if (overflow || sum != size) {
      return fail(fmt::format("cuts dimension {} of size {} into blocks {}, which add up to {}",
                              rule.dim, size, BlocksText(rule.block_sizes),
                              overflow ? std::string("more than 2^64") : std::to_string(sum)));
    }
    shard.blocks = rule.block_sizes;
  }
  return shard;
}

Result<TensorPart> ShardRules::PartFor(std::string_view name, std::span<const uint64_t> shape,
                                       uint32_t world, uint32_t rank) const {
  if (world == 0 || rank >= world) {
    return InvalidArgumentError(fmt::format(
        "tensor {}: rank {} of a tensor-parallel world of {}; a rank is from 0 to world - 1",
        Quote(name), rank, world));
  }
  FL_ASSIGN_OR_RETURN(TensorShard shard, ShardFor(name, shape));
  return ShardPart(shard, shape, world, rank);
}

std::string ShardRules::ToText() const {
  size_t width = 0;
  for (const ShardRule& r : rules_) width = std::max(width, r.glob.size());
  std::string out = fmt::format("# Shard rules from {} (docs/shard-rules.md)\n",
                                source_.empty() ? std::string("no source") : source_);
  for (const ShardRule& r : rules_) {
    out += fmt::format("{:<{}}  ", r.glob, width);
    if (r.action == ShardAction::kReplicate) {
      out += "replicate\n";
    } else if (r.equal_blocks != 0) {
      out += fmt::format("split {} blocks {}\n", r.dim, r.equal_blocks);
    } else if (!r.block_sizes.empty()) {
      out += fmt::format("split {} blocks {}\n", r.dim, BlocksText(r.block_sizes));
    } else {
      out += fmt::format("split {}\n", r.dim);
    }
  }
  return out;
}

}  // namespace flashload::dist
