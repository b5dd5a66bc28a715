// Strategy: how each file of a load is read, chosen before reading (DESIGN.md "Engine").
//
// auto: a file mostly in the page cache (≥ 50 % of its pages resident, probed with mincore) is read
// with parallel buffered preads, which copy from the cache at memory speed; a cold file is read
// with io_uring + O_DIRECT in large aligned chunks, keeping the device queue full without polluting
// the cache or copying twice. A file system that refuses O_DIRECT gets buffered reads, with the
// reason. A network file system (FUSE, NFS, CIFS, 9p, Lustre; statfs) gets kNetwork whatever its
// residency: one descriptor per worker, 16 MiB contiguous ranges, sequential read-ahead, no mmap.
#ifndef FLASHLOAD_ENGINE_STRATEGY_H_
#define FLASHLOAD_ENGINE_STRATEGY_H_

#include <cstdint>
#include <string>

#include "flashload/load_options.h"
#include "flashload/source.h"

namespace flashload::engine {

struct FileStrategy {
  Strategy strategy = Strategy::kBuffered;  // never kAuto
  LocalOpenOptions open;
  uint64_t chunk_bytes = 8ull << 20;
  uint32_t queue_depth = 8;
  double resident_fraction = 0;  // probed page-cache residency (auto only; -1 when not probed)
  std::string reason;            // why this strategy
};

// Residency at or above which auto reads through the page cache.
inline constexpr double kHotResidency = 0.5;
// Sampled residency at or above which auto maps a file when LoadOptions::zero_copy_hot is set.
inline constexpr double kMappedResidency = 0.98;
// Network file systems: workers (one descriptor each) and bytes per read.
inline constexpr uint32_t kNetworkThreads = 16;
inline constexpr uint64_t kNetworkChunk = 16ull << 20;

// Picks the strategy for one local file.
FileStrategy ChooseStrategy(const std::string& path, const LoadOptions& options);

// "direct (io_uring)", "buffered (pread x4)", "mmap".
std::string DescribeStrategy(const FileStrategy& s, std::string_view backend);

}  // namespace flashload::engine

#endif  // FLASHLOAD_ENGINE_STRATEGY_H_
