// Strategy: how each file of a load is read, chosen before reading (DESIGN.md "Engine"). The
// strategy code owns the sizing of reads (chunk bytes, requests in flight) for every kind of
// source; backends only report what they can do (SourceCaps).
//
// auto: a file mostly in the page cache (≥ 50 % of its pages resident, probed with mincore) is read
// with parallel buffered preads, which copy from the cache at memory speed; a cold file is read
// with io_uring + O_DIRECT in large aligned chunks, keeping the device queue full without polluting
// the cache or copying twice. A file system that refuses O_DIRECT gets buffered reads, with the
// reason. A network file system (FUSE, NFS, CIFS, 9p, Lustre; statfs) gets kNetwork whatever its
// residency: one descriptor per worker, 16 MiB contiguous ranges, sequential read-ahead, no mmap.
// A remote object (http(s)://, s3://) gets ranged requests sized from its caps within the budget.
//
// Thread-safety: pure functions of their arguments (ChooseStrategy also probes the file's
// residency and file system, without opening it for reading). Errors: none; a probe that fails
// counts as a cold file on a local file system.
#ifndef FLASHLOAD_ENGINE_STRATEGY_H_
#define FLASHLOAD_ENGINE_STRATEGY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "flashload/defaults.h"
#include "flashload/load_options.h"
#include "flashload/source.h"

namespace flashload::engine {

struct FileStrategy {
  Strategy strategy = Strategy::kBuffered;  // never kAuto
  LocalOpenOptions open;
  uint64_t chunk_bytes = defaults::kChunkBytes;
  uint32_t queue_depth = defaults::kQueueDepth;  // chunks in flight
  double resident_fraction = 0;  // probed page-cache residency (auto only; -1 when not probed)
  std::string reason;            // why this strategy
};

// Residency at or above which auto reads through the page cache.
inline constexpr double kHotResidency = 0.5;
// Sampled residency at or above which auto maps a file when LoadOptions::zero_copy_hot is set.
inline constexpr double kMappedResidency = 0.98;

// One file of a load as the engine reads it: the source that reads LoadPlan::files[i], how, and
// (GPU loads) how its bytes reach the device. Owned by the load; the source lives until the
// engine has reaped every request of it.
struct FileRead {
  std::unique_ptr<Source> source;
  FileStrategy strategy;
  std::string device_reads;  // GPU loads: "GPUDirect Storage: ..." or why pinned staging
};

// Picks the strategy for one local file.
FileStrategy ChooseStrategy(const std::string& path, const LoadOptions& options);

// A remote object (http(s)://, s3://): as many ranged requests in flight as the source can serve
// (or options.queue_depth), each of LinkChunkBytes (or options.chunk_bytes) but no larger than
// keeps every request busy within the memory budget with two files at once.
// kInvalidArgument when the options force a local-file strategy (CheckRemoteStrategy, which a
// caller may run before opening the object).
Status CheckRemoteStrategy(const std::string& uri, const LoadOptions& options);
Result<FileStrategy> ChooseRemoteStrategy(const std::string& uri, const SourceCaps& caps,
                                          const LoadOptions& options);

// The range size for a measured link (SourceCaps::first_byte_ns, request_bytes_per_second): large
// enough that the first-byte latency costs at most about 1/5 of each request (4 × latency × one
// request's rate), doubling from the source's preferred chunk, at most kRemoteMaxChunkBytes. The
// preferred chunk when the link was not measured. (8 × gave 16 MiB ranges at 20 ms / 100 MB/s,
// which loaded half as fast as 8 MiB on the test VM.) ChooseRemoteStrategy uses it unless the
// caller set a chunk size (LoadOptions::chunk_bytes or RemoteOpenOptions::chunk_bytes).
uint64_t LinkChunkBytes(const SourceCaps& caps);

// Staged loads (GPU, conversion): every chunk in flight holds a staging slot, so each of the
// `parallel_files` files gets at most its share of the `slots` (never one that only its own unread
// chunks hold). `requested` 0 means the default depth.
// Partial loads (a tensor selection, a rank's shard): two runs of wanted bytes closer than this are
// read as one range, because reading the gap costs less than another request. On a local disk a
// request is cheap (16 KiB; 1 MiB on a network file system, whose requests are round trips);
// for a remote object it is the bytes the link delivers while a request waits for its first byte
// (measured at open; 4 MiB when not measured), between 1 MiB and 64 MiB; an archive member:
// the same as a remote object (frames are decompressed whole).
uint64_t MergeGapBytes(const std::string& path, const FileStrategy& strategy,
                       const SourceCaps& caps);

uint32_t StagedQueueDepth(uint32_t requested, uint32_t slots, uint32_t parallel_files);

// GPUDirect Storage reads: bytes per cuFileRead, so that device scratch (slots x chunk) stays
// within the memory budget with at least four slots: budget / 4, in [64 KiB, 16 MiB], a multiple
// of 4096.
uint64_t DeviceReadChunkBytes(uint64_t memory_budget);

// "direct (io_uring)", "buffered (pread x4)", "mmap".
std::string DescribeStrategy(const FileStrategy& s, std::string_view backend);

}  // namespace flashload::engine

#endif  // FLASHLOAD_ENGINE_STRATEGY_H_
