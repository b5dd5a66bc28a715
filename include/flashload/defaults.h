// The defaults of a load, in one place: every option struct, the engine, the strategies, the
// backends, the CLI's --help and the Python module take their defaults from here.
//
// A zero in an option means "the default" (or the source's own preference, where it says so).
#ifndef FLASHLOAD_DEFAULTS_H_
#define FLASHLOAD_DEFAULTS_H_

#include <cstdint>

namespace flashload::defaults {

// Bytes per read request when neither the caller nor the source says otherwise.
inline constexpr uint64_t kChunkBytes = 8ull << 20;
// Read requests in flight per file when neither the caller nor the source says otherwise.
inline constexpr uint32_t kQueueDepth = 8;
// Bytes of reads in flight plus staging, per load.
inline constexpr uint64_t kMemoryBudget = 256ull << 20;
// Files read at once (keeps storage busy across file boundaries).
inline constexpr uint32_t kParallelFiles = 2;
// Alignment of plans (O_DIRECT offsets, lengths and buffers).
inline constexpr uint32_t kAlignment = 4096;
// Remote objects (http://, https://, s3://): ranged GETs in flight per object, bytes per GET,
// attempts per range (the first included), and the full-jitter backoff's base and cap.
inline constexpr uint32_t kRemoteConnections = 16;
inline constexpr uint64_t kRemoteChunkBytes = 8ull << 20;
// The largest range a measured link may grow requests to (strategy code, remote objects).
inline constexpr uint64_t kRemoteMaxChunkBytes = 64ull << 20;
inline constexpr uint32_t kRemoteMaxAttempts = 3;
inline constexpr uint32_t kRetryBaseMs = 100;
inline constexpr uint32_t kRetryCapMs = 20000;
// Network file systems: workers (one descriptor each) and bytes per read.
inline constexpr uint32_t kNetworkThreads = 16;
inline constexpr uint64_t kNetworkChunkBytes = 16ull << 20;
// GPUDirect Storage: cuFileRead calls in flight per file and bytes per call (cuFile's default
// max_direct_io_size).
inline constexpr uint32_t kDeviceReadThreads = 8;
inline constexpr uint64_t kDeviceReadChunkBytes = 16ull << 20;
// io_uring: ring entries (requests in flight) per local file.
inline constexpr uint32_t kUringQueueDepth = 32;

}  // namespace flashload::defaults

#endif  // FLASHLOAD_DEFAULTS_H_
