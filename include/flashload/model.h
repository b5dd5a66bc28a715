// Model layouts: which safetensors files make up a model, resolved before any tensor byte is read.
//
// Supported layouts:
// - a single `.safetensors` file;
// - a sharded checkpoint: `model.safetensors.index.json` (or any `*.safetensors.index.json`) whose
//   `weight_map` names, for each tensor, the shard that holds it; the shards' headers must hold
//   exactly the tensors the map assigns them (missing, extra or duplicate tensors are errors);
// - a folder holding one `*.safetensors` file or one index;
// - a diffusers folder: `model_index.json` plus one subfolder per component (unet, vae,
// text_encoder,
//   ...), each resolved as a folder above. Components without weights (scheduler, tokenizer) are
//   skipped.
//
// Thread-safety: pure functions over the file system; results are values.
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
  std::vector<ModelFile> files;  // in load order
  // For sharded checkpoints: tensor name → shard path (absolute as in `files`), per component.
  std::map<std::string, std::map<std::string, std::string>> weight_maps;
};

// Where a model's files live: the local file system, or a remote store (an S3 prefix). Paths are
// '/'-separated; a remote store's paths are URIs ("s3://bucket/model/unet").
// Thread-safety: every method may be called concurrently.
class ModelStore {
 public:
  enum class EntryKind { kMissing, kFile, kFolder };
  struct Entry {
    std::string name;  // within the folder listed, no '/'
    EntryKind kind = EntryKind::kMissing;
  };
  virtual ~ModelStore() = default;
  // kMissing for nothing there (not an error); errors for failures to find out and for something
  // there that is neither a file nor a folder (a FIFO, a device, a dangling symbolic link, a link
  // loop), naming it. Never opens the path (a FIFO cannot block it).
  virtual Result<EntryKind> Stat(const std::string& path) const = 0;
  // The files and folders directly inside `folder`, in no particular order; an entry that is
  // neither (a FIFO, a dangling link) comes with kind kMissing, so that Stat() can say what it is.
  virtual Result<std::vector<Entry>> List(const std::string& folder) const = 0;
  // The whole content of a small file (an index or model_index.json).
  virtual Result<std::string> ReadText(const std::string& path) const = 0;
  // The form in which a file path appears in ModelLayout::files (absolute and normal for local
  // files; unchanged for URIs).
  virtual std::string Canonical(const std::string& path) const = 0;
};

// The local file system.
const ModelStore& LocalModelStore();

// `name` (relative, '/'-separated) inside `folder`.
std::string JoinModelPath(const std::string& folder, const std::string& name);

struct ResolveOptions {
  // Diffusers variant ("fp16" picks diffusion_pytorch_model.fp16.safetensors); empty: the plain
  // file.
  std::string variant;
};

// Resolves what `path` names into its files. Errors name the path and what is missing.
Result<ModelLayout> ResolveModel(const std::string& path, const ResolveOptions& options = {});
// The same in any store.
Result<ModelLayout> ResolveModel(const ModelStore& store, const std::string& path,
                                 const ResolveOptions& options = {});

// Parses an index file's JSON: tensor name → shard file name (relative to the index's folder).
// Errors (kDataLoss) for bad JSON, a missing or non-object `weight_map`, non-string values.
Result<std::map<std::string, std::string>> ParseIndexJson(std::string_view json,
                                                          std::string_view file_name);

// Checks a sharded checkpoint's weight map against the shards' headers: every tensor of the map is
// in the shard it names, every tensor of a shard is in the map and assigned to that shard, and no
// tensor is in two shards. `shard_tensors` maps shard path → its tensor names. kDataLoss naming the
// index, shard and tensor at fault.
struct Header;
Status CheckWeightMap(const std::string& index_path,
                      const std::map<std::string, std::string>& weight_map_abs,
                      const std::map<std::string, std::vector<std::string>>& shard_tensors);

}  // namespace flashload

#endif  // FLASHLOAD_MODEL_H_
