// ModelStore: where a model's files live, and the resolution of a path into its ModelLayout
// (flashload/model.h) by listing folders and reading index files through a store.
//
// Stores: the local file system (LocalModelStore()), and the remote stores the source registry
// opens for a scheme (an S3 prefix, an HTTP(S) base URL; see flashload/registry.h).
//
// Thread-safety: every ModelStore method may be called concurrently; ResolveModel() is reentrant.
// Lifetime: ResolveModel() uses the store only during the call; the layout it returns holds copies.
// Errors name the path and what is missing or malformed.
#ifndef FLASHLOAD_MODEL_STORE_H_
#define FLASHLOAD_MODEL_STORE_H_

#include <string>
#include <vector>

#include "flashload/model.h"
#include "flashload/status.h"

namespace flashload {

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
  // The whole content of a small file (an index or model_index.json). The local store opens it
  // non-blocking and refuses anything but a regular file (kInvalidArgument), so a FIFO cannot
  // block it.
  virtual Result<std::string> ReadText(const std::string& path) const = 0;
  // The form in which a file path appears in ModelLayout::files (absolute and normal for local
  // files; unchanged for URIs).
  virtual std::string Canonical(const std::string& path) const = 0;
};

// The local file system: stateless, alive for the whole process. Stat() errors: kInvalidArgument
// for a FIFO, socket or device and for a symbolic link loop, kNotFound for a dangling link,
// ErrnoToStatus() for the rest.
const ModelStore& LocalModelStore();

// `name` (relative, '/'-separated) inside `folder`.
std::string JoinModelPath(const std::string& folder, const std::string& name);

// Resolves what `path` names into its files: a `.json` file is an index, any other file a single
// weights file, a folder with model_index.json a diffusers model, any other folder a plain or
// sharded model. Errors name the path: kNotFound when nothing is there or weights, shards or
// component folders are missing (or a folder has several weights files and no index);
// kInvalidArgument for a folder with several indexes none of which has the conventional name;
// kUnavailable when a folder changed while it was being read (retry); kDataLoss for a malformed
// index or model_index.json; and the store's own errors.
Result<ModelLayout> ResolveModel(const std::string& path, const ResolveOptions& options = {});
// The same in any store.
Result<ModelLayout> ResolveModel(const ModelStore& store, const std::string& path,
                                 const ResolveOptions& options = {});

}  // namespace flashload

#endif  // FLASHLOAD_MODEL_STORE_H_
