// Sink: where the bytes of a load land.
//
// The engine asks the sink for the memory of each chunk (Acquire), has the source fill it, then
// hands it back (Commit); Finish() waits for everything the sink started and returns the final
// tensors. A host sink returns the final memory itself (reads land in place, no second copy); a
// device sink returns pinned staging memory and copies to the device on Commit.
//
// Thread-safety: the loader calls Prepare() and then, once the engine is done, Finish() or
// Abort(), from one thread. In between, the engine's file drivers call Acquire() and Commit()
// concurrently from several threads, for different chunks; each chunk is acquired once and then
// committed at most once, by the thread that acquired it.
//
// Lifetime: the plan passed to Prepare() must outlive the sink's use of it, until Finish() or
// Abort() returns. The span Acquire() returns is the sink's memory, lent to the source until the
// chunk is committed; before Finish() or Abort() the caller makes sure no read still writes into
// it (the loader destroys the sources first). Tensors from Finish() own their memory and outlive
// the sink.
//
// Errors: a failed Acquire() or Commit() fails the load. After a failed load (a chunk may then be
// acquired and never committed) the loader calls Abort() instead of Finish(); the sink waits for
// work it started that may still use its memory, then frees everything. Destroying a sink that
// was prepared does the same.
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
  // Allocates what the plan needs (host arenas, device memory); on failure nothing stays allocated.
  virtual Status Prepare(const plan::LoadPlan& plan) = 0;
  // Memory for the chunk's bytes: chunk.length bytes. Host memory is 4096-byte aligned when the
  // plan's chunk sizes are multiples of 4096 (as O_DIRECT needs); device scratch for device reads
  // has AllocateDevice()'s alignment. May block (memory being populated, every staging slot busy).
  virtual Result<std::span<std::byte>> Acquire(const plan::Chunk& chunk) = 0;
  // The chunk's bytes are in the memory Acquire() gave: all chunk.length of them, or, for a chunk
  // that runs past the end of the file, those up to the end.
  virtual Status Commit(const plan::Chunk& chunk) = 0;
  // Waits for all work and returns every tensor, named "<component>/<name>" (just "<name>" when the
  // component is empty). Errors: a failure of the work the sink started (a device sink then
  // releases everything itself); kDataLoss when two files of the model hold the same name.
  virtual Result<TensorMap> Finish() = 0;
  // Waits for the work in flight, then releases everything (after a failure).
  virtual void Abort() = 0;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_SINK_H_
