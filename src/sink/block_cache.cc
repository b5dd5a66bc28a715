#include "sink/block_cache.h"

#include <algorithm>
#include <vector>

namespace flashload::sink {

std::shared_ptr<BlockCache> BlockCache::Create(AllocFn alloc, FreeFn free,
                                               uint64_t max_cached_bytes) {
  return std::shared_ptr<BlockCache>(
      new BlockCache(std::move(alloc), std::move(free), max_cached_bytes));
}

BlockCache::~BlockCache() { Trim(); }

Result<std::shared_ptr<void>> BlockCache::Allocate(uint64_t bytes) {
  bytes = std::max<uint64_t>(bytes, 1);
  void* p = nullptr;
  uint64_t size = bytes;
  {
    std::lock_guard lock(mu_);
    auto it = free_blocks_.lower_bound(bytes);
    if (it != free_blocks_.end() && it->first / 2 <= bytes) {
      size = it->first;
      p = it->second;
      cached_ -= size;
      free_blocks_.erase(it);
      ++hits_;
    } else {
      ++misses_;
    }
  }
  if (p == nullptr) {
    Result<void*> fresh = alloc_(bytes);
    if (!fresh.ok()) {
      // Cached blocks may be what stands in the way (pinned memory is limited): retry once
      // without them.
      Trim();
      fresh = alloc_(bytes);
    }
    FL_RETURN_IF_ERROR(fresh.status());
    p = *fresh;
  }
  std::shared_ptr<BlockCache> self = shared_from_this();
  return std::shared_ptr<void>(p, [self, size](void* q) { self->Return(q, size); });
}

void BlockCache::Return(void* p, uint64_t bytes) {
  std::vector<void*> to_free;
  {
    std::lock_guard lock(mu_);
    if (bytes > max_cached_) {
      to_free.push_back(p);
    } else {
      // Make room by dropping the largest cached blocks.
      while (cached_ + bytes > max_cached_ && !free_blocks_.empty()) {
        auto last = std::prev(free_blocks_.end());
        cached_ -= last->first;
        to_free.push_back(last->second);
        free_blocks_.erase(last);
      }
      free_blocks_.emplace(bytes, p);
      cached_ += bytes;
    }
  }
  for (void* q : to_free) free_(q);
}

void BlockCache::Trim() {
  std::multimap<uint64_t, void*> blocks;
  {
    std::lock_guard lock(mu_);
    blocks.swap(free_blocks_);
    cached_ = 0;
  }
  for (const auto& [size, p] : blocks) free_(p);
}

uint64_t BlockCache::cached_bytes() const {
  std::lock_guard lock(mu_);
  return cached_;
}
uint64_t BlockCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}
uint64_t BlockCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

}  // namespace flashload::sink
