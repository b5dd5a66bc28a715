// The URI registry: OpenSource() routes a URI to the backend registered for its scheme.
//
// A URI "scheme://rest" goes to the factory registered for `scheme`; a URI "scheme:rest" (no
// slashes, as in "tar:") does too when `scheme` is registered, and is otherwise a plain path.
// "file://" and plain paths open a local file with OpenLocalFile(). An unknown "scheme://" is
// kInvalidArgument naming the known schemes.
//
// Thread-safety: registration and lookup may run concurrently from any thread.
#ifndef FLASHLOAD_IO_REGISTRY_H_
#define FLASHLOAD_IO_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flashload/model_store.h"
#include "flashload/registry.h"

namespace flashload {

// Opens `uri` (the whole URI, scheme included) with the options given to OpenSource().
using SourceFactory = std::function<Result<std::unique_ptr<Source>>(const std::string& uri,
                                                                    const OpenOptions& options)>;
// Opens the store that resolves model layouts under `uri` (listing folders, reading index files).
using ModelStoreFactory = std::function<Result<std::unique_ptr<ModelStore>>(
    const std::string& uri, const OpenOptions& options)>;

// Registers (or replaces) the factory for `scheme` (lower case, without "://"). Built in: "file".
void RegisterSourceScheme(const std::string& scheme, SourceFactory factory);
// Registers (or replaces) the model-store factory for `scheme`.
void RegisterModelStoreScheme(const std::string& scheme, ModelStoreFactory factory);

// The lower-case scheme of a "scheme://..." URI other than file://, or "" for a local path.
std::string RemoteScheme(const std::string& uri);

// The store for a remote `uri` (kInvalidArgument when its scheme has none), or nullptr for a local
// path or file:// URI (use LocalModelStore()).
Result<std::unique_ptr<ModelStore>> OpenModelStore(const std::string& uri,
                                                   const OpenOptions& options);

// The registered schemes, sorted.
std::vector<std::string> RegisteredSourceSchemes();

// The path of a "file://" URI ("file:///a/b" and "file://localhost/a/b" → "/a/b"), or
// kInvalidArgument.
Result<std::string> FileUriPath(const std::string& uri);

}  // namespace flashload

#endif  // FLASHLOAD_IO_REGISTRY_H_
