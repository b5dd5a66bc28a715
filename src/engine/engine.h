// Engine: executes a LoadPlan — keeps every source saturated, bounds memory in flight, stops
// cleanly on the first error.
//
// Files are read by up to `parallel_files` driver threads, one file each at a time, so storage
// stays busy across file boundaries. A driver keeps up to `queue_depth` chunks of its file in
// flight, each holding its bytes of the shared StagingBudget until committed to the sink. A
// completion with fewer bytes than asked before the end of the file is resubmitted for the rest;
// one that makes no progress is an error. The first error (or a cancel) stops every driver: each
// cancels its source, reaps what it had in flight, and the engine returns that error, naming the
// file, the tensor and the byte offset.
#ifndef FLASHLOAD_ENGINE_ENGINE_H_
#define FLASHLOAD_ENGINE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/load_options.h"
#include "flashload/source.h"
#include "plan/plan.h"
#include "sink/sink.h"

namespace flashload::engine {

struct EngineOptions {
  uint32_t queue_depth = defaults::kQueueDepth;  // chunks in flight per file
  uint64_t memory_budget = defaults::kMemoryBudget;
  uint32_t parallel_files = defaults::kParallelFiles;
  uint32_t max_short_read_retries = 16;
  std::function<bool(const Progress&)> progress;
  uint64_t progress_interval_bytes = 64ull << 20;
  const std::atomic<bool>* cancel = nullptr;
};

struct FileTiming {
  double seconds = 0;
  uint64_t bytes = 0;
};

struct EngineStats {
  std::vector<FileTiming> files;
  uint64_t bytes_read = 0;
  uint64_t peak_in_flight_bytes = 0;
  uint64_t short_read_retries = 0;
};

// What the engine reads one file of the plan with: the source (borrowed; it must outlive RunPlan)
// and its chunks in flight (0: options.queue_depth).
struct FileInput {
  Source* source = nullptr;
  uint32_t queue_depth = 0;
};

// Reads every chunk of `plan` into `sink`: `files[i]` reads `plan.files[i]`. The sink must already
// be prepared for the plan. Blocks until every request is reaped, on success or failure; the first
// error (kCancelled on a cancel or a progress callback returning false) is returned naming the
// file, tensor and byte offset, and the caller then aborts the sink. Calls on different plans and
// sinks may run concurrently; `stats` (may be null) is filled on return.
Status RunPlan(const plan::LoadPlan& plan, std::span<const FileInput> files, sink::Sink& sink,
               const EngineOptions& options, EngineStats* stats = nullptr);
// The same for sources owned in a vector, with optional per-file queue depths (empty or 0: the
// option's).
Status RunPlan(const plan::LoadPlan& plan, std::vector<std::unique_ptr<Source>>& sources,
               sink::Sink& sink, const EngineOptions& options,
               const std::vector<uint32_t>& queue_depths = {}, EngineStats* stats = nullptr);

}  // namespace flashload::engine

#endif  // FLASHLOAD_ENGINE_ENGINE_H_
