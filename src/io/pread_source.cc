#include "io/pread_source.h"

#include <fcntl.h>

#include <vector>

#include "io/local_file.h"
#include "io/read_pool.h"

namespace flashload {
namespace {

using io_internal::LocalFd;
using io_internal::LocalFile;

class PreadSource final : public io_internal::PooledSource {
 public:
  PreadSource(std::string name, LocalFile file, LocalFd buffered, std::vector<LocalFd> worker_fds,
              bool direct, bool fell_back)
      : name_(std::move(name)),
        file_(std::move(file)),
        buffered_(std::move(buffered)),
        worker_fds_(std::move(worker_fds)),
        direct_(direct),
        backend_(direct ? (fell_back ? "pread+direct+fallback" : "pread+direct")
                        : (fell_back ? "pread+fallback" : "pread")),
        pool_(
            static_cast<uint32_t>(worker_fds_.size()),
            [this](const ReadRequest& r, uint32_t worker) {
              return io_internal::PreadFully(worker_fds_[worker].get(), r.offset,
                                             {r.dst, static_cast<size_t>(r.length)},
                                             direct_ ? file_.direct_alignment : 1, name_);
            },
            name_) {}

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return file_.size; }
  std::string_view backend() const override { return backend_; }
  SourceCaps caps() const override {
    SourceCaps c;
    c.direct_io = direct_;
    c.alignment = direct_ ? file_.direct_alignment : 1;
    c.max_in_flight = static_cast<uint32_t>(worker_fds_.size());
    return c;
  }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    return io_internal::LocalReadAt(file_, buffered_, direct_, offset, dst, name_);
  }

 protected:
  io_internal::ReadPool& pool() override { return pool_; }

 private:
  const std::string name_;
  const LocalFile file_;
  const LocalFd buffered_;  // direct only: serves unaligned ReadAt()
  const std::vector<LocalFd> worker_fds_;
  const bool direct_;
  const std::string_view backend_;
  io_internal::ReadPool pool_;  // last: its workers use the members above
};

}  // namespace

Result<std::unique_ptr<Source>> OpenPreadSource(const std::string& path,
                                                const LocalOpenOptions& options,
                                                bool fell_back_from_io_uring) {
  FL_ASSIGN_OR_RETURN(LocalFile file, io_internal::OpenLocal(path, options.direct));
  LocalFd buffered;
  if (options.direct) {
    FL_ASSIGN_OR_RETURN(buffered, io_internal::ReopenLocal(path, /*direct=*/false));
  }
  const uint32_t threads = io_internal::DefaultThreads(options.threads);
  std::vector<LocalFd> fds;
  fds.reserve(threads);
  for (uint32_t i = 0; i < threads; ++i) {
    FL_ASSIGN_OR_RETURN(LocalFd fd, io_internal::ReopenLocal(path, options.direct));
    // Advisory only: a file system that ignores the hint reads as before.
    if (options.sequential_hint) (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    fds.push_back(std::move(fd));
  }
  return std::unique_ptr<Source>(new PreadSource(path, std::move(file), std::move(buffered),
                                                 std::move(fds), options.direct,
                                                 fell_back_from_io_uring));
}

}  // namespace flashload
