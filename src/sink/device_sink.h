// DeviceSink: a Sink that stages reads in pinned memory and has a CopyEngine move them into one
// allocation per model, converting dtypes on the way.
//
// Layout: Prepare() makes ONE allocation (AllocateDevice) for the whole model and sub-allocates
// every tensor at a 256-byte aligned offset, in plan order, at its size after conversion. Tensors
// handed out by Finish() share that allocation: it is freed when the last tensor (or DLPack
// export) goes, which may be long after the sink, the engine and the loader are gone. Their
// Device is the engine's (kCuda with the device index for a GPU, kCpu for host memory).
//
// Data path per chunk: Acquire() returns a slot of the StagingRing (pinned memory, 4096-byte
// aligned; it blocks while every slot is busy). Commit() enqueues, on the slot's stream:
// - for each unconverted tensor the chunk overlaps, a copy of those bytes into the final tensor;
// - for each converted tensor, a copy of its whole elements in the chunk into the slot's device
//   scratch (at the same offset as in the chunk), then a conversion from the scratch into the final
//   tensor, with no full-size intermediate buffer. When device memory is host memory
//   (device_is_host), the conversion reads the staging slot directly and there is no scratch;
// - for an element cut by a chunk boundary (a tensor's data need not start at a multiple of its
//   element size, and chunks cut at arbitrary offsets), each piece is kept host-side as it is
//   committed; the commit that completes the element converts it on the CPU (the same bit-exact
//   code as the kernels) into the slot's patch area and copies the result into place.
// Then it records the slot's event; the slot is reused only once that event has completed.
//
// Device reads (FilePlan::device_reads, GPUDirect Storage): Acquire() hands out the slot's
// DEVICE scratch instead, cuFile reads the chunk into it, and Commit() scatters it with
// device-to-device copies and converts straight from it. Such files never have cut elements: the
// loader chooses device reads only when every converted tensor starts at a multiple of its
// element size, and chunks start at multiples of 4096.
//
// Memory: the model bytes after conversion, plus pinned staging of `slots x chunk` bytes and, when
// converting on a device or reading with GPUDirect Storage, the same again as device scratch. The
// ring has memory_budget / chunk slots (no more than the plan has chunks; at least min_slots, at
// most max_slots). The loader keeps the chunks in flight at or below slot_count().
//
// Host loads with conversion (the CPU destination): the loader uses this sink over a CpuCopyEngine
// whose "device" memory is ordinary host memory. Converted tensors then go through staging and the
// CPU convert code straight into the final host allocation (one pass, no scratch); unconverted
// tensors of the same load are copied once from staging into place. Loads without a conversion spec
// keep the HostSink, whose reads land in place with no copy at all. One code path for GPU and CPU
// conversion means the CPU load exercises, and tests, exactly the chunk splitting and boundary
// handling the GPU relies on.
//
// Errors: a failed enqueue fails Commit(); a failure while work runs (copy fault, kernel fault)
// surfaces from a later Acquire() or Commit(), or from Finish(). Misuse is kInternal: a chunk
// larger than the slots or acquired twice, a commit of a chunk never acquired. After a failure the
// loader calls Abort() (Finish() does it itself when it fails), which cancels the ring, waits for
// everything in flight, then frees the staging and the model allocation; the destructor does the
// same. Thread-safety: as Sink (Acquire/Commit concurrently for different chunks); the accessors
// below are for the preparing thread.
#ifndef FLASHLOAD_SINK_DEVICE_SINK_H_
#define FLASHLOAD_SINK_DEVICE_SINK_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "flashload/convert.h"
#include "flashload/defaults.h"
#include "sink/copy_engine.h"
#include "sink/sink.h"
#include "sink/staging_ring.h"

namespace flashload::sink {

inline constexpr uint64_t kDeviceTensorAlignment = 256;

struct DeviceSinkOptions {
  ConvertSpec convert;                               // which tensors change dtype (empty: none)
  uint64_t memory_budget = defaults::kMemoryBudget;  // pinned staging (and device scratch) bytes
  uint32_t min_slots = 2;                            // at least this many staging slots
  uint32_t max_slots = 64;
};

// What a load converted, per file.
struct FileConversion {
  uint32_t tensors_converted = 0;
  uint64_t bytes_converted = 0;  // stored bytes of the converted tensors
  uint64_t output_bytes = 0;     // bytes of all the file's tensors after conversion
};

struct DeviceSinkStats {
  uint64_t device_bytes = 0;   // the model allocation
  uint64_t pinned_bytes = 0;   // the staging ring
  uint64_t scratch_bytes = 0;  // device scratch for conversion
  uint32_t slots = 0;
  uint64_t slot_reuses = 0;
  std::vector<FileConversion> files;
};

class DeviceSink final : public Sink {
 public:
  DeviceSink(std::shared_ptr<CopyEngine> engine, DeviceSinkOptions options);
  ~DeviceSink() override;

  // Errors: kInvalidArgument naming the tensor when the spec asks for an impossible conversion;
  // kResourceExhausted (naming what) when device or pinned memory cannot be had; kInternal when
  // the plan asks device reads of a host destination, or of a converted tensor whose data does not
  // start at a multiple of its element size.
  Status Prepare(const plan::LoadPlan& plan) override;
  Result<std::span<std::byte>> Acquire(const plan::Chunk& chunk) override;
  Status Commit(const plan::Chunk& chunk) override;
  Result<TensorMap> Finish() override;
  void Abort() override;

  // Staging slots (valid after Prepare): how many chunks may be held at once.
  uint32_t slot_count() const { return ring_ ? ring_->slot_count() : 0; }
  // The device scratch of the staging slots as one buffer (base, bytes), valid after Prepare
  // until Finish/Abort: GPUDirect Storage registers it. {nullptr, 0} without scratch.
  std::pair<void*, uint64_t> scratch_buffer() const {
    return ring_ ? std::make_pair(ring_->scratch_base(), ring_->scratch_bytes())
                 : std::make_pair(static_cast<void*>(nullptr), uint64_t{0});
  }
  // Valid after Prepare; slot reuses are filled in by Finish.
  const DeviceSinkStats& stats() const { return stats_; }

 private:
  // One segment of a planned tensor (a whole tensor is one segment).
  struct Placement {
    uint32_t tensor = 0;      // index into the file's header.tensors
    uint32_t id = 0;          // index into the file's placements
    uint64_t file_begin = 0;  // absolute file offsets of the stored bytes
    uint64_t file_end = 0;
    Dtype from = Dtype::kU8;
    Dtype to = Dtype::kU8;
    uint64_t out_offset = 0;  // in the model allocation
    uint64_t out_bytes = 0;
    bool converted() const { return from != to; }
  };
  // An element cut by a chunk boundary, assembled from its pieces.
  struct PendingElement {
    std::byte bytes[8] = {};
    uint32_t have = 0;
  };
  // A tensor as handed out: its planned tensor and where it is in the model allocation.
  struct Output {
    uint32_t planned = 0;  // index into the file's plan tensors
    Dtype dtype = Dtype::kU8;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  using ElementKey =
      std::pair<std::pair<uint32_t, uint32_t>, uint64_t>;  // file, placement, element

  Status EnqueueChunk(const plan::Chunk& chunk, StagingSlot& slot);
  Status AddPiece(uint32_t file, const Placement& p, uint64_t element, uint64_t within,
                  const std::byte* src, uint64_t n, StagingSlot& slot, uint64_t& patch_used);
  std::byte* Out(const Placement& p) const;
  void Reset();

  std::shared_ptr<CopyEngine> engine_;
  const DeviceSinkOptions options_;
  const plan::LoadPlan* plan_ = nullptr;
  std::vector<std::vector<Placement>> placements_;  // per file, in file order
  std::vector<std::vector<Output>> outputs_;        // per file, in plan order
  std::shared_ptr<void> allocation_;
  std::unique_ptr<StagingRing> ring_;
  DeviceSinkStats stats_;

  std::mutex mu_;
  std::map<std::pair<uint32_t, uint64_t>, StagingSlot*> held_;  // (file, chunk offset) -> slot
  std::map<ElementKey, PendingElement> pending_;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_DEVICE_SINK_H_
