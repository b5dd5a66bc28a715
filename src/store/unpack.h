// Extracting a model archive safely (`flashload unpack`).
//
// Input: a `.tar`, or a zstd-compressed tar (the seekable format flashload pack writes, or any
// zstd stream of one or more frames, skippable frames skipped), told apart by the first bytes, not
// by the name. The archive is read once, front to back, by a tar walk through ParseTarHeader(); it
// is never trusted. A seekable archive (a seek table that parses, every frame at most 64 MiB) has
// its frames read and decompressed ahead on `threads` threads, each frame in one call into a
// buffer of the size the table gives, checked against the table's size and checksum (at most
// 256 MiB of frames in flight); any other zstd stream goes through the streaming decoder
// (ZSTD_decompressStream), which needs no table.
//
// What is extracted: folders and regular files only. Files get mode 0755 when any execute bit is
// set in the archive, else 0644 (less the umask); owners and times are not restored.
//
// What is refused (the whole extraction fails, naming the archive, the member and the byte offset
// of its header in the tar stream, and saying what to do):
// - member paths that are absolute, have a ".." segment, a NUL, a backslash or a drive letter
//   (CheckMemberPath());
// - symbolic links and hard links, all of them, wherever they point: a link could redirect a later
//   member outside the folder, and a model folder needs none (flashload pack never writes one);
// - character and block devices, FIFOs and unknown member types;
// - two members with the same path, or a file member where a folder is needed;
// - a member larger than `max_member_bytes`, data in total beyond `max_total_bytes`, more than
//   `max_members` members (kResourceExhausted, naming the flag that raises the limit);
// - a zstd frame whose window exceeds 2^window_log_max bytes (ZSTD_d_windowLogMax; a decoder must
//   hold the whole window in memory, so a crafted frame could ask for gigabytes);
// - a malformed or truncated archive (kDataLoss): a bad header checksum, a stream that ends before
//   the end-of-archive block, a truncated zstd frame.
// There is no ratio limit: model data may compress very well (zero tensors), and the size limits
// above already bound what an archive can write.
//
// Atomicity: the archive is extracted into a temporary folder beside the target
// ("<out_dir>.unpack.XXXXXX"), flushed (syncfs), then renamed to `out_dir` and the parent folder
// flushed. On any error the temporary folder is removed and `out_dir` is untouched. `out_dir` must
// not exist, or be an empty folder (it is then replaced); its parent is created when missing.
//
// Thread-safety: UnpackArchive() may run concurrently for different targets; `progress` is called
// on the calling thread.
#ifndef FLASHLOAD_STORE_UNPACK_H_
#define FLASHLOAD_STORE_UNPACK_H_

#include <cstdint>
#include <functional>
#include <string>

#include "flashload/status.h"

namespace flashload::store {

struct UnpackLimits {
  uint64_t max_member_bytes = uint64_t{256} << 30;  // 256 GiB: larger than any one weights file
  uint64_t max_total_bytes = uint64_t{1} << 40;     // 1 TiB of file data in all
  uint64_t max_members = 100'000;                   // files and folders
  int window_log_max = 27;                          // 128 MiB zstd window (zstd -19 uses 8 MiB)
};

struct UnpackOptions {
  std::string archive;  // a local file
  std::string out_dir;
  UnpackLimits limits;
  // Threads decompressing the frames of a seekable archive ahead of the tar walk (0: one per
  // core, at most 8). Other archives are read on the calling thread.
  uint32_t threads = 0;
  // Called with the archive bytes read so far and the archive's size, about every 64 MiB and at
  // the end.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct UnpackSummary {
  std::string out_dir;
  bool compressed = false;  // zstd
  bool seekable = false;    // zstd with a seek table, decompressed frame by frame in parallel
  uint64_t members = 0;     // files and folders extracted
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t bytes_in = 0;   // the archive file
  uint64_t tar_bytes = 0;  // the tar stream read (up to its end-of-archive block)
  uint64_t bytes_out = 0;  // file data written
  double seconds = 0;
  double GbPerSecond() const { return seconds > 0 ? bytes_out / seconds / 1e9 : 0; }
};

// Extracts `options.archive` into `options.out_dir`. Errors, with nothing left behind: the
// refusals above (kInvalidArgument for refused content, kResourceExhausted for limits, kDataLoss
// for malformed or truncated bytes), kFailedPrecondition when `out_dir` exists and is not an empty
// folder, and I/O errors from ErrnoToStatus() naming the file and byte offset.
Result<UnpackSummary> UnpackArchive(const UnpackOptions& options);

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_UNPACK_H_
