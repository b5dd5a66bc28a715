#include "io/fault_source.h"

#include <fmt/format.h>

#include <cerrno>
#include <tuple>
#include <vector>

namespace flashload {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

FaultSource::FaultSource(std::unique_ptr<Source> target, FaultOptions options)
    : SourceWrapper(std::move(target)), options_(std::move(options)) {}

uint64_t FaultSource::requests() const {
  std::lock_guard lock(mu_);
  return next_index_;
}

FaultSource::Planned FaultSource::Plan(uint64_t offset, uint64_t length, std::byte* dst) const {
  std::lock_guard lock(mu_);
  Planned p{next_index_++, offset, dst, false};
  if (p.index < options_.after_requests) return p;
  if (options_.one_in > 0 &&
      SplitMix64(options_.seed ^ SplitMix64(p.index)) % options_.one_in != 0) {
    return p;
  }
  if (!options_.at_offsets.empty()) {
    bool hit = false;
    for (uint64_t o : options_.at_offsets) hit |= o >= offset && o - offset < length;
    if (!hit) return p;
  }
  if (options_.max_faults > 0 && planned_ >= options_.max_faults) return p;
  ++planned_;
  p.fault = true;
  return p;
}

Result<size_t> FaultSource::Apply(const Planned& p, Result<size_t> n) const {
  if (!p.fault || !n.ok()) return n;
  switch (options_.kind) {
    case FaultKind::kIoError:
      ++injected_;
      return ErrnoToStatus(EIO, "read (injected fault)", name(), static_cast<int64_t>(p.offset));
    case FaultKind::kInterrupted:
      ++injected_;
      return ErrnoToStatus(EINTR, "read (injected fault)", name(), static_cast<int64_t>(p.offset));
    case FaultKind::kShortRead:
      if (*n == 0) return n;
      ++injected_;
      return *n / 2;
    case FaultKind::kCorrupt: {
      if (*n == 0) return n;
      const uint64_t h = SplitMix64(options_.seed ^ SplitMix64(p.index) ^ 0xc0ffee);
      p.dst[h % *n] ^= static_cast<std::byte>(1 + (h >> 32) % 255);
      ++injected_;
      return n;
    }
  }
  return n;
}

Result<size_t> FaultSource::ReadAt(uint64_t offset, std::span<std::byte> dst,
                                   const ReadOptions& options) const {
  const Planned p = Plan(offset, dst.size(), dst.data());
  if (p.fault &&
      (options_.kind == FaultKind::kIoError || options_.kind == FaultKind::kInterrupted)) {
    return Apply(p, size_t{0});  // fails without reading, as a real EIO would
  }
  return Apply(p, target().ReadAt(offset, dst, options));
}

Status FaultSource::DoSubmit(std::span<const ReadRequest> requests) {
  std::vector<Planned> plans;
  plans.reserve(requests.size());
  for (const ReadRequest& r : requests) plans.push_back(Plan(r.offset, r.length, r.dst));
  return io_internal::ForwardTagged(
      mu_, pending_, requests, [&](size_t i) { return plans[i]; },
      [this](std::span<const ReadRequest> batch) { return SubmitValidated(target(), batch); },
      [](size_t) {});
}

Result<size_t> FaultSource::Reap(std::span<ReadResult> out, Deadline deadline) {
  FL_ASSIGN_OR_RETURN(size_t n, target().Reap(out, deadline));
  for (size_t i = 0; i < n; ++i) {
    ReadResult& r = out[i];
    Planned p;
    {
      std::lock_guard lock(mu_);
      std::tie(r.tag, p) = pending_.Take(r.tag);
    }
    Result<size_t> applied =
        Apply(p, r.status.ok() ? Result<size_t>(static_cast<size_t>(r.bytes)) : r.status);
    r.bytes = applied.ok() ? *applied : 0;
    r.status = applied.status();
  }
  return n;
}

std::unique_ptr<FaultSource> NewFaultSource(std::unique_ptr<Source> target, FaultOptions options) {
  return std::make_unique<FaultSource>(std::move(target), std::move(options));
}

}  // namespace flashload
