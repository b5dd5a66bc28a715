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

#include "flashload/source.h"

namespace flashload {

// Opens `uri` (the whole URI, scheme included) with the local options given to OpenSource().
using SourceFactory = std::function<Result<std::unique_ptr<Source>>(
    const std::string& uri, const LocalOpenOptions& options)>;

// Registers (or replaces) the factory for `scheme` (lower case, without "://"). Built in: "file".
void RegisterSourceScheme(const std::string& scheme, SourceFactory factory);

// The registered schemes, sorted.
std::vector<std::string> RegisteredSourceSchemes();

// The path of a "file://" URI ("file:///a/b" and "file://localhost/a/b" → "/a/b"), or
// kInvalidArgument.
Result<std::string> FileUriPath(const std::string& uri);

}  // namespace flashload

#endif  // FLASHLOAD_IO_REGISTRY_H_
