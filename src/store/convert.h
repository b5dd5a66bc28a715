// `flashload convert`: PyTorch checkpoints (torch.save files, zip or legacy format) to
// safetensors, without running any code from them.
//
// A checkpoint is read by the restricted unpickler (format/pickle.h), which builds an inert tree and
// refuses every global but the few torch.save writes for tensors; its tensors are described by
// format/torch_checkpoint.h and their bytes are read from the file (mapped read-only), never
// through Python. Each tensor is checked to lie inside its storage, and each storage inside the
// file, with overflow-checked arithmetic; non-contiguous views are copied out in row-major order;
// tensors sharing a storage are each written under their own name (safetensors cannot alias) and
// reported.
//
// Inputs and outputs:
// - a file -> a file: `out` is the safetensors file to write.
// - a folder (a transformers or diffusers model saved with .bin files) -> a folder of the same
//   layout: each weight file becomes a .safetensors file (pytorch_model.bin -> model.safetensors,
//   pytorch_model-00001-of-00002.bin -> model-00001-of-00002.safetensors,
//   diffusion_pytorch_model.bin -> diffusion_pytorch_model.safetensors, other X.bin/.pt/.pth/.ckpt
//   -> X.safetensors), each `*.bin.index.json` becomes the matching `*.safetensors.index.json` with
//   its weight map rewritten, training-state pickles (training_args.bin, optimizer.pt,
//   scheduler.pt, scaler.pt, rng_state*.pth) are left out, and every other file is copied.
//
// Atomicity: a file is written to a temporary file in its folder, flushed and renamed; a folder is
// built in a temporary folder beside `out` and renamed at the end. On any error nothing is left:
// no output, no temporary file or folder. An existing `out` is refused unless `force`; with
// `force` it is replaced only once the new output is complete.
//
// Thread-safety: Convert() is reentrant; `progress` is called on the calling thread.
#ifndef FLASHLOAD_STORE_CONVERT_H_
#define FLASHLOAD_STORE_CONVERT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/status.h"
#include "format/pickle.h"

namespace flashload::store {

struct ConvertOptions {
  // kF16 or kBF16: F32, F64, F16 and BF16 tensors are converted to it (F64 through F32, as torch's
  // .to() rounds); every other dtype is kept. nullopt: every tensor keeps its dtype.
  std::optional<Dtype> dtype;
  // The data section of each output file starts at a multiple of this (a power of two >= 8);
  // tensors inside it follow each other without padding (see docs/convert.md).
  uint64_t alignment = 8;
  bool force = false;  // replace an existing `out`
  // Called with bytes of tensor data written so far and in all, on the calling thread.
  std::function<void(uint64_t done, uint64_t total)> progress;
  uint64_t max_pickle_bytes = uint64_t{1} << 30;  // the largest data.pkl read into memory
  PickleLimits pickle_limits;
};

// Tensors of one checkpoint that share a storage.
struct SharedStorage {
  std::string storage_key;
  std::vector<std::string> tensors;  // in pickle order
  bool identical = false;    // every view is the same (tied weights): same bytes under each name
  bool overlapping = false;  // some views differ but touch the same bytes
};

struct ConvertedFile {
  std::string input;
  std::string output;
  std::string format;         // "zip" or "legacy"
  std::string unwrapped_key;  // "state_dict", "model", "module" or empty
  uint64_t tensors = 0;
  uint64_t bytes = 0;                      // tensor bytes written
  uint64_t converted_tensors = 0;          // tensors whose dtype --dtype changed
  uint64_t skipped_entries = 0;            // non-tensor entries left out
  std::vector<std::string> skipped_names;  // the first few
  std::vector<SharedStorage> shared;
};

struct ConvertReport {
  std::vector<ConvertedFile> files;
  std::vector<std::string> copied;    // other files copied (folder input), relative
  std::vector<std::string> left_out;  // training-state pickles not copied, relative
  std::vector<std::string> indexes;   // index files rewritten, relative to `out`
  uint64_t tensors = 0;
  uint64_t bytes = 0;
  uint64_t shared_storages = 0;
  uint64_t skipped_entries = 0;
};

// Converts `in` (a checkpoint file or a model folder) into `out`, as described above. Errors,
// with nothing written: kFailedPrecondition when `out` exists and !force, or `out` is `in`;
// kNotFound for a missing input; kFailedPrecondition naming the global and byte offset for a
// pickle that names anything not on the allow-list; kDataLoss naming the file, tensor, storage and
// byte offset for a malformed checkpoint, a persistent id naming a storage the file lacks, or a
// view or storage that does not fit; kUnimplemented for compressed zip entries and complex128;
// kResourceExhausted for a pickle over the limits; the errors of WriteSafetensors and of the file
// system (ErrnoToStatus) otherwise.
Result<ConvertReport> Convert(const std::string& in, const std::string& out,
                              const ConvertOptions& options = {});

// The safetensors file name for a checkpoint's file name (no folder), as described above; the
// index name for "*.bin.index.json".
std::string SafetensorsNameFor(const std::string& checkpoint_name);

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_CONVERT_H_
