// SharePlan: read-once-then-share as data. Which bytes each rank needs (its shards' segments),
// the union of them read once across the job, and per round which piece each rank reads and which
// bytes go from each rank to each other.
//
// The union of the needed bytes, file after file, is laid end to end (the "needed space", of
// `needed_bytes()` bytes). Round k covers needed-space [k·W, (k+1)·W) (W: the window); rank r
// reads the r-th of `world` equal slices of it. Every rank computes the same plan from the same
// headers and rules, so sender and receiver agree on every transfer without asking each other.
//
// Thread-safety: plain values, built once, then read.
#ifndef FLASHLOAD_DIST_SHARE_PLAN_H_
#define FLASHLOAD_DIST_SHARE_PLAN_H_

#include <cstdint>
#include <vector>

#include "plan/plan.h"

namespace flashload::dist {

// Stored bytes [offset, offset + bytes) of file `file`.
struct FileBytes {
  uint32_t file = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

// Bytes a rank needs: a segment of one of its tensors, and where it lands in the rank's output.
struct Destination {
  uint64_t offset = 0;  // file offset
  uint64_t bytes = 0;
  uint64_t out = 0;  // offset in the rank's output memory
};

// Bytes that move in one round: from the sender's read buffer to the receiver's output.
struct Transfer {
  uint32_t file = 0;
  uint64_t offset = 0;  // file offset
  uint64_t bytes = 0;
  uint64_t out = 0;  // receiver's output offset
};

class SharePlan {
 public:
  // `needs[q][f]`: rank q's destinations in file f, sorted by offset, not overlapping (from its
  // planned tensors). `window`: needed bytes per round across the job (> 0).
  SharePlan(std::vector<std::vector<std::vector<Destination>>> needs, uint64_t window);

  uint32_t world() const { return static_cast<uint32_t>(needs_.size()); }
  uint64_t needed_bytes() const { return needed_bytes_; }
  uint32_t rounds() const;
  // The file bytes rank r reads in round k, ascending.
  std::vector<FileBytes> Reads(uint32_t round, uint32_t rank) const;
  // What `from` sends `to` in round k: its reads that `to` needs, in the order of `from`'s reads.
  std::vector<Transfer> Transfers(uint32_t round, uint32_t from, uint32_t to) const;

 private:
  std::vector<std::vector<std::vector<Destination>>> needs_;
  std::vector<FileBytes> needed_;  // the union, file by file, ascending
  std::vector<uint64_t> starts_;   // needed-space offset of each entry of needed_
  uint64_t needed_bytes_ = 0;
  uint64_t window_ = 1;
};

// Rank-output layout: each planned tensor at a 64-byte aligned offset, its segments one after
// another. Returns the destinations per file and the total output bytes; `tensor_out[f][t]` gets
// the output offset of file f's planned tensor t.
struct OutputLayout {
  std::vector<std::vector<Destination>> destinations;  // per file
  std::vector<std::vector<uint64_t>> tensor_out;       // per file, per planned tensor
  uint64_t bytes = 0;
};
OutputLayout LayOutOutput(const std::vector<plan::FilePlan>& files);

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_SHARE_PLAN_H_
