#include "io/mmap_source.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "io/local_file.h"
#include "io/read_pool.h"

namespace flashload {
namespace {

class MmapSourceImpl final : public MmapSource {
 public:
  MmapSourceImpl(std::string name, uint64_t size, const std::byte* base, uint32_t threads)
      : name_(std::move(name)),
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
    c.zero_copy_view = true;
    return c;
  }

  std::span<const std::byte> View(uint64_t offset, uint64_t length) const override {
    if (offset >= size_) return {};
    return {base_ + offset, static_cast<size_t>(std::min(length, size_ - offset))};
  }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    std::span<const std::byte> v = View(offset, dst.size());
    if (!v.empty()) std::memcpy(dst.data(), v.data(), v.size());
    return v.size();
  }

  Status Submit(std::span<const ReadRequest> requests) override {
    FL_RETURN_IF_ERROR(io_internal::ValidateBatch(requests, caps(), name_));
    pool_->Enqueue(requests);
    return Status();
  }
  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    return pool_->Reap(out, deadline);
  }
  void Cancel() override { pool_->Cancel(); }

 private:
  const std::string name_;
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
  return std::unique_ptr<MmapSource>(new MmapSourceImpl(path, file.size, base, threads));
}

}  // namespace flashload
