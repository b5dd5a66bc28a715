// The mmap backend for local files: a read-only shared mapping of the whole file (MAP_SHARED,
// PROT_READ, madvise SEQUENTIAL + WILLNEED); ReadAt() is a memcpy, and View() hands out the mapped
// bytes without a copy (caps().zero_copy_view). Submit()/Reap() run the copies on a small pool so
// page faults of one request do not hold up the caller.
//
// Hazard (inherent to mmap): if another process truncates the file while it is mapped, touching a
// page past the new end raises SIGBUS and kills the process. The size is measured once at open and
// no read goes past it, which is all a library can do short of a SIGBUS handler; use the pread or
// io_uring backend for files that may change underneath.
#ifndef FLASHLOAD_IO_MMAP_SOURCE_H_
#define FLASHLOAD_IO_MMAP_SOURCE_H_

#include <memory>
#include <span>
#include <string>

#include "flashload/source.h"

namespace flashload {

class MmapSource : public Source {
 public:
  // The mapped bytes [offset, offset + length) clipped to the file; valid while the source lives.
  virtual std::span<const std::byte> View(uint64_t offset, uint64_t length) const = 0;
};

// Maps `path`; options.threads sizes the Submit() pool (0: 4). options.direct is ignored (a mapping
// always goes through the page cache).
Result<std::unique_ptr<MmapSource>> OpenMmapSource(const std::string& path,
                                                   const LocalOpenOptions& options);

}  // namespace flashload

#endif  // FLASHLOAD_IO_MMAP_SOURCE_H_
