// LoadPlan: what a load reads, as data, built before any tensor byte is read.
//
// For every file the plan lists the tensors the load returns (all of them, or those a
// TensorSelection names, each whole or a part of it) and the byte ranges it reads: the stored bytes
// of those tensors, as segments, merged into ranges wherever the gap between two segments costs
// less than another request (PlanOptions::merge_gap_bytes), each widened to the plan's alignment
// (so O_DIRECT reads are aligned and land at aligned addresses), cut into chunks sized for the
// source. A whole-file plan is one range: the data section. The host memory of a file (its arena)
// is the ranges one after another: the byte at file offset `o` of range r lands at arena offset
// `r.arena_offset + (o - r.begin)` (ArenaOffset()). A file with nothing to read has no ranges and
// no chunks.
//
// A tensor part that is not one run of stored bytes (a column slice of a row-major matrix) has one
// segment per run, in the order of the loaded tensor; the sink gathers them (host: in place in the
// arena; device: each segment copied to its place).
//
// Alignment: range bounds are multiples of the plan's alignment; chunk offsets, lengths and arena
// offsets are too when the chunk size is a multiple of it (BuildPlan checks that; RechunkFile
// trusts its caller).
//
// Thread-safety and lifetime: plain values. The loader builds and adjusts the plan (MergeRanges,
// RechunkFile, `mapped`, `device_reads`) before the load starts; during the load the engine and
// the sink only read it, from any thread, and the sink keeps a pointer to it from Prepare() to
// Finish() or Abort(). A pointer into a FilePlan's header is valid while that FilePlan lives
// unchanged.
#ifndef FLASHLOAD_PLAN_PLAN_H_
#define FLASHLOAD_PLAN_PLAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/header.h"
#include "flashload/model.h"
#include "flashload/selection.h"
#include "flashload/status.h"

namespace flashload::plan {

struct Chunk {
  uint32_t file = 0;          // index into LoadPlan::files
  uint64_t offset = 0;        // file offset of the first byte
  uint64_t length = 0;        // bytes to read (the last chunk may run past EOF up to the alignment)
  uint64_t arena_offset = 0;  // where the first byte lands in the file's arena
};

// A run of stored bytes of one tensor that is contiguous in the loaded tensor.
struct Segment {
  uint64_t offset = 0;  // file offset
  uint64_t bytes = 0;
};

// One tensor the load returns from a file: a stored tensor whole, or a part of it.
struct PlannedTensor {
  uint32_t index = 0;             // into FilePlan::header.tensors
  std::vector<uint64_t> shape;    // as loaded
  std::vector<Segment> segments;  // its stored bytes in loaded order (ascending); none when empty
  bool whole = true;              // the stored tensor, all of it
  uint64_t bytes() const;         // stored bytes of the loaded tensor (the sum of the segments)
};

// File bytes [begin, end) land at `arena_offset` of the file's arena.
struct ReadRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t arena_offset = 0;
  uint64_t size() const { return end - begin; }
};

struct FilePlan {
  std::string path;
  std::string component;
  Header header;
  std::vector<PlannedTensor> tensors;  // in file order
  std::vector<ReadRange> ranges;       // ascending, disjoint, aligned; empty: nothing to read
  std::vector<Chunk> chunks;
  // Built from a TensorSelection (some tensors, or parts of them) rather than the whole file.
  bool selective = false;
  // Zero-copy: the arena is a private mapping of the file from the first range's begin, nothing
  // is read (no chunks). Only for whole-file plans of local files fully in the page cache
  // (Strategy::kMapped).
  bool mapped = false;
  // GPUDirect Storage: the file's source (a CuFileSource, io/cufile.h) reads chunks straight into
  // device memory (the sink's device scratch), never into host memory. Set for GPU loads by
  // SetUpDeviceReads() (engine/device_reads.h).
  bool device_reads = false;

  uint64_t read_begin() const { return ranges.empty() ? 0 : ranges.front().begin; }
  uint64_t arena_size() const;
  // Stored bytes of the tensors the load returns (the whole data section for a whole-file plan).
  uint64_t data_bytes() const;
  // Bytes of the file the ranges cover, up to its end (header bytes the alignment pulls in are not
  // counted): what the load reads of the file's data.
  uint64_t read_bytes() const;
  // Bytes the engine reads, up to the end of the file (progress).
  uint64_t bytes_to_read() const;
  // Where file offset `offset` lands in the arena; kInternal when no range holds it.
  Result<uint64_t> ArenaOffset(uint64_t offset) const;
  const TensorInfo& info(const PlannedTensor& t) const { return header.tensors[t.index]; }
};

struct LoadPlan {
  std::vector<FilePlan> files;
  uint64_t data_bytes() const;
  uint64_t read_bytes() const;
  uint64_t arena_bytes() const;
  size_t tensor_count() const;
};

struct PlanOptions {
  uint64_t chunk_bytes = defaults::kChunkBytes;  // a multiple of `alignment`
  uint32_t alignment = defaults::kAlignment;     // a power of two
  // Two segments closer than this are read as one range (the gap is read and ignored): reading it
  // costs less than another request. Sources differ: small on local storage, megabytes on S3
  // (MergeGapBytes() in the engine decides per file).
  uint64_t merge_gap_bytes = kLocalMergeGapBytes;
  // Which tensors, and which part of each (null: every tensor, whole).
  const TensorSelection* selection = nullptr;

  // A local disk: an NVMe request costs about what reading a few pages does, and a buffered read
  // a system call, about a memcpy of 16 KiB.
  static constexpr uint64_t kLocalMergeGapBytes = 16 << 10;
};

// The stored bytes of `part` of tensor `info` (whose data starts at file offset `data_offset`), as
// segments in the loaded order, and its loaded shape. kInvalidArgument naming the tensor and
// `file` when the part does not fit the tensor (a dimension it lacks, a range outside a
// dimension, ranges out of order or overlapping, a cut through a byte of a sub-byte dtype).
Result<PlannedTensor> PlanTensorPart(const TensorInfo& info, uint32_t index, uint64_t data_offset,
                                     const TensorPart& part, std::string_view file);

// Cuts [begin, end) into chunks of at most chunk_bytes (only the last may be shorter), each tagged
// with `file`, whose arena offsets are their offsets relative to `begin`. Empty when end <= begin
// or chunk_bytes is 0.
std::vector<Chunk> SplitRange(uint32_t file, uint64_t begin, uint64_t end, uint64_t chunk_bytes);

// Builds the plan for `layout` given every file's header (keyed by path); the plan holds copies.
// With a selection, each file plans only the tensors (parts) it names, by the name the load gives
// them ("<component>/<name>" in a diffusers folder).
// Errors: kInvalidArgument when the alignment is not a power of two or the chunk size not a
// positive multiple of it, or a part does not fit its tensor; kNotFound naming a selected tensor
// the model lacks; kInternal when a file of the layout has no header in `headers`.
Result<LoadPlan> BuildPlan(const ModelLayout& layout, const std::map<std::string, Header>& headers,
                           const PlanOptions& options);

// Plans one file whose path, component and header are set: its tensors (all, or those of
// options.selection), ranges and chunks. Errors as BuildPlan (but a selected tensor the file lacks
// is no error here).
Status PlanFile(FilePlan& file, uint32_t file_index, const PlanOptions& options);

// Re-derives one file's ranges from its tensors' segments with another merge gap, then its chunks
// (the chunk size stays the one of the file's first chunk, or kChunkBytes). Sources differ in what
// a request costs, and the loader knows each file's source only after the plan exists.
void MergeRanges(FilePlan& file, uint32_t file_index, uint64_t merge_gap_bytes, uint32_t alignment,
                 uint64_t chunk_bytes);

// Re-cuts one file's chunks (strategies pick chunk sizes per file after the plan exists): each
// range into chunks of at most `chunk_bytes`. `chunk_bytes` should be a multiple of the plan's
// alignment; nothing checks it here.
void RechunkFile(FilePlan& file, uint32_t file_index, uint64_t chunk_bytes);

// The tensor whose bytes contain file offset `offset`, or nullptr (header bytes, padding). The
// pointer is into file.header.tensors.
const TensorInfo* TensorAtFileOffset(const FilePlan& file, uint64_t offset);

// A human-readable listing (for `--dry-run`).
std::string DescribePlan(const LoadPlan& plan);

}  // namespace flashload::plan

#endif  // FLASHLOAD_PLAN_PLAN_H_
