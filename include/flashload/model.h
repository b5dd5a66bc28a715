// Model layouts: which safetensors files make up a model, resolved before any tensor byte is read.
//
// Supported layouts:
// - a single `.safetensors` file;
// - a sharded checkpoint: `model.safetensors.index.json` (or any `*.safetensors.index.json`) whose
//   `weight_map` names, for each tensor, the shard that holds it; the shards' headers must hold
//   exactly the tensors the map assigns them (missing, extra or duplicate tensors are errors);
// - a folder holding one `*.safetensors` file or one index;
// - a diffusers folder: `model_index.json` plus one subfolder per component (unet, vae,
//   text_encoder, ...), each resolved as a folder above. Components without weights (scheduler,
//   tokenizer) are skipped.
//
// This header holds the layout as data and the pure checks of index files; resolving a path or
// URI into a layout (listing folders, reading index files) is in flashload/model_store.h.
//
// Thread-safety: pure functions; results are values that borrow nothing from the arguments.
#ifndef FLASHLOAD_MODEL_H_
#define FLASHLOAD_MODEL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flashload/status.h"

namespace flashload {

struct ModelFile {
  std::string component;  // "" for a plain model; "unet", "vae"... in a diffusers folder
  std::string path;       // the .safetensors file
};

struct ModelLayout {
  enum class Kind { kSingleFile, kShardedIndex, kFolder, kDiffusers };
  Kind kind = Kind::kSingleFile;
  std::string root;              // what the user named
  std::vector<ModelFile> files;  // in load order; paths in the store's Canonical() form
  // For sharded checkpoints: tensor name → shard path (as in `files`), per component.
  std::map<std::string, std::map<std::string, std::string>> weight_maps;
};

struct ResolveOptions {
  // Diffusers variant ("fp16" picks diffusion_pytorch_model.fp16.safetensors); empty: plain file.
  std::string variant;
};

// Parses an index file's JSON: tensor name → shard file name (relative to the index's folder).
// Errors, kDataLoss naming `file_name`: bad JSON, not an object, a missing or non-object
// `weight_map`, a value that is not a string, a tensor listed twice, and a shard name that is
// empty, absolute or leaves the index's folder (a ".." segment, also once percent-decoded).
Result<std::map<std::string, std::string>> ParseIndexJson(std::string_view json,
                                                          std::string_view file_name);

// Checks a sharded checkpoint's weight map against the shards' headers: every tensor of the map is
// in the shard it names, every tensor of a shard is in the map and assigned to that shard, and no
// tensor is in two shards. `weight_map_abs` maps tensor → shard path, in the same form as the keys
// of `shard_tensors` (shard path → its tensor names). kDataLoss naming the index, shard and tensor
// at fault.
Status CheckWeightMap(const std::string& index_path,
                      const std::map<std::string, std::string>& weight_map_abs,
                      const std::map<std::string, std::vector<std::string>>& shard_tensors);

}  // namespace flashload

#endif  // FLASHLOAD_MODEL_H_
