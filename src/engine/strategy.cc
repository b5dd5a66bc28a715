#include "engine/strategy.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "io/archive_source.h"
#include "io/page_cache.h"
#include "io/registry.h"
#include "plan/plan.h"

namespace flashload::engine {

namespace {

uint32_t Cores() { return std::max(1u, std::thread::hardware_concurrency()); }

// Buffered pread pool or mmap: worker threads copying through the page cache.
void SetPooled(FileStrategy& s, const LoadOptions& o, Strategy strategy, LocalBackend backend,
               uint64_t default_chunk) {
  s.strategy = strategy;
  s.open.backend = backend;
  s.open.direct = false;
  s.open.threads = o.threads > 0 ? o.threads : std::max(2u, Cores());
  s.chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : default_chunk;
  s.queue_depth = o.queue_depth > 0 ? o.queue_depth : s.open.threads * 2;
}

void SetBuffered(FileStrategy& s, const LoadOptions& o) {
  SetPooled(s, o, Strategy::kBuffered, LocalBackend::kThreadPool, 4ull << 20);
}

void SetDirect(FileStrategy& s, const LoadOptions& o) {
  s.strategy = Strategy::kDirect;
  s.open.backend = LocalBackend::kIoUring;
  s.open.direct = true;
  s.open.fallback = true;
  s.open.threads = o.threads > 0 ? o.threads : 8;
  s.chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : (2ull << 20);
  s.queue_depth = o.queue_depth > 0 ? o.queue_depth : 16;
  s.open.queue_depth = s.queue_depth;
}

void SetMmap(FileStrategy& s, const LoadOptions& o) {
  SetPooled(s, o, Strategy::kMmap, LocalBackend::kMmap, defaults::kChunkBytes);
}

// Network file systems answer each request after a round trip, and some (GCSFuse) serve one
// descriptor's requests one at a time: throughput comes from many descriptors, each reading large
// contiguous ranges with a wide read-ahead. Never mapped: page faults there cost a round trip per
// page.
void SetNetwork(FileStrategy& s, const LoadOptions& o) {
  s.strategy = Strategy::kNetwork;
  s.open.backend = LocalBackend::kThreadPool;
  s.open.direct = false;
  s.open.sequential_hint = true;
  s.open.threads = o.threads > 0 ? o.threads : defaults::kNetworkThreads;
  s.chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : defaults::kNetworkChunkBytes;
  s.queue_depth = o.queue_depth > 0 ? o.queue_depth : s.open.threads;
}

// Zero-copy: the file is mapped by the sink; the source only reads the header.
void SetMapped(FileStrategy& s, const LoadOptions& o) {
  SetPooled(s, o, Strategy::kMapped, LocalBackend::kThreadPool, defaults::kChunkBytes);
  s.open.threads = 1;
}

// The strategy the options name (not kAuto).
void SetForced(FileStrategy& s, const LoadOptions& o) {
  switch (o.strategy) {
    case Strategy::kBuffered:
      return SetBuffered(s, o);
    case Strategy::kMmap:
      return SetMmap(s, o);
    case Strategy::kDirect:
      return SetDirect(s, o);
    case Strategy::kNetwork:
      return SetNetwork(s, o);
    case Strategy::kMapped:
      return SetMapped(s, o);
    case Strategy::kAuto:
      return SetBuffered(s, o);  // not reached: auto chooses
  }
}

// FUSE counts as a network file system here: GCSFuse, s3fs and their kind are the FUSE file
// systems that hold models.
bool IsNetworkFileSystem(const std::string& path, std::string* name) {
  Result<FileSystemInfo> fs = FileSystemKind(path);
  if (!fs.ok()) return false;
  *name = std::string(fs->name);
  return fs->network || fs->type == FileSystemType::kFuse;
}

// An archive member ("tar:" URI, src/io/archive_source.h) is read through its archive's source,
// like a remote object: requests sized from the member source's caps (a multiple of the frame
// size of a .tar.zst), never mapped and never O_DIRECT, whatever strategy the options force.
// (Opening the caps opens the archive, which the process-wide archive cache keeps for the open
// that follows.)
FileStrategy ChooseArchiveMemberStrategy(const std::string& uri, const LoadOptions& options) {
  OpenOptions open;
  open.remote = options.remote;
  Result<SourceCaps> caps = ArchiveMemberCaps(uri, open);
  LoadOptions ranged = options;
  ranged.strategy = Strategy::kAuto;
  Result<FileStrategy> chosen = ChooseRemoteStrategy(uri, caps.ok() ? *caps : SourceCaps{}, ranged);
  FileStrategy s = chosen.ok() ? *chosen : FileStrategy{};
  s.open.backend = LocalBackend::kThreadPool;
  s.open.direct = false;
  s.reason = fmt::format("archive member: {} requests of {} KiB in flight{}", s.queue_depth,
                         s.chunk_bytes >> 10,
                         options.strategy == Strategy::kAuto
                             ? ""
                             : fmt::format(" (strategy '{}' does not apply to archive members)",
                                           StrategyName(options.strategy)));
  return s;
}

}  // namespace

FileStrategy ChooseStrategy(const std::string& path, const LoadOptions& options) {
  if (IsArchiveMemberUri(path)) return ChooseArchiveMemberStrategy(path, options);
  FileStrategy s;
  s.resident_fraction = -1;
  if (options.strategy != Strategy::kAuto) {
    SetForced(s, options);
    s.reason = "forced";
    return s;
  }
  if (std::string fs_name; IsNetworkFileSystem(path, &fs_name)) {
    SetNetwork(s, options);
    s.reason = fmt::format("{} is a network file system", fs_name);
    return s;
  }
  Result<double> resident = SampledResidentFraction(path);
  s.resident_fraction = resident.ok() ? *resident : 0.0;
  if (resident.ok() && options.zero_copy_hot && *resident >= kMappedResidency) {
    SetMapped(s, options);
    s.reason = fmt::format("{:.0f}% in page cache: zero-copy views of it", *resident * 100);
    return s;
  }
  if (resident.ok() && *resident >= kHotResidency) {
    SetBuffered(s, options);
    s.reason = fmt::format("{:.0f}% in page cache", *resident * 100);
    return s;
  }
  if (!SupportsDirectIo(path)) {
    SetBuffered(s, options);
    s.reason = fmt::format("{:.0f}% in page cache, but the file system refuses O_DIRECT",
                           s.resident_fraction * 100);
    return s;
  }
  SetDirect(s, options);
  s.reason = fmt::format("{:.0f}% in page cache", s.resident_fraction * 100);
  return s;
}

uint64_t MergeGapBytes(const std::string& path, const FileStrategy& strategy,
                       const SourceCaps& caps) {
  constexpr uint64_t kMiB = 1 << 20;
  if (RemoteScheme(path).empty() && !IsArchiveMemberUri(path)) {
    return strategy.strategy == Strategy::kNetwork ? kMiB : plan::PlanOptions::kLocalMergeGapBytes;
  }
  if (caps.first_byte_ns == 0 || caps.request_bytes_per_second == 0) return 4 * kMiB;
  const double gap = static_cast<double>(caps.first_byte_ns) * 1e-9 *
                     static_cast<double>(caps.request_bytes_per_second);
  return std::clamp<uint64_t>(static_cast<uint64_t>(gap), kMiB, 64 * kMiB);
}

uint64_t LinkChunkBytes(const SourceCaps& caps) {
  uint64_t chunk = std::max<uint64_t>(caps.preferred_chunk, 1);
  if (caps.first_byte_ns == 0 || caps.request_bytes_per_second == 0) return chunk;
  const double want = 4.0 * (static_cast<double>(caps.first_byte_ns) * 1e-9) *
                      static_cast<double>(caps.request_bytes_per_second);
  while (chunk < want && chunk < defaults::kRemoteMaxChunkBytes) chunk *= 2;
  return std::max(std::min(chunk, defaults::kRemoteMaxChunkBytes), caps.preferred_chunk);
}

Status CheckRemoteStrategy(const std::string& uri, const LoadOptions& options) {
  if (options.strategy != Strategy::kAuto && options.strategy != Strategy::kNetwork) {
    return InvalidArgumentError(fmt::format(
        "{}: strategy '{}' applies to local files; remote objects are read with ranged requests "
        "(use auto or network)",
        RedactUrl(uri), StrategyName(options.strategy)));
  }
  return Status::Ok();
}

Result<FileStrategy> ChooseRemoteStrategy(const std::string& uri, const SourceCaps& caps,
                                          const LoadOptions& options) {
  FL_RETURN_IF_ERROR(CheckRemoteStrategy(uri, options));
  FileStrategy s;
  s.strategy = Strategy::kNetwork;
  s.resident_fraction = -1;
  s.queue_depth =
      options.queue_depth > 0 ? options.queue_depth : std::max<uint32_t>(caps.max_in_flight, 1);
  s.chunk_bytes = options.chunk_bytes > 0 ? options.chunk_bytes : caps.preferred_chunk;
  if (options.chunk_bytes == 0 && options.remote.chunk_bytes == 0) {
    s.chunk_bytes = LinkChunkBytes(caps);
  }
  if (options.chunk_bytes == 0) {
    // Every connection busy within the memory budget, with room for two files at once: ranges no
    // larger than budget / (2 × requests in flight), a power of two, at least 1 MiB. (Larger ranges
    // would leave connections idle while the budget is spent.)
    uint64_t fit = 1ull << 20;
    while (fit * 2 <= options.memory_budget / (2ull * s.queue_depth)) fit *= 2;
    s.chunk_bytes = std::min(s.chunk_bytes, fit);
  }
  s.reason = fmt::format("remote object: {} requests of {} MiB in flight", s.queue_depth,
                         s.chunk_bytes >> 20);
  return s;
}

uint32_t StagedQueueDepth(uint32_t requested, uint32_t slots, uint32_t parallel_files) {
  const uint32_t share = std::max<uint32_t>(slots / std::max<uint32_t>(parallel_files, 1), 1);
  return std::min(requested > 0 ? requested : defaults::kQueueDepth, share);
}

uint64_t DeviceReadChunkBytes(uint64_t memory_budget) {
  return std::clamp<uint64_t>(memory_budget / 4 / 4096 * 4096, 64ull << 10,
                              defaults::kDeviceReadChunkBytes);
}

std::string DescribeStrategy(const FileStrategy& s, std::string_view backend) {
  return fmt::format("{} ({}, {} MiB x {})", StrategyName(s.strategy), backend, s.chunk_bytes >> 20,
                     s.queue_depth);
}

}  // namespace flashload::engine

namespace flashload {

std::string_view StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kAuto:
      return "auto";
    case Strategy::kDirect:
      return "direct";
    case Strategy::kBuffered:
      return "buffered";
    case Strategy::kMmap:
      return "mmap";
    case Strategy::kNetwork:
      return "network";
    case Strategy::kMapped:
      return "mapped";
  }
  return "?";
}

std::optional<Strategy> ParseStrategy(std::string_view name) {
  for (Strategy s : {Strategy::kAuto, Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap,
                     Strategy::kNetwork, Strategy::kMapped}) {
    if (StrategyName(s) == name) return s;
  }
  return std::nullopt;
}

}  // namespace flashload
