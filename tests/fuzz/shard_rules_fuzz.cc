// libFuzzer target for the shard rules parser and config.json reader (src/dist/shard_rules.h):
// any input either fails cleanly (a non-empty message) or gives rules that, applied to a few
// Llama-style tensors for worlds 1 to 4, either refuse the tensor (a non-empty message) or give
// every rank a part whose ranges stay inside the tensor and together cover each split dimension
// exactly once. The same input read as a config.json fails cleanly or gives consistent q/k/v
// blocks.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "dist/shard_rules.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

struct Named {
  const char* name;
  std::vector<uint64_t> shape;
};

const Named kTensors[] = {
    {"model.layers.0.self_attn.q_proj.weight", {64, 32}},
    {"model.layers.0.self_attn.qkv_proj.weight", {96, 32}},
    {"model.layers.0.mlp.down_proj.weight", {32, 90}},
    {"model.embed_tokens.weight", {1001, 8}},
    {"model.norm.weight", {32}},
    {"x", {}},
};

void CheckRules(const flashload::dist::ShardRules& rules) {
  for (const Named& t : kTensors) {
    for (uint32_t world = 1; world <= 4; ++world) {
      std::vector<uint64_t> covered;
      bool split = false;
      uint32_t dim = 0;
      for (uint32_t rank = 0; rank < world; ++rank) {
        flashload::Result<flashload::TensorPart> part = rules.PartFor(t.name, t.shape, world, rank);
        if (!part.ok()) {
          Check(!part.status().message().empty());
          return;
        }
        for (size_t d = 0; d < part->dims.size(); ++d) {
          if (part->dims[d].empty()) continue;
          Check(d < t.shape.size());
          split = true;
          dim = static_cast<uint32_t>(d);
          if (covered.size() < t.shape[d]) covered.assign(t.shape[d], 0);
          for (const flashload::IndexRange& r : part->dims[d]) {
            Check(r.start <= r.stop && r.stop <= t.shape[d]);
            for (uint64_t i = r.start; i < r.stop; ++i) ++covered[i];
          }
        }
      }
      if (split) {
        for (uint64_t c : covered) Check(c == 1);
        Check(covered.size() == t.shape[dim]);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  flashload::Result<flashload::dist::ShardRules> rules =
      flashload::dist::ShardRules::Parse(text, "fuzz.rules");
  if (rules.ok()) {
    CheckRules(*rules);
  } else {
    Check(!rules.status().message().empty());
  }
  flashload::Result<flashload::dist::ModelConfig> config =
      flashload::dist::ParseModelConfig(text, "config.json");
  if (!config.ok()) {
    Check(!config.status().message().empty());
    return 0;
  }
  flashload::Result<std::vector<uint64_t>> blocks = config->QkvBlocks();
  if (blocks.ok()) {
    Check(blocks->size() == 3);
    flashload::Result<flashload::dist::ShardRules> preset =
        flashload::dist::ShardRules::Preset("llama", &*config);
    Check(preset.ok() || !preset.status().message().empty());
  }
  return 0;
}
