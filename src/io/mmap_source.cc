#include "io/mmap_source.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "io/local_file.h"
#include "io/mapping_guard.h"
#include "io/read_pool.h"

namespace flashload {
namespace {

class MmapSourceImpl final : public MmapSource {
 public:
  MmapSourceImpl(std::string name, io_internal::LocalFd fd, uint64_t size, const std::byte* base,
                 uint32_t threads)
      : name_(std::move(name)),
        fd_(std::move(fd)),
        size_(size),
        base_(base),
        threads_(threads),
        pool_(
            std::in_place, threads,
            [this](const ReadRequest& r, uint32_t) {
              return ReadAt(r.offset, {r.dst, static_cast<size_t>(r.length)}, {});
            },
            name_) {}
  ~MmapSourceImpl() override {
    pool_.reset();  // no copy may run once the mapping is gone
    if (base_ != nullptr) ::munmap(const_cast<std::byte*>(base_), size_);
  }

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  std::string_view backend() const override { return "mmap"; }
  SourceCaps caps() const override {
    SourceCaps c;
    c.max_in_flight = threads_;
    return c;
  }

  std::span<const std::byte> View(uint64_t offset, uint64_t length) const override {
    if (offset >= size_) return {};
    return {base_ + offset, static_cast<size_t>(std::min(length, size_ - offset))};
  }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    std::span<const std::byte> v = View(offset, dst.size());
    if (v.empty()) return size_t{0};
    const void* fault = nullptr;
    const size_t copied = io_internal::GuardedCopy(dst.data(), v.data(), v.size(), &fault);
    if (fault == nullptr) return copied;
    // SIGBUS: a page past the file's end. Truncated since it was opened: the bytes still in the
    // file, as pread would return them (the caller sees the end of the data where it now is).
    const uint64_t at = static_cast<uint64_t>(static_cast<const std::byte*>(fault) - base_);
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0 && static_cast<uint64_t>(st.st_size) < size_) {
      const uint64_t now = static_cast<uint64_t>(st.st_size);
      const uint64_t end = std::min<uint64_t>(offset + v.size(), std::max(now, offset));
      size_t got = copied;
      if (offset + got < end) {
        got += io_internal::GuardedCopy(dst.data() + got, v.data() + got,
                                        static_cast<size_t>(end - offset - got));
      }
      return got;
    }
    return DataLossError(fmt::format(
        "{}: reading byte offset {} through the file's memory mapping raised SIGBUS, though the "
        "file still has its {} bytes (an I/O error of the storage?); load it with --strategy "
        "buffered to see the error",
        name_, at, size_));
  }

 protected:
  io_internal::ReadPool& pool() override { return *pool_; }

 private:
  const std::string name_;
  const io_internal::LocalFd fd_;  // kept to tell a truncation from an I/O error on SIGBUS
  const uint64_t size_;
  const std::byte* const base_;
  const uint32_t threads_;
  std::optional<io_internal::ReadPool> pool_;
};

}  // namespace

Result<std::unique_ptr<MmapSource>> OpenMmapSource(const std::string& path,
                                                   const LocalOpenOptions& options) {
  FL_ASSIGN_OR_RETURN(io_internal::LocalFile file, io_internal::OpenLocal(path, /*direct=*/false));
  const std::byte* base = nullptr;
  if (file.size > 0) {
    void* p = ::mmap(nullptr, file.size, PROT_READ, MAP_SHARED, file.fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap", path);
    // Advice only: failures change speed, never results.
    ::madvise(p, file.size, MADV_SEQUENTIAL);
    ::madvise(p, file.size, MADV_WILLNEED);
    base = static_cast<const std::byte*>(p);
  }
  const uint32_t threads = options.threads > 0 ? options.threads : 4;
  return std::unique_ptr<MmapSource>(
      new MmapSourceImpl(path, std::move(file.fd), file.size, base, threads));
}

}  // namespace flashload
