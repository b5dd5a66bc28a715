// URI helpers of the registry (flashload/registry.h holds the SourceRegistry itself), and thin
// calls to the default registry for the code that needs a model store.
//
// Thread-safety: every function may be called concurrently from any thread.
#ifndef FLASHLOAD_IO_REGISTRY_H_
#define FLASHLOAD_IO_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "flashload/model_store.h"
#include "flashload/registry.h"

namespace flashload {

// The lower-case scheme of a "scheme://..." URI other than file://, or "" for a local path.
std::string RemoteScheme(const std::string& uri);

// DefaultSourceRegistry().OpenModelStore().
Result<std::unique_ptr<ModelStore>> OpenModelStore(const std::string& uri,
                                                   const OpenOptions& options);

// DefaultSourceRegistry().Schemes().
std::vector<std::string> RegisteredSourceSchemes();

// The path of a "file://" URI ("file:///a/b" and "file://localhost/a/b" → "/a/b"), or
// kInvalidArgument.
Result<std::string> FileUriPath(const std::string& uri);

}  // namespace flashload

#endif  // FLASHLOAD_IO_REGISTRY_H_
