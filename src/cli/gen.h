// `flashload gen`: synthetic models with the tensor names and shapes of real architectures, filled
// with pseudo-random bytes, for benchmarks and tests.
//
// Shapes are derived from architecture configs (diffusers UNet2DConditionModel + AutoencoderKL +
// transformers CLIPTextModel; Llama), so parameter counts match the real models. Content is a
// counter-based generator keyed by (seed, file, tensor): deterministic, position-encoded, never
// zero runs, and for float dtypes always finite (|x| < 2) so conversions never meet NaN or Inf.
//
// Every .safetensors file is written with WriteSafetensors (atomic, reference order); every JSON
// file is written to a temporary name and renamed.
//
// Thread-safety: independent calls may run concurrently on different out_dirs.
#ifndef FLASHLOAD_CLI_GEN_H_
#define FLASHLOAD_CLI_GEN_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/status.h"

namespace flashload::cli {

// A Llama-style decoder, for kind "llm". Head dim = hidden / heads.
struct LlmShape {
  uint64_t hidden = 3072;
  uint64_t layers = 18;
  uint64_t intermediate = 8192;
  uint64_t vocab = 128256;
  uint64_t heads = 24;
  uint64_t kv_heads = 8;
  bool tie_embeddings = false;  // true: no lm_head.weight
  Dtype dtype = Dtype::kBF16;
  uint64_t shard_bytes = 2'000'000'000;  // target shard size (a tensor never spans shards)
};

// Parses "hidden=2048,layers=16,intermediate=5632,vocab=32000,heads=16,kv_heads=4,shard_mb=500,
// tie=1" (any subset, any order) on top of `base`. kInvalidArgument names the bad key or value.
Result<LlmShape> ParseLlmShape(std::string_view spec, LlmShape base = {});

struct GenOptions {
  std::string kind;     // one of GenKinds()
  std::string out_dir;  // created if missing
  uint64_t seed = 1;
  uint64_t alignment = 8;  // data section alignment of every file (8, or 4096 for O_DIRECT tests)
  bool force = false;      // write into a non-empty out_dir (files gen writes are replaced)
  // What floating tensors (F32, F16, BF16) hold: false = random finite bit patterns (incompressible),
  // true = trained-weight-like values, about N(0, 0.02) (compressible as real checkpoints are, for
  // measuring compression). Other dtypes always get random bytes. Deterministic either way.
  bool weight_values = false;
  // For kind "llm": the shape (default: the "llm-5g" shape). Ignored by other kinds.
  std::optional<LlmShape> llm;
  // Called with tensor bytes written so far and the total, about every 64 MiB and at the end.
  // May be called from a writer thread; calls are serialized.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Kinds: "sd15", "sd21", "tiny" (diffusers folders), "llm", "llm-5g", "llm-tiny" (sharded
// Llama-style checkpoints). Each with a one-line description.
struct GenKind {
  std::string name;
  std::string description;
};
std::vector<GenKind> GenKinds();

// The plan of a model, built without writing anything.
struct PlannedTensor {
  std::string name;
  Dtype dtype = Dtype::kF16;
  std::vector<uint64_t> shape;
  uint64_t elements() const;
  uint64_t bytes() const;
};
struct PlannedFile {
  std::string component;  // "unet", "vae", "text_encoder"; "" for an LLM
  std::string path;       // relative to out_dir, e.g. "unet/diffusion_pytorch_model.safetensors"
  std::vector<PlannedTensor> tensors;  // in state-dict order (the writer reorders on disk)
  uint64_t params() const;
  uint64_t bytes() const;
};
struct PlannedText {
  std::string
      path;  // relative to out_dir, e.g. "model_index.json", "scheduler/scheduler_config.json"
  std::string content;
};
struct GenPlan {
  std::string kind;
  std::vector<PlannedFile> files;
  std::vector<PlannedText> texts;  // configs, model_index.json, model.safetensors.index.json
  uint64_t params() const;
  uint64_t bytes() const;  // tensor data bytes
  uint64_t tensors() const;
};
Result<GenPlan> PlanModel(const GenOptions& options);

struct GenComponent {
  std::string name;  // component, or "model" for an LLM
  uint32_t files = 0;
  uint64_t tensors = 0;
  uint64_t params = 0;
  uint64_t bytes = 0;
};
struct GenSummary {
  std::string kind;
  std::string out_dir;
  uint32_t files = 0;  // .safetensors files
  uint64_t tensors = 0;
  uint64_t params = 0;
  uint64_t bytes = 0;       // tensor data bytes
  uint64_t disk_bytes = 0;  // sizes of the .safetensors files (headers included)
  double seconds = 0;
  std::vector<GenComponent> components;  // in plan order
  double MbPerSecond() const { return seconds > 0 ? disk_bytes / seconds / 1e6 : 0; }
};
// Per-component totals of a plan (what GenerateModel reports, minus the timing).
GenSummary SummarizePlan(const GenPlan& plan);

// Writes the model. kFailedPrecondition when out_dir is not empty and !force; I/O errors name the
// file. On error, files already completed stay (each is whole); nothing is half-written.
Result<GenSummary> GenerateModel(const GenOptions& options);

// The generator, exposed for tests: fills `dst` with the bytes at [offset, offset + dst.size()) of
// the stream keyed by `key`. Float dtypes get a mask that keeps values finite.
void FillSynthetic(std::span<std::byte> dst, uint64_t offset, uint64_t key, Dtype dtype);
// Trained-weight-like values (GenOptions::weight_values) for an F32, F16 or BF16 tensor: about
// N(0, 0.02) by element index, so bytes [offset, offset + dst.size()) of the tensor are the same
// however the tensor is split.
void FillWeights(std::span<std::byte> dst, uint64_t offset, uint64_t key, Dtype dtype);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_GEN_H_
