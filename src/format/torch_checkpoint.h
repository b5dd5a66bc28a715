// What a PyTorch checkpoint holds, read from the inert tree of its pickle (format/pickle.h): the
// tensors of its state dict, each as a view (dtype, shape, strides, offset) of a named storage.
//
// Two file formats carry the same pickle:
// - the zip format (torch >= 1.6): `<archive>/data.pkl` plus one stored entry
//   `<archive>/data/<key>` per storage;
// - the legacy format (`_use_new_zipfile_serialization=False`): five pickles in a row (a magic
//   number, the protocol version 1001, sys_info, the main pickle, the list of storage keys), then
//   each storage in the order of that list as an 8-byte little-endian element count and its bytes.
// Reading the storages' bytes is the caller's (store/convert.h); this file only describes them.
//
// Names: nested dict keys joined with '.', list and tuple items by their index. When the top-level
// dict holds no tensor itself but one of "state_dict", "model", "module" (checked in that order)
// is a dict holding tensors (a Lightning or training-loop checkpoint), only that dict is read and
// `unwrapped_key` says which. Leaves that are not tensors (numbers, strings, None, hyper-
// parameters) are skipped and counted.
//
// Thread-safety: pure functions; results are values.
#ifndef FLASHLOAD_FORMAT_TORCH_CHECKPOINT_H_
#define FLASHLOAD_FORMAT_TORCH_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/status.h"
#include "format/pickle.h"

namespace flashload {

// One tensor of a checkpoint: a strided view into the bytes of storage `storage_key`.
struct TorchTensor {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<uint64_t> shape;
  std::vector<uint64_t> strides;  // in elements
  uint64_t storage_offset = 0;    // in elements, from the start of the storage view below
  std::string storage_key;
  // The part of the storage the tensor may use, in bytes: [view_begin, view_begin + view_bytes).
  // view_begin is 0 except for a legacy storage view; view_bytes is the size the persistent id
  // declares (elements x element size of the storage type).
  uint64_t view_begin = 0;
  uint64_t view_bytes = 0;
  uint64_t storage_element_bytes = 1;  // of the storage type (1 for UntypedStorage)
  uint64_t offset = 0;                 // byte offset of the tensor in the pickle, for messages

  uint64_t element_count() const;  // product of shape (callers check overflow, see ViewExtent)
};

struct TorchCheckpoint {
  std::vector<TorchTensor> tensors;        // in pickle order
  std::string unwrapped_key;               // "state_dict", "model", "module", or empty
  uint64_t skipped_entries = 0;            // non-tensor leaves (and top-level entries left out)
  std::vector<std::string> skipped_names;  // the first kMaxSkippedNames of them
};

inline constexpr size_t kMaxSkippedNames = 32;

struct TorchReadLimits {
  int max_depth = 64;  // nesting of dicts, lists and tuples
};

// The tensors of the main pickle of a checkpoint (`name` in messages). Errors, each naming the
// file, the tensor and the byte offset: kDataLoss when the top level is not a dict, for a tensor
// whose arguments or persistent id are not what torch writes, for a negative size or stride, for
// two tensors with the same name; kUnimplemented for complex128 (no safetensors dtype);
// kResourceExhausted for nesting deeper than limits.max_depth or a tree that shares values so
// much that walking it would never end.
Result<TorchCheckpoint> ReadTorchCheckpoint(const PickleTree& tree, std::string_view name,
                                            const TorchReadLimits& limits = {});

// The bytes [first, last) of its storage view that a tensor touches, with every product and sum
// overflow-checked; {0, 0} for a tensor with no element. Errors: kDataLoss naming the tensor on
// overflow.
struct ViewExtent {
  uint64_t first = 0;
  uint64_t last = 0;
};
Result<ViewExtent> TensorExtent(const TorchTensor& t, std::string_view file_name);

// Whether the tensor is stored densely in row-major order (a plain copy of its bytes).
bool IsContiguous(const TorchTensor& t);

// ---- Legacy format ------------------------------------------------------------------------------

// The magic number that starts a legacy file (0x1950a86a20f9469cfc6c as a pickled int).
bool LooksLikeLegacyTorch(std::span<const std::byte> file);

struct LegacyLayout {
  PickleTree main;                        // the main pickle
  uint64_t main_offset = 0;               // where it starts in the file
  std::vector<std::string> storage_keys;  // the trailing list, in file order
  uint64_t storages_offset = 0;           // where the first storage record starts
};

// Reads the five pickles of a legacy file (`name` in messages). Errors: kDataLoss naming the
// pickle and offset for a wrong magic number or protocol version or a malformed key list; the
// errors of ParsePickle for each pickle.
Result<LegacyLayout> ReadLegacyPickles(std::span<const std::byte> file, std::string_view name,
                                       const PickleLimits& limits = {});

}  // namespace flashload

#endif  // FLASHLOAD_FORMAT_TORCH_CHECKPOINT_H_
