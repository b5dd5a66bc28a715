#include "engine/strategy.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "io/page_cache.h"

namespace flashload::engine {

namespace {

uint32_t Cores() { return std::max(1u, std::thread::hardware_concurrency()); }

void SetBuffered(FileStrategy& s, const LoadOptions& o) {
  s.strategy = Strategy::kBuffered;
  s.open.backend = LocalBackend::kThreadPool;
  s.open.direct = false;
  s.open.threads = o.threads > 0 ? o.threads : std::max(2u, Cores());
  s.chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : (4ull << 20);
  s.queue_depth = o.queue_depth > 0 ? o.queue_depth : s.open.threads * 2;
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
  s.strategy = Strategy::kMmap;
  s.open.backend = LocalBackend::kMmap;
  s.open.direct = false;
  s.open.threads = o.threads > 0 ? o.threads : std::max(2u, Cores());
  s.chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : (8ull << 20);
  s.queue_depth = o.queue_depth > 0 ? o.queue_depth : s.open.threads * 2;
}

}  // namespace

FileStrategy ChooseStrategy(const std::string& path, const LoadOptions& options) {
  FileStrategy s;
  s.resident_fraction = -1;
  switch (options.strategy) {
    case Strategy::kBuffered:
      SetBuffered(s, options);
      s.reason = "forced";
      return s;
    case Strategy::kMmap:
      SetMmap(s, options);
      s.reason = "forced";
      return s;
    case Strategy::kDirect:
      SetDirect(s, options);
      s.reason = "forced";
      return s;
    case Strategy::kAuto:
      break;
  }
  Result<double> resident = SampledResidentFraction(path);
  s.resident_fraction = resident.ok() ? *resident : 0.0;
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

std::string DescribeStrategy(const FileStrategy& s, std::string_view backend) {
  return fmt::format("{} ({}, {} MiB x {})", StrategyName(s.strategy), backend, s.chunk_bytes >> 20,
                     s.queue_depth);
}

}  // namespace flashload::engine
