// Opening sources: the options of every backend, and the SourceRegistry, the one way in for every
// source of a load: it routes a path or URI to the backend registered for its scheme and applies
// the policy of that scheme the same way for every backend (src/io/registry.cc).
//
// Routing: a URI "scheme://rest" goes to the factory registered for `scheme` (compared without
// case); a URI "scheme:rest" (no slashes, as in "tar:") does too when `scheme` is registered, and
// is otherwise a plain path. "file://" and plain paths open a local file with OpenLocalFile(). An
// unknown "scheme://" is kInvalidArgument naming the known schemes.
//
// Archive members: the default registry routes "tar:<archive>!/<member path>" to the member
// source of an archive (src/io/archive_source.h, docs/archives-load.md), e.g.
// "tar:s3://bucket/models--org--name--fp16.tar.zst!/unet/diffusion_pytorch_model.safetensors".
// <archive> is an absolute local path or any URI this registry opens (http(s)://, s3://); it ends
// at the first "!/", and "tar:<archive>!/" is the archive's root folder. The archive itself is
// opened through the registry (with its scheme's policy: retries for remote archives) once per
// process while any of its members is open, and shared by them.
//
// Policy: a scheme registered with SchemePolicy::remote (http, https, s3) is retried per
// RemoteOpenOptions: the open itself while it fails with a retryable status, then every read,
// through a RetrySource (full-jitter backoff; ranges resume after their intact bytes). Backends
// never retry on their own. A caller that wants more (statistics, fault or latency injection, a
// cache) wraps the sources it gets: LoadOptions::opener (SourceOpener below) sees every source of a
// load.
//
// Thread-safety: every function and every SourceRegistry method may be called concurrently from
// any thread; factories run outside the registry's lock. The sources returned follow the Source
// contract (flashload/source.h) and are owned by the caller; they do not refer to the registry.
#ifndef FLASHLOAD_REGISTRY_H_
#define FLASHLOAD_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/model_store.h"
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
  uint32_t queue_depth = 0;  // io_uring ring entries / requests in flight (0: kUringQueueDepth)
  bool fallback = true;      // kIoUring: fall back to kThreadPool when the kernel refuses io_uring
  // posix_fadvise(POSIX_FADV_SEQUENTIAL) on every descriptor: larger read-ahead, for network file
  // systems where each request costs a round trip.
  bool sequential_hint = false;
};

// How a remote object (http://, https://, s3://) is read. The defaults need no tuning; S3 fields
// left empty come from the environment and the AWS files (AWS_ENDPOINT_URL, AWS_REGION,
// AWS_PROFILE...).
struct RemoteOpenOptions {
  uint32_t connections = 0;  // ranged GETs in flight (0: defaults::kRemoteConnections)
  // Bytes per ranged GET (0: defaults::kRemoteChunkBytes, or more when the HTTP backend measures
  // a slow first byte on a fast link during the open).
  uint64_t chunk_bytes = 0;
  std::string ca_bundle;  // PEM file of trusted certificate authorities (empty: the system's)
  bool verify_tls = true;
  // Extra request headers "Name: value"; never logged. A name or value holding CR, LF or NUL is
  // refused (kInvalidArgument) when the source opens. They are sent to the URL's own origin
  // (scheme, host and port) only: a redirect to another origin drops them, unless
  // header_on_redirect is set (curl's --location-trusted).
  std::vector<std::string> headers;
  bool header_on_redirect = false;
  std::string endpoint;    // S3 endpoint URL, e.g. http://127.0.0.1:9000
  std::string region;      // S3 region
  int path_style = -1;     // S3 addressing: 1 path-style, 0 virtual-hosted, -1 auto
  bool anonymous = false;  // S3: unsigned requests (public buckets)
  // Attempts per open and per range, the first included; full-jitter exponential backoff.
  uint32_t max_attempts = defaults::kRemoteMaxAttempts;
  uint32_t retry_base_ms = defaults::kRetryBaseMs;
  uint32_t retry_cap_ms = defaults::kRetryCapMs;
};

struct OpenOptions {
  LocalOpenOptions local;
  RemoteOpenOptions remote;
};

// Opens a local file. `path` is a plain path (no scheme).
Result<std::unique_ptr<Source>> OpenLocalFile(const std::string& path,
                                              const LocalOpenOptions& options);

// Opens the source of one URI: given the whole URI (scheme included) and the options of the open.
using SourceFactory = std::function<Result<std::unique_ptr<Source>>(const std::string& uri,
                                                                    const OpenOptions& options)>;
// Opens the store that resolves model layouts under a URI (listing folders, reading index files).
using ModelStoreFactory = std::function<Result<std::unique_ptr<ModelStore>>(
    const std::string& uri, const OpenOptions& options)>;

// What the registry does around the factory of a scheme.
struct SchemePolicy {
  // Remote storage: the open, every read (RetrySource) and every store call are retried per
  // RemoteOpenOptions::max_attempts, retry_base_ms and retry_cap_ms.
  bool remote = false;
};

// Routes URIs to the backend of their scheme, with that scheme's policy. See the top of this file.
class SourceRegistry {
 public:
  SourceRegistry();
  ~SourceRegistry();
  SourceRegistry(const SourceRegistry&) = delete;
  SourceRegistry& operator=(const SourceRegistry&) = delete;

  // Registers (or replaces) the source factory of `scheme` (without "://"; case ignored).
  void Register(const std::string& scheme, SourceFactory factory, SchemePolicy policy = {});
  // Registers (or replaces) the model-store factory of `scheme`; the scheme's policy applies to the
  // store's calls too.
  void RegisterModelStore(const std::string& scheme, ModelStoreFactory factory);

  // Opens `uri` (see Routing above), with the policy of its scheme applied. kInvalidArgument for
  // an empty URI or an unknown "scheme://"; otherwise the errors of the backend (after the last
  // attempt, for a remote scheme: "(gave up after N attempts)").
  Result<std::unique_ptr<Source>> Open(const std::string& uri, const OpenOptions& options) const;
  // The store for a "scheme://" `uri` of a scheme with a store, or nullptr for a local path or
  // file:// URI (use LocalModelStore()); kInvalidArgument for a scheme without one.
  Result<std::unique_ptr<ModelStore>> OpenModelStore(const std::string& uri,
                                                     const OpenOptions& options) const;
  // The registered source schemes, lower case, sorted.
  std::vector<std::string> Schemes() const;

 private:
  struct Scheme {
    SourceFactory open;
    SchemePolicy policy;
  };
  mutable std::mutex mu_;
  std::map<std::string, Scheme> schemes_;            // guarded by mu_
  std::map<std::string, ModelStoreFactory> stores_;  // guarded by mu_
};

// Registers the schemes flashload builds in: "file" (OpenLocalFile()), the remote "http", "https"
// and "s3" (sources and model stores), and "tar" (archive members; the archive itself is opened
// through DefaultSourceRegistry()).
void RegisterBuiltinSchemes(SourceRegistry& registry);

// The process-wide registry, created on first use with the built-in schemes (not by a static
// initializer, which a static library may drop at link time). Never destroyed.
SourceRegistry& DefaultSourceRegistry();

// DefaultSourceRegistry().Open(): any supported URI, a path, file://, http(s)://, s3://.
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
