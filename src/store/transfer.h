// Copying one object between local files, http(s):// (read only) and s3://, at line rate, with its
// SHA-256 computed on the way.
//
// Reading: the source is opened through the source registry (OpenSource(), flashload/registry.h):
// any scheme it knows can be a source (local, http(s)://, s3://, archives), and remote reads get
// the registry's retries (ranges resume after their intact bytes). Up to
// `parallel` workers each read one chunk of `chunk_bytes` (an S3 destination: one part of
// `part_bytes`) at a time with one large ranged read;
// chunks are handed out in order, so the object is read front to back with `parallel` ranges in
// flight.
//
// Hashing: the SHA-256 (OpenSSL EVP) of the whole object is computed while copying. A chunk is
// hashed once every chunk before it has been: a worker whose chunk is ahead waits its turn
// (hashing runs at several GB/s, well above a network link), so the hash costs no second read.
//
// Writing:
// - a local path: into a temporary file in the destination's folder
//   ("<name>.flashload-tmp-<pid>-<n>"), written with pwrite at each chunk's offset (with O_DIRECT
//   when `direct` is set), fsync'ed, then
//   renamed over the destination and the folder fsync'ed. On any error or cancellation the
//   temporary file is removed: the destination is either the old file or the whole new one.
// - s3://: through S3Uploader (io/s3_upload.h): one PUT up to one part, else a multipart upload
//   with `parallel` parts of `part_bytes` in flight, aborted on any error.
// - http(s)://: refused (kInvalidArgument): HTTP is read only.
//
// Errors name the source or the destination, and the byte offset; a source that ends early is
// kDataLoss. Cancellation (options.cancel) ends the copy with kCancelled and nothing written.
//
// Thread-safety: the functions may be called concurrently; `progress` is called from the worker
// threads, one call at a time.
#ifndef FLASHLOAD_STORE_TRANSFER_H_
#define FLASHLOAD_STORE_TRANSFER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "flashload/defaults.h"
#include "flashload/registry.h"
#include "flashload/status.h"

namespace flashload::store {

// Where an object lives, by the form of its name.
enum class Location {
  kLocal,  // a path or file://
  kHttp,   // http:// or https://
  kS3,     // s3://
};
// kInvalidArgument for another scheme ("gs://"), naming it and the schemes supported.
Result<Location> LocationOf(std::string_view uri);

struct TransferOptions {
  OpenOptions open;       // how sources open (remote: endpoint, region, TLS, retries)
  uint32_t parallel = 8;  // reads (or S3 parts) in flight; at least 1
  // Bytes per read of the source when the destination is local (one ranged GET each for a remote
  // source). Memory: parallel × chunk_bytes.
  uint64_t chunk_bytes = defaults::kRemoteChunkBytes;
  // Bytes per S3 part when the destination is s3:// (each part is read from the source in one
  // read); at least 5 MiB, raised to fit the object in 10,000 parts. Memory: parallel × part_bytes.
  uint64_t part_bytes = uint64_t{64} << 20;
  // Write a local destination with O_DIRECT (the page cache is left alone: a 20 GB model does not
  // evict what else is cached). Buffers and chunks are then 4096-byte aligned, the last write
  // padded and the file cut to size. kFailedPrecondition where the file system refuses O_DIRECT.
  bool direct = false;
  // Called with (bytes done, total) as chunks complete.
  std::function<void(uint64_t done, uint64_t total)> progress;
  const std::atomic<bool>* cancel = nullptr;  // set by another thread to stop
};

struct TransferResult {
  uint64_t bytes = 0;
  std::string sha256;     // lower-case hex of the whole object
  double seconds = 0;     // wall time of the copy, open included
  uint32_t parts = 0;     // S3 multipart parts (0: not a multipart upload)
  uint64_t requests = 0;  // S3 write requests, retries included (0 for other destinations)
};

// Copies `src` to `dst` (see the top of this file).
Result<TransferResult> CopyObject(const std::string& src, const std::string& dst,
                                  const TransferOptions& options);

// Reads `src` whole and returns its size and SHA-256 (nothing is written).
Result<TransferResult> HashObject(const std::string& src, const TransferOptions& options);

// Writes `bytes` to `dst` (a local path: temporary file, fsync, rename; or s3://: one PUT).
Status PutBytes(const std::string& dst, std::span<const std::byte> bytes,
                const TransferOptions& options);

// fsync() of the folder `dir`, so a rename into it survives a crash. The errno as a Status.
Status SyncFolder(const std::string& dir);

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_TRANSFER_H_
