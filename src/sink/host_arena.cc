#include "sink/host_arena.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "sink/host_memory.h"

namespace flashload::sink {

namespace {
constexpr uint64_t kPage = 4096;
}

Result<std::shared_ptr<HostArena>> HostArena::Allocate(uint64_t size) {
  if (size == 0) return std::shared_ptr<HostArena>(new HostArena(nullptr, 0, 0, 0, false));
  const CachedMapping m = TakeHostMapping(size);
  if (m.data == nullptr) {
    const int err = errno;
    return ResourceExhaustedError(fmt::format(
        "cannot allocate {} bytes of host memory for tensors: {} (errno {}); free memory or load "
        "fewer tensors",
        size, std::strerror(err), err));
  }
  return std::shared_ptr<HostArena>(
      new HostArena(m.data, size, m.mapped, std::min(m.populated, size), false));
}

Result<std::shared_ptr<HostArena>> HostArena::MapFile(const std::string& path, uint64_t offset,
                                                      uint64_t size) {
  if (offset % kPage != 0) {
    return InternalError(fmt::format("{}: mapping offset {} is not page aligned", path, offset));
  }
  if (size == 0) return std::shared_ptr<HostArena>(new HostArena(nullptr, 0, 0, 0, true));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  const uint64_t mapped = (size + kPage - 1) & ~(kPage - 1);
  void* p =
      mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, static_cast<off_t>(offset));
  const int err = errno;
  struct stat st {};
  const bool measured = ::fstat(fd, &st) == 0;
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return ErrnoToStatus(err, "mmap", path, static_cast<int64_t>(offset));
  if (measured && static_cast<uint64_t>(st.st_size) < offset + size) {
    // Views of bytes no longer in the file would raise SIGBUS when touched: refuse them now.
    munmap(p, mapped);
    return DataLossError(fmt::format(
        "{}: the file is {} bytes now, shorter than the {} bytes its header describes (truncated "
        "or replaced while loading?); load it again once it is complete",
        path, st.st_size, offset + size));
  }
  // No MADV_WILLNEED: the file is in the page cache already (auto maps only resident files).
  return std::shared_ptr<HostArena>(
      new HostArena(static_cast<std::byte*>(p), size, mapped, mapped, true));
}

HostArena::~HostArena() {
  if (data_ == nullptr) return;
  if (file_backed_) {
    munmap(data_, mapped_);
  } else {
    GiveHostMapping(data_, mapped_);
  }
}

}  // namespace flashload::sink
