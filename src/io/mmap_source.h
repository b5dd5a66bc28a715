// The mmap backend for local files: a read-only shared mapping of the whole file (MAP_SHARED,
// PROT_READ, madvise SEQUENTIAL + WILLNEED); ReadAt() is a memcpy, and View() hands out the mapped
// bytes without a copy. Submit()/Reap() run the copies on a small pool so page faults of one
// request do not hold up the caller.
//
// Truncation: if another process truncates the file while it is mapped, touching a page past the
// new end raises SIGBUS. ReadAt() (and so Submit()) copies under a guard (io/mapping_guard.h): it
// returns the bytes still in the file, as pread would (a short read; the engine reports the end of
// the data with the file, offset and tensor), or DATA_LOSS when the file kept its size (an I/O
// error under the mapping). View() hands out unguarded memory: a caller reading through it must
// guard its own accesses.
//
// Thread-safety: all methods, from any thread. Lifetime: the mapping (and every View()) ends with
// the source, after its copies finished.
#ifndef FLASHLOAD_IO_MMAP_SOURCE_H_
#define FLASHLOAD_IO_MMAP_SOURCE_H_

#include <memory>
#include <span>
#include <string>

#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/read_pool.h"

namespace flashload {

class MmapSource : public io_internal::PooledSource {
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
