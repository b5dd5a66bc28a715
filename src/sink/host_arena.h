// HostArena: one aligned block of host memory holding a file's tensors.
//
// Ownership: held by shared_ptr; every Tensor cut from it holds a share, so the memory lives until
// the last tensor (or exported DLPack tensor) is gone. Alignment: 4096 bytes (page), backed by an
// anonymous mapping with transparent huge pages requested, so large arenas fault in 2 MiB at a
// time.
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
  static Result<std::shared_ptr<HostArena>> Allocate(uint64_t size);
  // A private, writable mapping of `size` bytes of the file `path` from `offset` (a multiple of the
  // page size): zero-copy views of the page cache; writes stay private (copy-on-write). The file
  // must not be truncated while the arena lives (access past its end raises SIGBUS, as with any
  // mapping).
  static Result<std::shared_ptr<HostArena>> MapFile(const std::string& path, uint64_t offset,
                                                    uint64_t size);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  HostArena(std::byte* data, uint64_t size, uint64_t mapped)
      : data_(data), size_(size), mapped_(mapped) {}
  std::byte* data_;
  uint64_t size_;
  uint64_t mapped_;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_ARENA_H_
