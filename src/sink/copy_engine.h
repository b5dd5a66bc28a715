// CopyEngine: the seam between the staging pipeline and whatever moves bytes to the destination.
//
// A copy engine owns a few in-order queues ("streams"), and offers: pinned host memory (the
// staging buffers the storage reads land in), device memory (the final tensors and the conversion
// scratch), host-to-device copies and dtype conversions enqueued on a stream, and events recorded
// behind the work of a stream, to know when a staging buffer may be reused.
//
// Implementations:
// - CudaCopyEngine (sink/cuda_copy_engine.h): cudaHostAlloc, cudaMalloc, cudaMemcpyAsync on
//   non-blocking streams, LaunchConvert, cudaEvent*.
// - CpuCopyEngine (sink/cpu_copy_engine.h): one worker thread per stream, ordinary host memory
//   standing for device memory. It is the host destination of converting CPU loads, and the
//   stand-in that tests the pipeline without a GPU (delays, faults, and a check that no staging
//   buffer is written while a copy from it is pending).
//
// Ordering: the work of one stream runs in enqueue order; streams run independently. An event
// recorded on a stream completes once everything enqueued on that stream before it has run.
//
// Errors: enqueue calls fail synchronously for the bad arguments they check (nothing is enqueued;
// each engine's header says which it checks). Work that fails while it runs (a copy fault, a
// kernel fault) makes the engine failed: that error is returned by every later EventDone,
// WaitEvent, Synchronize, RecordEvent and enqueue call (CUDA's "sticky" errors), so a failure can
// never come back as success.
//
// Ownership and lifetime: memory comes back as shared_ptr whose deleter frees it without the
// engine, so device memory handed out in tensors stays valid after the engine is destroyed.
// Pinned memory and device memory that work is still using must be kept until that work is done
// (wait for an event or Synchronize). Destroying the engine waits for its queues to drain.
//
// Thread-safety: every member may be called from any thread concurrently.
#ifndef FLASHLOAD_SINK_COPY_ENGINE_H_
#define FLASHLOAD_SINK_COPY_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "flashload/dtype.h"
#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload::sink {

class CopyEngine {
 public:
  // An event handle, valid for the life of the engine.
  using Event = uint32_t;

  virtual ~CopyEngine() = default;

  // Short description for reports, e.g. "cuda:0 (NVIDIA H100, 4 streams)".
  virtual std::string name() const = 0;
  // Where AllocateDevice() memory lives (kCpu for a host destination).
  virtual Device device() const = 0;
  virtual uint32_t stream_count() const = 0;
  // True when device memory is ordinary host memory that a host thread may read (a CPU load): the
  // sink may then convert straight from the staging buffer, with no device-side scratch.
  virtual bool device_is_host() const = 0;

  // Page-locked host memory of `bytes` bytes, 4096-byte aligned. kResourceExhausted when denied.
  virtual Result<std::shared_ptr<void>> AllocatePinned(uint64_t bytes) = 0;
  // Device memory of `bytes` bytes, 256-byte aligned. kResourceExhausted when denied.
  virtual Result<std::shared_ptr<void>> AllocateDevice(uint64_t bytes) = 0;

  // Enqueues on `stream` a copy of `bytes` bytes from pinned host memory `src` to device memory
  // `dst`. `src` must not be written until an event recorded after this call has completed.
  virtual Status CopyToDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) = 0;
  // Enqueues on `stream` a copy of `bytes` bytes between two device buffers (GPUDirect Storage
  // reads land in device scratch and are scattered into the tensors from there).
  virtual Status CopyOnDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) = 0;
  // Enqueues on `stream` the conversion of `count` elements (flashload/convert.h rules) from
  // device memory `src` to device memory `dst` (for device_is_host() engines, `src` may also be
  // pinned host memory). The buffers must not overlap.
  virtual Status Convert(uint32_t stream, Dtype from, Dtype to, const void* src, void* dst,
                         uint64_t count) = 0;

  // A new event (not yet recorded: it counts as complete).
  virtual Result<Event> CreateEvent() = 0;
  // Records `event` behind the work enqueued on `stream` so far (re-recording moves it).
  virtual Status RecordEvent(Event event, uint32_t stream) = 0;
  // Whether the work before the event's last recording has run (the engine's error if it failed).
  virtual Result<bool> EventDone(Event event) = 0;
  // Blocks until the event completes; the engine's error if work failed.
  virtual Status WaitEvent(Event event) = 0;
  // Blocks until every stream is idle; the engine's error if work failed.
  virtual Status Synchronize() = 0;

  // Makes the calling thread's device calls target this engine's device (cudaSetDevice). Threads
  // that are not the engine's own call it before they hand device memory to another library
  // (cuFile). Nothing to do for the CPU engine.
  virtual Status BindThread() = 0;

  // Largest number of device bytes allocated at once through this engine (a figure for reports).
  virtual uint64_t peak_device_bytes() const = 0;
};

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_COPY_ENGINE_H_
