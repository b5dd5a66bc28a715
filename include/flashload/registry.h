// Opening sources: the options of every backend, and OpenSource(), which routes a path or URI
// to the backend registered for its scheme (src/io/registry.cc).
//
// Thread-safety: OpenSource() and OpenLocalFile() may be called concurrently from any thread; the
// sources they return follow the Source contract (flashload/source.h).
#ifndef FLASHLOAD_REGISTRY_H_
#define FLASHLOAD_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload {

// How a local file is read.
enum class LocalBackend {
  kIoUring,     // io_uring (liburing); with O_DIRECT when `direct` is set
  kThreadPool,  // a pool of threads calling pread(), one descriptor per thread
  kMmap,        // memcpy from a read-only shared mapping
};

struct LocalOpenOptions {
  LocalBackend backend = LocalBackend::kIoUring;
  bool direct = false;   // O_DIRECT (io_uring and thread pool); fails if the file system refuses
  uint32_t threads = 0;  // thread pool size (0: 2 × cores, at least 4)
  uint32_t queue_depth = 0;  // io_uring ring entries / requests in flight (0: 32)
  bool fallback = true;      // kIoUring: fall back to kThreadPool when the kernel refuses io_uring
  // posix_fadvise(POSIX_FADV_SEQUENTIAL) on every descriptor: larger read-ahead, for network file
  // systems where each request costs a round trip.
  bool sequential_hint = false;
};

// How a remote object (http://, https://, s3://) is read. The defaults need no tuning; S3 fields
// left empty come from the environment and the AWS files (AWS_ENDPOINT_URL, AWS_REGION,
// AWS_PROFILE...).
struct RemoteOpenOptions {
  uint32_t connections = 0;  // ranged GETs in flight (0: 16)
  uint64_t chunk_bytes = 0;  // bytes per ranged GET (0: 8 MiB)
  std::string ca_bundle;     // PEM file of trusted certificate authorities (empty: the system's)
  bool verify_tls = true;
  // Extra request headers "Name: value"; never logged. A name or value holding CR, LF or NUL is
  // refused (kInvalidArgument) when the source opens. They are sent to the URL's own origin
  // (scheme, host and port) only: a redirect to another origin drops them, unless
  // header_on_redirect is set (curl's --location-trusted).
  std::vector<std::string> headers;
  bool header_on_redirect = false;
  std::string endpoint;          // S3 endpoint URL, e.g. http://127.0.0.1:9000
  std::string region;            // S3 region
  int path_style = -1;           // S3 addressing: 1 path-style, 0 virtual-hosted, -1 auto
  bool anonymous = false;        // S3: unsigned requests (public buckets)
  uint32_t max_attempts = 3;     // per range, first try included
  uint32_t retry_base_ms = 100;  // full-jitter exponential backoff: base and cap
  uint32_t retry_cap_ms = 20000;
};

struct OpenOptions {
  LocalOpenOptions local;
  RemoteOpenOptions remote;
};

// Opens a local file. `path` is a plain path (no scheme).
Result<std::unique_ptr<Source>> OpenLocalFile(const std::string& path,
                                              const LocalOpenOptions& options);

// Opens any supported URI through the registry: a path, file://, and the schemes registered by
// remote backends (http://, https://, s3://).
Result<std::unique_ptr<Source>> OpenSource(const std::string& uri, const OpenOptions& options);
// The same with default remote options.
Result<std::unique_ptr<Source>> OpenSource(const std::string& uri,
                                           const LocalOpenOptions& options = {});

// Opens one source of a load: given the URI and the options the load's strategy chose for it.
// LoadOptions::opener takes one, so a caller (or a test) can wrap every source a load reads
// (statistics, fault or latency injection, a cache) or serve its own storage; OpenSource is the
// default. Called from the loading thread, once per file (and once more for a file whose
// O_DIRECT open was refused).
using SourceOpener = std::function<Result<std::unique_ptr<Source>>(const std::string& uri,
                                                                  const OpenOptions& options)>;

}  // namespace flashload

#endif  // FLASHLOAD_REGISTRY_H_
