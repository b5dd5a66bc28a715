#include "io/page_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "io/local_file.h"

namespace flashload {
namespace {

using io_internal::LocalFd;

Result<LocalFd> OpenRead(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  return LocalFd(fd);
}

}  // namespace

namespace {

// Residency of [off, off + len) probed in windows of `window` bytes every `stride` bytes (all of it
// when stride <= window).
Result<double> ProbeResidency(const std::string& path, uint64_t window, uint64_t stride) {
  FL_ASSIGN_OR_RETURN(LocalFd fd, OpenRead(path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, "fstat", path);
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(fmt::format("{} is not a regular file", path));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return 1.0;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  window = std::max(page, window / page * page);
  stride = std::max(window, stride / page * page);
  // Map and probe in spans so a huge file needs neither a huge vector nor a huge mapping.
  constexpr uint64_t kSpan = uint64_t{1} << 30;
  std::vector<unsigned char> vec(std::min(kSpan, window) / page + 1);
  uint64_t resident = 0, probed = 0;
  for (uint64_t span = 0; span < size; span += kSpan) {
    const uint64_t span_len = std::min(kSpan, size - span);
    void* p = ::mmap(nullptr, span_len, PROT_READ, MAP_SHARED, fd.get(), static_cast<off_t>(span));
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap", path, static_cast<int64_t>(span));
    Status status;
    for (uint64_t off = 0; off < span_len && status.ok(); off += std::min(stride, kSpan)) {
      for (uint64_t w = off; w < std::min(off + window, span_len); w += kSpan) {
        const uint64_t len = std::min({window, kSpan, span_len - w});
        if (::mincore(static_cast<char*>(p) + w, len, vec.data()) != 0) {
          status = ErrnoToStatus(errno, "mincore", path, static_cast<int64_t>(span + w));
          break;
        }
        const uint64_t pages = (len + page - 1) / page;
        for (uint64_t i = 0; i < pages; ++i) resident += vec[i] & 1;
        probed += pages;
      }
    }
    ::munmap(p, span_len);
    FL_RETURN_IF_ERROR(status);
  }
  return probed ? static_cast<double>(resident) / static_cast<double>(probed) : 1.0;
}

}  // namespace

Result<double> ResidentFraction(const std::string& path) {
  return ProbeResidency(path, uint64_t{1} << 30, uint64_t{1} << 30);
}

Result<double> SampledResidentFraction(const std::string& path, uint64_t window, uint64_t stride) {
  return ProbeResidency(path, window, stride);
}

Status EvictFromPageCache(const std::string& path) {
  FL_ASSIGN_OR_RETURN(LocalFd fd, OpenRead(path));
  if (::fdatasync(fd.get()) != 0 && errno != EINVAL && errno != EROFS) {
    return ErrnoToStatus(errno, "fdatasync", path);
  }
  if (const int err = ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED); err != 0) {
    return ErrnoToStatus(err, "posix_fadvise(DONTNEED)", path);
  }
  return Status();
}

Status DropAllCaches() {
  ::sync();
  const char* kPath = "/proc/sys/vm/drop_caches";
  int fd = ::open(kPath, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoToStatus(errno, "open", kPath)
        .WithContext("dropping the page cache needs root (or run: sync; echo 3 > " +
                     std::string(kPath) + ")");
  }
  LocalFd owned(fd);
  if (::write(fd, "3", 1) != 1) return ErrnoToStatus(errno, "write", kPath);
  return Status();
}

bool SupportsDirectIo(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

Result<FileSystemInfo> FileSystemKind(const std::string& path) {
  struct statfs sfs {};
  if (::statfs(path.c_str(), &sfs) != 0) return ErrnoToStatus(errno, "statfs", path);
  FileSystemInfo info;
  info.magic = static_cast<uint64_t>(sfs.f_type);
  // Magic numbers from linux/magic.h (and the Lustre/CIFS/SMB2 ones, which it lacks).
  switch (static_cast<uint32_t>(sfs.f_type)) {
    case 0xEF53:
      info = {FileSystemType::kExt4, "ext4", false, info.magic};
      break;
    case 0x58465342:
      info = {FileSystemType::kXfs, "xfs", false, info.magic};
      break;
    case 0x9123683E:
      info = {FileSystemType::kBtrfs, "btrfs", false, info.magic};
      break;
    case 0x01021994:
      info = {FileSystemType::kTmpfs, "tmpfs", false, info.magic};
      break;
    case 0x794C7630:
      info = {FileSystemType::kOverlay, "overlay", false, info.magic};
      break;
    case 0x6969:
      info = {FileSystemType::kNfs, "nfs", true, info.magic};
      break;
    case 0x65735546:
      info = {FileSystemType::kFuse, "fuse", false, info.magic};
      break;
    case 0xFF534D42:
      info = {FileSystemType::kCifs, "cifs", true, info.magic};
      break;
    case 0xFE534D42:
      info = {FileSystemType::kCifs, "smb2", true, info.magic};
      break;
    case 0x01021997:
      info = {FileSystemType::k9p, "9p", true, info.magic};
      break;
    case 0x0BD00BD0:
      info = {FileSystemType::kLustre, "lustre", true, info.magic};
      break;
    default:
      info.name = "unknown";
      break;
  }
  return info;
}

}  // namespace flashload
