#include "io/local_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <thread>

#include "io/mmap_source.h"
#include "io/pread_source.h"
#include "io/uring_source.h"

namespace flashload {
namespace io_internal {

LocalFd::~LocalFd() {
  if (fd_ >= 0) ::close(fd_);
}

LocalFd& LocalFd::operator=(LocalFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

namespace {

const char* KindOfNonFile(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  return "not a regular file";
}

Result<LocalFd> OpenChecked(const std::string& path, bool direct, struct stat* st) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the type check below refuses it, and
  // the flag is cleared for the files kept (it means nothing to regular files and block devices).
  int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (direct ? O_DIRECT : 0);
  int fd;
  do {
    fd = ::open(path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    struct stat probe {};
    const bool exists = ::stat(path.c_str(), &probe) == 0;
    if (err == EISDIR || (exists && S_ISDIR(probe.st_mode)))
      return InvalidArgumentError(fmt::format("{} is a directory, not a file", path));
    if (exists && !S_ISREG(probe.st_mode) && !S_ISBLK(probe.st_mode)) {
      return InvalidArgumentError(fmt::format(
          "{} is {}, not a regular file or block device (cannot read it at offsets); point "
          "flashload at the weights file itself",
          path, KindOfNonFile(probe.st_mode)));
    }
    if (err == ELOOP) {
      return InvalidArgumentError(fmt::format(
          "open {}: a symbolic link loop (ELOOP: too many levels of symbolic links); point the "
          "link at the real file",
          path));
    }
    if (direct && err == EINVAL) {
      return FailedPreconditionError(fmt::format(
          "open {}: the file system does not support O_DIRECT; open it without direct I/O", path));
    }
    return ErrnoToStatus(err, "open", path);
  }
  LocalFd owned(fd);
  if (::fstat(fd, st) != 0) return ErrnoToStatus(errno, "fstat", path);
  if (S_ISDIR(st->st_mode)) {
    return InvalidArgumentError(fmt::format("{} is a directory, not a file", path));
  }
  if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
    return InvalidArgumentError(fmt::format(
        "{} is {}, not a regular file or block device (cannot read it at offsets); point flashload "
        "at the weights file itself",
        path, KindOfNonFile(st->st_mode)));
  }
  if (const int fl = ::fcntl(fd, F_GETFL); fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    return ErrnoToStatus(errno, "fcntl(F_SETFL)", path);
  }
  return owned;
}

uint32_t SysfsLogicalBlockSize(dev_t dev) {
  for (const char* rel : {"queue/logical_block_size", "../queue/logical_block_size"}) {
    std::ifstream f(fmt::format("/sys/dev/block/{}:{}/{}", major(dev), minor(dev), rel));
    uint32_t v = 0;
    if (f >> v && v > 0) return v;
  }
  return 0;
}

}  // namespace

Result<LocalFile> OpenLocal(const std::string& path, bool direct) {
  struct stat st {};
  FL_ASSIGN_OR_RETURN(LocalFd fd, OpenChecked(path, direct, &st));
  LocalFile file;
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) {
      return ErrnoToStatus(errno, "ioctl(BLKGETSIZE64)", path);
    }
    file.size = bytes;
  } else {
    file.size = static_cast<uint64_t>(st.st_size);
  }
  file.direct_alignment = direct ? DirectIoAlignment(fd.get()) : 1;
  file.fd = std::move(fd);
  return file;
}

Result<LocalFd> ReopenLocal(const std::string& path, bool direct) {
  struct stat st {};
  return OpenChecked(path, direct, &st);
}

uint32_t DirectIoAlignment(int fd) {
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
      sx.stx_dio_offset_align > 0) {
    return std::max(sx.stx_dio_mem_align, sx.stx_dio_offset_align);
  }
#endif
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (S_ISBLK(st.st_mode)) {
      int bytes = 0;
      if (::ioctl(fd, BLKSSZGET, &bytes) == 0 && bytes > 0) return static_cast<uint32_t>(bytes);
    } else if (uint32_t v = SysfsLogicalBlockSize(st.st_dev); v > 0) {
      return v;
    }
  }
  return 4096;
}

Result<size_t> PreadFully(int fd, uint64_t offset, std::span<std::byte> dst, uint32_t alignment,
                          const std::string& name) {
  size_t done = 0;
  int retries = 0;
  while (done < dst.size()) {
    // O_DIRECT: a transfer that ended mid-block resumes from the block boundary below it
    // (re-reading the same bytes into the same place) so the call stays aligned.
    const size_t start = alignment > 1 ? done & ~static_cast<size_t>(alignment - 1) : done;
    const ssize_t n =
        ::pread(fd, dst.data() + start, dst.size() - start, static_cast<off_t>(offset + start));
    if (n < 0) {
      if ((errno == EINTR || errno == EAGAIN) && ++retries < kMaxIoRetries) continue;
      return ErrnoToStatus(errno, "pread", name, static_cast<int64_t>(offset + start));
    }
    const size_t end = start + static_cast<size_t>(n);
    if (end <= done) break;  // end of file (a re-read from the boundary stopped where we were)
    done = end;
    // Mid-block end of a direct read: almost always end of file; the next turn confirms it.
  }
  return done;
}

uint32_t DefaultThreads(uint32_t requested) {
  if (requested > 0) return requested;
  return std::max(4u, 2 * std::max(1u, std::thread::hardware_concurrency()));
}

Result<size_t> LocalReadAt(const LocalFile& file, const LocalFd& buffered, bool direct,
                           uint64_t offset, std::span<std::byte> dst, const std::string& name) {
  const uint32_t a = file.direct_alignment;
  if (direct && IsAligned(offset, a) && IsAligned(dst.size(), a) &&
      IsAligned(reinterpret_cast<uintptr_t>(dst.data()), a)) {
    return PreadFully(file.fd.get(), offset, dst, a, name);
  }
  return PreadFully(direct ? buffered.get() : file.fd.get(), offset, dst, 1, name);
}

}  // namespace io_internal

Result<std::unique_ptr<Source>> OpenLocalFile(const std::string& path,
                                              const LocalOpenOptions& options) {
  switch (options.backend) {
    case LocalBackend::kIoUring: {
      Result<std::unique_ptr<Source>> uring = OpenUringSource(path, options);
      if (uring.ok() || !options.fallback || uring.status().code() != StatusCode::kUnimplemented) {
        return uring;
      }
      return OpenPreadSource(path, options, /*fell_back_from_io_uring=*/true);
    }
    case LocalBackend::kThreadPool:
      return OpenPreadSource(path, options);
    case LocalBackend::kMmap: {
      FL_ASSIGN_OR_RETURN(std::unique_ptr<MmapSource> mapped, OpenMmapSource(path, options));
      return std::unique_ptr<Source>(std::move(mapped));
    }
  }
  return InvalidArgumentError(fmt::format("{}: unknown local backend", path));
}

}  // namespace flashload
