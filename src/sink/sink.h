// Sink: where the bytes of a load land.
//
// The engine asks the sink for the memory of each chunk (Acquire), has the source fill it, then
// hands it back (Commit); Finish() waits for everything the sink started and returns the final
// tensors. A host sink returns the final memory itself (reads land in place, no second copy); a
// device sink returns pinned staging memory and copies to the device on Commit.
//
// Thread-safety: Acquire() and Commit() may be called concurrently from several engine threads, for
// different chunks. Prepare() and Finish() are called once, by one thread, before and after them.
// Errors: after a failed load the engine calls Abort() instead of Finish(); the sink frees
// everything.
#ifndef FLASHLOAD_SINK_SINK_H_
#define FLASHLOAD_SINK_SINK_H_

#include <cstddef>
#include <span>

#include "flashload/status.h"
#include "flashload/tensor.h"
#include "plan/plan.h"

namespace flashload::sink {

class Sink {
 public:
  virtual ~Sink() = default;
  // Allocates what the plan needs (host arenas, device memory).
  virtual Status Prepare(const plan::LoadPlan& plan) = 0;
  // Memory for the chunk's bytes: chunk.length bytes, aligned as the plan's alignment.
  virtual Result<std::span<std::byte>> Acquire(const plan::Chunk& chunk) = 0;
  // The chunk's bytes are in place (the source wrote `bytes`; the tail past EOF may be short).
  virtual Status Commit(const plan::Chunk& chunk) = 0;
  // Waits for all work and returns every tensor, named "<component>/<name>" (just "<name>" when the
  // component is empty).
  virtual Result<TensorMap> Finish() = 0;
  // Releases everything after a failure.
  virtual void Abort() = 0;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_SINK_H_
