// BlockCache: keeps expensive host blocks (page-locked staging) between loads instead of freeing
// them, so a process that loads several files or models (transformers loads a checkpoint shard by
// shard) pins its staging memory once instead of once per load.
//
// Allocate(bytes) hands out a cached block of the same size class when one is free (a block of at
// least `bytes` and at most about twice that: it may be larger than asked), else a new block from
// `alloc`. When the last reference to a block goes, the block returns to the cache, unless that
// would take the cache above `max_cached_bytes`: then the largest cached blocks are freed first to
// make room (or the block itself, when it alone exceeds the cap). Trim() frees every cached block.
//
// Errors: when `alloc` fails, Allocate() frees every cached block (they may be what stands in the
// way) and tries once more; a second failure is returned as `alloc` gave it. Alignment: `alloc`'s.
//
// Lifetime: made by Create() only; blocks handed out hold the cache alive (shared ownership), so a
// block may outlive every other user of the cache. Thread-safety: every member may be called from
// any thread; `alloc` and `free` are called outside the cache's lock, possibly from several threads
// at once.
#ifndef FLASHLOAD_SINK_BLOCK_CACHE_H_
#define FLASHLOAD_SINK_BLOCK_CACHE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "flashload/status.h"

namespace flashload::sink {

class BlockCache : public std::enable_shared_from_this<BlockCache> {
 public:
  using AllocFn = std::function<Result<void*>(uint64_t bytes)>;
  using FreeFn = std::function<void(void*)>;

  static std::shared_ptr<BlockCache> Create(AllocFn alloc, FreeFn free, uint64_t max_cached_bytes);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  Result<std::shared_ptr<void>> Allocate(uint64_t bytes);
  void Trim();

  uint64_t cached_bytes() const;
  uint64_t hits() const;    // allocations served from the cache
  uint64_t misses() const;  // allocations that called `alloc`

 private:
  BlockCache(AllocFn alloc, FreeFn free, uint64_t max_cached_bytes)
      : alloc_(std::move(alloc)), free_(std::move(free)), max_cached_(max_cached_bytes) {}
  void Return(void* p, uint64_t bytes);

  const AllocFn alloc_;
  const FreeFn free_;
  const uint64_t max_cached_;
  mutable std::mutex mu_;
  std::multimap<uint64_t, void*> free_blocks_;  // size -> block
  uint64_t cached_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_BLOCK_CACHE_H_
