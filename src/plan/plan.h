// LoadPlan: what a load reads, as data, built before any tensor byte is read.
//
// For every file the plan reads one contiguous range, the data section widened to the plan's
// alignment (so O_DIRECT reads are aligned and land at aligned addresses), cut into chunks sized
// for the source. The host memory of a file (its arena) mirrors that range: the byte at file offset
// `o` lands at arena offset `o - read_begin`, so a tensor's data is at arena + (data_offset -
// read_begin) + data_begin. A file with an empty data section reads nothing ([0, 0), no chunks).
//
// Alignment: read_begin and read_end are multiples of the plan's alignment; chunk offsets, lengths
// and arena offsets are too when the chunk size is a multiple of it (BuildPlan checks that;
// RechunkFile trusts its caller).
//
// Thread-safety and lifetime: plain values. The loader builds and adjusts the plan (RechunkFile,
// `mapped`, `device_reads`) before the load starts; during the load the engine and the sink only
// read it, from any thread, and the sink keeps a pointer to it from Prepare() to Finish() or
// Abort(). A pointer into a FilePlan's header is valid while that FilePlan lives unchanged.
#ifndef FLASHLOAD_PLAN_PLAN_H_
#define FLASHLOAD_PLAN_PLAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/header.h"
#include "flashload/model.h"
#include "flashload/status.h"

namespace flashload::plan {

struct Chunk {
  uint32_t file = 0;          // index into LoadPlan::files
  uint64_t offset = 0;        // file offset of the first byte
  uint64_t length = 0;        // bytes to read (the last chunk may run past EOF up to the alignment)
  uint64_t arena_offset = 0;  // where the first byte lands in the file's arena
};

struct FilePlan {
  std::string path;
  std::string component;
  Header header;
  uint64_t read_begin = 0;  // data_offset aligned down
  uint64_t read_end = 0;    // file_size aligned up
  std::vector<Chunk> chunks;
  // Zero-copy: the arena is a private mapping of the file from read_begin, nothing is read (no
  // chunks). Only for local files fully in the page cache (Strategy::kMapped).
  bool mapped = false;
  // GPUDirect Storage: the file's source (a CuFileSource, io/cufile.h) reads chunks straight into
  // device memory (the sink's device scratch), never into host memory. Set for GPU loads by
  // SetUpDeviceReads() (engine/device_reads.h).
  bool device_reads = false;

  uint64_t arena_size() const { return read_end - read_begin; }
  uint64_t data_bytes() const { return header.data_size(); }
  uint64_t tensor_arena_offset(const TensorInfo& t) const {
    return header.data_offset() - read_begin + t.data_begin;
  }
};

struct LoadPlan {
  std::vector<FilePlan> files;
  uint64_t data_bytes() const;
  uint64_t arena_bytes() const;
  size_t tensor_count() const;
};

struct PlanOptions {
  uint64_t chunk_bytes = defaults::kChunkBytes;  // a multiple of `alignment`
  uint32_t alignment = defaults::kAlignment;     // a power of two
};

// Cuts [begin, end) into chunks of at most chunk_bytes (only the last may be shorter), each tagged
// with `file`, whose arena offsets are their offsets relative to `begin`. Empty when end <= begin
// or chunk_bytes is 0.
std::vector<Chunk> SplitRange(uint32_t file, uint64_t begin, uint64_t end, uint64_t chunk_bytes);

// Builds the plan for `layout` given every file's header (keyed by path); the plan holds copies.
// Errors: kInvalidArgument when the alignment is not a power of two or the chunk size not a
// positive multiple of it; kInternal when a file of the layout has no header in `headers`.
Result<LoadPlan> BuildPlan(const ModelLayout& layout, const std::map<std::string, Header>& headers,
                           const PlanOptions& options);

// Re-cuts one file's chunks (strategies pick chunk sizes per file after the plan exists).
// `chunk_bytes` should be a multiple of the plan's alignment; nothing checks it here.
void RechunkFile(FilePlan& file, uint32_t file_index, uint64_t chunk_bytes);

// The tensor whose bytes contain file offset `offset`, or nullptr (header bytes, padding). The
// pointer is into file.header.tensors.
const TensorInfo* TensorAtFileOffset(const FilePlan& file, uint64_t offset);

// A human-readable listing (for `--dry-run`).
std::string DescribePlan(const LoadPlan& plan);

}  // namespace flashload::plan

#endif  // FLASHLOAD_PLAN_PLAN_H_
