// The page cache and file systems under a local file: how much of a file is cached, how to evict
// it, whether O_DIRECT works, and what kind of file system holds it. The engine picks its strategy
// from these (O_DIRECT when cold on a local block device, buffered reads when cached, large
// sequential reads per descriptor on FUSE/NFS). Thread-safety: all functions are reentrant.
#ifndef FLASHLOAD_IO_PAGE_CACHE_H_
#define FLASHLOAD_IO_PAGE_CACHE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "flashload/status.h"

namespace flashload {

// The fraction (0..1) of the file's pages in the page cache, from mmap + mincore(); no page is read
// (works on files larger than memory). An empty file reports 1.
Result<double> ResidentFraction(const std::string& path);

// An estimate of ResidentFraction() from a sample: `window` bytes probed every `stride` bytes (the
// whole file when it is smaller than `stride`). mincore costs ~20 ms per GB of file, a third of a
// hot 2 GB load; the default sample costs 1/16 of that. The loader's strategy choice uses this.
Result<double> SampledResidentFraction(const std::string& path, uint64_t window = 1 << 20,
                                       uint64_t stride = 16 << 20);

// Asks the kernel to drop the file's cached pages: fdatasync() (dirty pages cannot be dropped),
// then posix_fadvise(DONTNEED). Best effort by nature: pages mapped by others stay, and tmpfs
// cannot drop them at all (its pages are the file).
Status EvictFromPageCache(const std::string& path);

// sync() then writes "3" to /proc/sys/vm/drop_caches (every clean cached page of the machine).
// kFailedPrecondition when not permitted (needs root).
Status DropAllCaches();

// Whether `path` can be opened with O_DIRECT (false for a missing file, too).
bool SupportsDirectIo(const std::string& path);

enum class FileSystemType {
  kUnknown,
  kExt4,  // also ext2/ext3 (one magic)
  kXfs,
  kBtrfs,
  kTmpfs,
  kOverlay,
  kNfs,
  kFuse,
  kCifs,  // also SMB2
  k9p,
  kLustre,
};

struct FileSystemInfo {
  FileSystemType type = FileSystemType::kUnknown;
  std::string_view name;  // "ext4", "xfs", ..., or "unknown"
  bool network = false;   // NFS, CIFS/SMB, 9p, Lustre: each read costs a round trip
  uint64_t magic = 0;     // statfs f_type
};

// Identifies the file system holding `path` with statfs(). FUSE is not flagged network (it may be
// either; GCSFuse and s3fs are).
Result<FileSystemInfo> FileSystemKind(const std::string& path);

}  // namespace flashload

#endif  // FLASHLOAD_IO_PAGE_CACHE_H_
