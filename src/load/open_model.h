// OpenModel: the first step of every load, for loaders built on top of Load()'s pieces (the
// tensor-parallel loader reads byte ranges of a model's files, not tensors).
//
// Resolves `path` (file, folder, index, diffusers folder, URI, archive), opens every file with the
// strategy Load() would choose for it (ranged requests for remote objects; direct, buffered or
// network reads for local files, buffered when O_DIRECT is refused), reads and checks every header
// through those sources, and checks the index files' weight maps against the headers.
//
// Errors: as Load() before its first data byte (kNotFound, kDataLoss naming file and offset...).
// Thread-safety: independent calls may run concurrently; the sources are thread-safe.
#ifndef FLASHLOAD_LOAD_OPEN_MODEL_H_
#define FLASHLOAD_LOAD_OPEN_MODEL_H_

#include <string>
#include <vector>

#include "engine/strategy.h"
#include "flashload/loader.h"

namespace flashload::load_internal {

struct OpenedModel {
  LoadedModel model;                    // layout and headers (no tensors)
  std::vector<engine::FileRead> files;  // files[i] reads model.layout.files[i]
};

Result<OpenedModel> OpenModel(const std::string& path, const LoadOptions& options);

}  // namespace flashload::load_internal

#endif  // FLASHLOAD_LOAD_OPEN_MODEL_H_
