// Internal helpers shared by the local-file backends (io_uring, thread pool, mmap).
//
// Thread-safety: the free functions are reentrant; LocalFd is a move-only owner of one descriptor.
#ifndef FLASHLOAD_IO_LOCAL_FILE_H_
#define FLASHLOAD_IO_LOCAL_FILE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload::io_internal {

// Owns a file descriptor; closes it on destruction.
class LocalFd {
 public:
  LocalFd() = default;
  explicit LocalFd(int fd) : fd_(fd) {}
  ~LocalFd();
  LocalFd(LocalFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  LocalFd& operator=(LocalFd&& o) noexcept;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// An opened local file: a regular file or a block device.
struct LocalFile {
  LocalFd fd;
  uint64_t size = 0;
  uint32_t direct_alignment = 4096;  // meaningful when opened with `direct`
};

// Opens `path` read-only (O_DIRECT when `direct`) and measures it. Errors name the path: kNotFound
// (missing), kFailedPrecondition (permission; O_DIRECT refused by the file system),
// kInvalidArgument (a directory or another kind of file that is not random-access bytes).
Result<LocalFile> OpenLocal(const std::string& path, bool direct);

// Opens one more descriptor of the same file (for per-worker descriptors), with the same checks.
Result<LocalFd> ReopenLocal(const std::string& path, bool direct);

// The alignment O_DIRECT needs for `fd`: statx(STATX_DIOALIGN) when the kernel reports it, else the
// logical block size of the device (BLKSSZGET / sysfs), else 4096.
uint32_t DirectIoAlignment(int fd);

// pread() until `dst` is full or end of file, retrying EINTR/EAGAIN and continuing after partial
// transfers. With `alignment` > 1 (an O_DIRECT descriptor) a partial transfer that ends mid-block
// is resumed from the block boundary below it, so every call stays aligned. Errors name `name` and
// the byte offset that failed. Returns the bytes read (< dst.size() only at end of file).
Result<size_t> PreadFully(int fd, uint64_t offset, std::span<std::byte> dst, uint32_t alignment,
                          const std::string& name);

// Source::ReadAt() of a local file opened `direct` or not: an aligned request goes through the
// O_DIRECT descriptor `file.fd`; an unaligned one through `buffered` (a plain descriptor of the
// same file).
Result<size_t> LocalReadAt(const LocalFile& file, const LocalFd& buffered, bool direct,
                           uint64_t offset, std::span<std::byte> dst, const std::string& name);

// Consecutive EINTR/EAGAIN (or no-progress) retries of one read before it fails.
inline constexpr int kMaxIoRetries = 1000;

inline bool IsAligned(uint64_t v, uint32_t alignment) { return (v & (alignment - 1)) == 0; }

// Thread count for a pool: `requested`, or 2 × cores (at least 4) when 0.
uint32_t DefaultThreads(uint32_t requested);

}  // namespace flashload::io_internal

#endif  // FLASHLOAD_IO_LOCAL_FILE_H_
