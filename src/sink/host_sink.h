// HostSink: reads land directly in one HostArena per file; tensors are cut from the arenas.
//
// Memory: one arena per file of arena_size() bytes, or a private mapping of the file for
// FilePlan::mapped files (no chunks). Each tensor holds a share of its file's arena, so the arena
// lives until the last tensor of that file goes. Alignment: arenas are 4096-byte aligned, and a
// chunk's memory is arena + chunk.arena_offset.
//
// Errors: Prepare() returns HostArena's errors (kResourceExhausted, or the mapping's errors)
// with the file's path; Acquire() kInternal for a chunk outside its file's arena; Finish()
// kDataLoss when two files hold the same qualified tensor name. Thread-safety: as Sink;
// arenas() and memory_stats() are for the preparing thread.
#ifndef FLASHLOAD_SINK_HOST_SINK_H_
#define FLASHLOAD_SINK_HOST_SINK_H_

#include <memory>
#include <vector>

#include "sink/host_arena.h"
#include "sink/host_memory.h"
#include "sink/sink.h"

namespace flashload::sink {

// Fresh memory (sink/host_memory.h): the arenas come from the process's cache of host memory;
// what is not already populated is populated by worker threads ahead of the reads (one per core,
// at most 8), in the order the engine reads it, and Acquire() returns a chunk's memory only once
// it is populated (waiting for a worker, or populating it itself). So no read takes page faults:
// an io_uring submission would fault the pages in one by one on the submitting thread, an HTTP
// event thread inside its write callback. Each load measures which page size populates faster
// (PageSizeTuner). The workers are joined in Finish() and Abort().
struct HostMemoryStats {
  uint64_t fresh_bytes = 0;          // arena bytes that needed populating
  uint64_t reused_bytes = 0;         // arena bytes that came populated from an earlier load
  uint64_t populated_ahead = 0;      // populated by the workers
  uint64_t populated_on_demand = 0;  // populated by Acquire() itself
  uint64_t waits = 0;                // Acquire() calls that waited for a worker
  uint32_t workers = 0;
  PageSizeChoice page_size;  // how the fresh memory was backed, and why
};

class HostSink final : public Sink {
 public:
  // `populate_workers`: threads that populate fresh memory ahead of the reads (-1: one per core,
  // at most 8; 0: none, Acquire() populates each chunk itself).
  explicit HostSink(int populate_workers = -1) : populate_workers_(populate_workers) {}
  ~HostSink() override;
  Status Prepare(const plan::LoadPlan& plan) override;
  Result<std::span<std::byte>> Acquire(const plan::Chunk& chunk) override;
  Status Commit(const plan::Chunk& chunk) override { return Status(); }
  Result<TensorMap> Finish() override;
  void Abort() override;

  // The arenas of the prepared plan, in file order; empty after Finish() or Abort().
  const std::vector<std::shared_ptr<HostArena>>& arenas() const { return arenas_; }
  // Valid after Finish() or Abort().
  const HostMemoryStats& memory_stats() const { return stats_; }

 private:
  void StopPopulating();

  const int populate_workers_;
  const plan::LoadPlan* plan_ = nullptr;
  std::vector<std::shared_ptr<HostArena>> arenas_;
  std::unique_ptr<MemoryPopulator> populator_;
  HostMemoryStats stats_;
};

// Full tensor name inside a load: "<component>/<name>", or "<name>" without a component.
std::string QualifiedTensorName(const std::string& component, const std::string& name);

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_SINK_H_
