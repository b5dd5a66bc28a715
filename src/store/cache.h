// Pushing models to object storage and pulling them into the local cache, checked end to end with
// SHA-256 manifests.
//
// The manifest. Push writes, beside what it uploaded, `<X>.manifest.json` where X is the object (a
// packed archive) or the folder prefix (without its '/'):
//   {"format": 1, "created_by": "flashload",
//    "files": [{"name": "models--org--name--fp16.tar.zst", "size": 123, "sha256": "<64 hex>"}]}
// For an object, "files" holds that object, named by its last key component; for a folder, every
// file under it, named by its path relative to the folder ('/'-separated). The manifest is uploaded
// last, so a manifest on the server means everything it lists was stored. Readers refuse another
// "format", a name that is empty, absolute, holds "." or ".." components or starts with
// ".flashload" (except the compile cache's files, under ".flashload/compile-cache/", which travel
// with the model: docs/compile-cache.md), a size that is not an unsigned integer, a sha256 that is not 64 hex digits, and a
// name listed twice (kDataLoss naming the manifest and the entry).
//
// The cache (FLASHLOAD_CACHE, default ~/.cache/flashload; CacheDirFromEnv(), store/model_ref.h):
//   <cache>/<entry>/                    a complete, verified entry: the files as the manifest names
//                                       them, plus .flashload-manifest.json (the manifest checked,
//                                       with "source" and "verified")
//   <cache>/<entry>.lock                flock'ed by the pull that owns the entry
//   <cache>/.partial/<entry>.<pid>.<n>/ a pull in progress; never read
// The entry name is the URL's last component (characters outside [A-Za-z0-9._-] as '_') plus '-'
// and the first 12 hex digits of the SHA-256 of the URL, so two stores' models never share one. A
// short reference ORG/NAME@PRECISION is the URL ArchiveUrl(ref, FLASHLOAD_STORE) names, and shares
// the entry of that URL.
//
// Pull: takes the entry's lock (flock, waiting for another process or thread that holds it; the
// wait polls every 20 ms, so options.transfer.cancel ends it with kCancelled), and if the entry
// exists returns it without a download (with `verify`: after re-hashing every file against its
// manifest). Otherwise it removes what earlier pulls of this entry left in .partial (an
// interrupted process), downloads the manifest, then every file into a fresh partial folder,
// checks each file's size and SHA-256 against the manifest, writes .flashload-manifest.json,
// fsyncs every file and folder, and renames the folder to <entry> (one atomic rename makes it
// visible), then fsyncs the cache folder. A process killed at any point leaves at most a partial
// folder, which no pull reads. An object without a manifest on the server is accepted, its SHA-256
// computed and recorded with "verified": false, and the result says "unverified: no manifest on
// the server"; a folder without one is refused (its file list comes from the manifest). An
// http(s):// URL with a query string (a presigned URL) is named by its path (its entry is the same
// whatever the signature), no manifest is looked up for it, and it is pulled unverified the same
// way; a folder URL with a query is refused.
//
// Errors: kDataLoss for a size or checksum that differs from the manifest (naming the file, the
// URL, both values; nothing is kept), or an entry whose files no longer match on --verify (the
// entry is removed, so the next pull downloads it again); the transfer's errors otherwise. Every
// failure removes the partial folder it made.
//
// Thread-safety: every function may be called concurrently, from threads or processes; pulls of
// one entry are serialized by its lock.
#ifndef FLASHLOAD_STORE_CACHE_H_
#define FLASHLOAD_STORE_CACHE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"
#include "store/transfer.h"

namespace flashload::store {

inline constexpr int kManifestFormat = 1;
inline constexpr std::string_view kManifestSuffix = ".manifest.json";
inline constexpr std::string_view kEntryManifestName = ".flashload-manifest.json";

struct ManifestFile {
  std::string name;  // relative, '/'-separated
  uint64_t size = 0;
  std::string sha256;  // lower-case hex
};

struct Manifest {
  std::vector<ManifestFile> files;
  std::string source;    // where the files came from (entries only; "" on the server)
  bool verified = true;  // false: no manifest on the server, checksums computed on arrival
};

// The JSON text of `manifest` (format 1), one file per line.
std::string ManifestJson(const Manifest& manifest);
// Parses and checks a manifest; `what` names it in errors. See the top of this file.
Result<Manifest> ParseManifest(std::string_view json, std::string_view what);

// The cache entry name of `url` (see the top of this file).
std::string CacheEntryName(std::string_view url);

// What a pull or push moves: a URL, or a short reference resolved against FLASHLOAD_STORE.
// kInvalidArgument for something that is neither an s3://, http(s):// URL nor a valid reference;
// FLASHLOAD_STORE's kFailedPrecondition when a reference needs it and it is not set.
Result<std::string> ResolvePullUrl(std::string_view url_or_ref);

struct PullOptions {
  std::string cache_dir;  // empty: CacheDirFromEnv()
  bool verify = false;    // re-hash an existing entry before returning it
  TransferOptions transfer;
};

struct PullResult {
  std::string url;          // what was pulled (redacted for display by the caller)
  std::string entry_dir;    // <cache>/<entry>
  std::string path;         // the file (an object pull) or entry_dir (a folder pull)
  bool downloaded = false;  // false: the entry was there already
  bool verified = false;    // checked against the server's manifest
  bool rehashed = false;    // --verify re-hashed the existing entry
  std::string note;         // "unverified: no manifest on the server" when it applies
  uint64_t bytes = 0;       // bytes downloaded (or re-hashed)
  double seconds = 0;
  Manifest manifest;  // as recorded in the entry
};

// Pulls `url_or_ref` into the cache (see the top of this file).
Result<PullResult> Pull(std::string_view url_or_ref, const PullOptions& options);

struct PushResult {
  std::string url;           // the object, or the folder prefix ending in '/'
  std::string manifest_url;  // <object or prefix>.manifest.json
  Manifest manifest;
  uint64_t bytes = 0;
  double seconds = 0;
  uint32_t parts = 0;  // multipart parts, over every file
};

// Uploads the local file or folder `local` to `dst` ("s3://bucket/prefix/" takes the local name
// under the prefix; "s3://bucket/prefix/name" names it), then its manifest. A folder uploads every
// regular file under it (symbolic links are refused, naming them). kInvalidArgument for a
// destination that is not s3://, kNotFound for a missing `local`, the transfer's errors otherwise
// (the manifest is then not written).
Result<PushResult> Push(const std::string& local, const std::string& dst,
                        const TransferOptions& options);

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_CACHE_H_
