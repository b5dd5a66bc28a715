#include "dist/share_plan.h"

#include <algorithm>

namespace flashload::dist {

SharePlan::SharePlan(std::vector<std::vector<std::vector<Destination>>> needs, uint64_t window)
    : needs_(std::move(needs)), window_(std::max<uint64_t>(window, 1)) {
  size_t files = 0;
  for (const auto& rank : needs_) files = std::max(files, rank.size());
  for (size_t f = 0; f < files; ++f) {
    std::vector<std::pair<uint64_t, uint64_t>> all;  // [begin, end)
    for (const auto& rank : needs_) {
      if (f >= rank.size()) continue;
      for (const Destination& d : rank[f]) {
        if (d.bytes > 0) all.emplace_back(d.offset, d.offset + d.bytes);
      }
    }
    std::sort(all.begin(), all.end());
    for (const auto& [b, e] : all) {
      FileBytes* last = needed_.empty() || needed_.back().file != f ? nullptr : &needed_.back();
      if (last != nullptr && b <= last->offset + last->bytes) {
        last->bytes = std::max(last->offset + last->bytes, e) - last->offset;
        continue;
      }
      needed_.push_back(FileBytes{static_cast<uint32_t>(f), b, e - b});
    }
  }
  starts_.reserve(needed_.size());
  for (const FileBytes& n : needed_) {
    starts_.push_back(needed_bytes_);
    needed_bytes_ += n.bytes;
  }
}

uint32_t SharePlan::rounds() const {
  return static_cast<uint32_t>((needed_bytes_ + window_ - 1) / window_);
}

std::vector<FileBytes> SharePlan::Reads(uint32_t round, uint32_t rank) const {
  std::vector<FileBytes> out;
  const uint64_t a = static_cast<uint64_t>(round) * window_;
  if (a >= needed_bytes_ || rank >= world()) return out;
  const uint64_t len = std::min(window_, needed_bytes_ - a);
  const uint64_t n = world();
  // 128-bit products: len * rank can pass 2^64 only for absurd windows, but cost nothing here.
  const uint64_t lo = a + static_cast<uint64_t>((static_cast<unsigned __int128>(len) * rank) / n);
  const uint64_t hi =
      a + static_cast<uint64_t>((static_cast<unsigned __int128>(len) * (rank + 1)) / n);
  if (lo >= hi) return out;
  size_t i = std::upper_bound(starts_.begin(), starts_.end(), lo) - starts_.begin() - 1;
  uint64_t at = lo;
  while (at < hi && i < needed_.size()) {
    const FileBytes& e = needed_[i];
    const uint64_t within = at - starts_[i];
    const uint64_t take = std::min(e.bytes - within, hi - at);
    out.push_back(FileBytes{e.file, e.offset + within, take});
    at += take;
    ++i;
  }
  return out;
}

std::vector<Transfer> SharePlan::Transfers(uint32_t round, uint32_t from, uint32_t to) const {
  std::vector<Transfer> out;
  if (to >= world()) return out;
  for (const FileBytes& piece : Reads(round, from)) {
    if (piece.file >= needs_[to].size()) continue;
    const std::vector<Destination>& dests = needs_[to][piece.file];
    const uint64_t end = piece.offset + piece.bytes;
    auto it =
        std::upper_bound(dests.begin(), dests.end(), piece.offset,
                         [](uint64_t v, const Destination& d) { return v < d.offset + d.bytes; });
    for (; it != dests.end() && it->offset < end; ++it) {
      const uint64_t b = std::max(piece.offset, it->offset);
      const uint64_t e = std::min(end, it->offset + it->bytes);
      if (e > b) out.push_back(Transfer{piece.file, b, e - b, it->out + (b - it->offset)});
    }
  }
  return out;
}

OutputLayout LayOutOutput(const std::vector<plan::FilePlan>& files) {
  OutputLayout l;
  l.destinations.resize(files.size());
  l.tensor_out.resize(files.size());
  for (size_t f = 0; f < files.size(); ++f) {
    for (const plan::PlannedTensor& t : files[f].tensors) {
      const uint64_t base = (l.bytes + 63) / 64 * 64;
      l.tensor_out[f].push_back(base);
      uint64_t at = base;
      for (const plan::Segment& s : t.segments) {
        l.destinations[f].push_back(Destination{s.offset, s.bytes, at});
        at += s.bytes;
      }
      l.bytes = at;
    }
  }
  return l;
}

}  // namespace flashload::dist
