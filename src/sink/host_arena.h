// HostArena: one aligned block of host memory holding a file's tensors.
//
// Ownership: held by shared_ptr; every Tensor cut from it holds a share, so the memory lives until
// the last tensor (or exported DLPack tensor) is gone. Alignment: 4096 bytes (page); a fresh
// mapping of 2 MiB or more starts on a 2 MiB boundary (one reused from the cache and grown with
// mremap may not). Memory: Allocate() takes an anonymous mapping from the process's cache of host
// memory (sink/host_memory.h): it may hold bytes of an earlier load, and its first `populated()`
// bytes are already backed by pages; when the arena dies the mapping goes back to the cache. The
// page size (4 KiB or huge pages) is the process's measured choice, applied by the sink that
// populates the arena. An arena of size 0 has a null data().
//
// Thread-safety: the accessors never change; threads may write disjoint ranges of data() at once.
#ifndef FLASHLOAD_SINK_HOST_ARENA_H_
#define FLASHLOAD_SINK_HOST_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "flashload/status.h"

namespace flashload::sink {

class HostArena {
 public:
  // kResourceExhausted, with the size and errno text, when no memory can be mapped.
  static Result<std::shared_ptr<HostArena>> Allocate(uint64_t size);
  // A private, writable mapping of `size` bytes of the file `path` from `offset` (a multiple of the
  // page size, else kInternal): zero-copy views of the page cache; writes stay private
  // (copy-on-write). A file already shorter than offset + size is kDataLoss; open and mmap
  // failures come from ErrnoToStatus(). The file must not be truncated while the arena lives
  // (access past its end raises SIGBUS, as with any mapping): that is the caller's contract;
  // flashload's own reads of the arena (verify) go through io/mapping_guard.h.
  static Result<std::shared_ptr<HostArena>> MapFile(const std::string& path, uint64_t offset,
                                                    uint64_t size);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Bytes at the start already backed by memory (reused from an earlier load).
  uint64_t populated() const { return populated_; }
  // A private mapping of a file (MapFile), not memory to fill.
  bool file_backed() const { return file_backed_; }

 private:
  HostArena(std::byte* data, uint64_t size, uint64_t mapped, uint64_t populated, bool file_backed)
      : data_(data),
        size_(size),
        mapped_(mapped),
        populated_(populated),
        file_backed_(file_backed) {}
  std::byte* data_;
  uint64_t size_;
  uint64_t mapped_;
  uint64_t populated_;
  bool file_backed_;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_ARENA_H_
