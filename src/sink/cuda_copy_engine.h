// CudaCopyEngine: the CopyEngine of a CUDA GPU (copy_engine.h), and the few CUDA runtime calls
// flashload needs, wrapped as Status-returning functions.
//
// The engine: pinned staging with cudaHostAlloc (page-aligned, from a process-wide cache: see
// kPinnedCacheBytes), device memory with cudaMalloc (at least 256-byte aligned), copies with
// cudaMemcpyAsync on non-blocking streams (several, so copies overlap with reads and with each
// other's set-up), conversions with LaunchConvert (convert_cuda.h), and cudaEvents to recycle
// staging buffers. Every call that reaches CUDA selects the engine's device on the calling thread
// first. Errors that work hits while it runs come back from the next event query, wait or
// synchronisation, and stay (CUDA's sticky errors); so does a CUDA error from enqueuing a copy or a
// conversion or recording an event. Failing to allocate, to create an event or to select the
// device, a stream or event out of range, and LaunchConvert's kInvalidArgument fail only the call.
// Destroying the engine waits for its own streams, not for other work on the GPU. Thread-safety: as
// CopyEngine; every function of this header may be called from any thread.
//
// Builds: the runtime wrappers live in cuda_copy_engine.cu, compiled into fl_cuda only when the
// build found nvcc (FLASHLOAD_HAVE_CUDA=1). Without it, OpenCudaCopyEngine(), WarmUpCuda() and
// MeasurePinnedH2D() return kUnimplemented ("built without CUDA"). With it, on a machine without a
// usable GPU, they return kFailedPrecondition "no CUDA device: <the CUDA error text>".
//
// This header is C++17 (nvcc compiles the .cu with it) and needs no CUDA header: streams and events
// are passed as void*.
#ifndef FLASHLOAD_SINK_CUDA_COPY_ENGINE_H_
#define FLASHLOAD_SINK_CUDA_COPY_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "flashload/status.h"

namespace flashload::sink {

class CopyEngine;

// A copy engine on CUDA device `device` with `streams` streams (at least 1). Errors: kUnimplemented
// without CUDA; kFailedPrecondition "no CUDA device: ..." when the driver reports no device (or
// none usable); kInvalidArgument naming the index when `device` does not exist; other CUDA failures
// with their error text, as kResourceExhausted when out of memory, else kInternal.
Result<std::unique_ptr<CopyEngine>> OpenCudaCopyEngine(int device, uint32_t streams = 4);

// Pinned staging is kept between loads, up to kPinnedCacheBytes, so a process that loads file
// after file (transformers loads checkpoints shard by shard) pins its staging once: a later load
// with the same budget reuses the same blocks. TrimPinnedCache() frees what is kept (nothing is
// kept without CUDA); PinnedCacheBytes() says how much that is.
inline constexpr uint64_t kPinnedCacheBytes = 1ull << 30;
void TrimPinnedCache();
uint64_t PinnedCacheBytes();

// Creates the CUDA context of `device` (once per process; benchmarks call it before their clock,
// as a model server has its context long before it loads). Errors as OpenCudaCopyEngine().
Status WarmUpCuda(int device);

// The H2D limit: seconds to copy `bytes` from pinned host memory to device memory with
// cudaMemcpyAsync in `block_bytes` pieces over `streams` streams, best of `repeats` (after one
// warm-up). Uses at most `max_buffer` bytes of each memory (copied repeatedly to total `bytes`).
// Errors as OpenCudaCopyEngine().
Result<double> MeasurePinnedH2D(int device, uint64_t bytes, uint32_t streams = 4,
                                uint64_t block_bytes = 8ull << 20, uint32_t repeats = 3,
                                uint64_t max_buffer = 1ull << 30);

// Raw runtime calls (defined only when FLASHLOAD_HAVE_CUDA; the engine and the GPU tests use them).
// They act on the calling thread's current device (SetDevice), except DeviceFree, which selects
// `device` for the call. Errors carry the CUDA error text: kFailedPrecondition "no CUDA device:
// ..." for a missing or unusable driver or device, kResourceExhausted for out of memory,
// kInvalidArgument for an invalid device, kInternal for the rest.
namespace cuda {

// OK with the number of devices (> 0), or kFailedPrecondition "no CUDA device: ...".
Result<int> DeviceCount();
std::string DeviceName(int device);
Status SetDevice(int device);
Result<void*> HostAlloc(uint64_t bytes);  // page-locked (portable)
void HostFree(void* p);
Result<void*> DeviceAlloc(uint64_t bytes);
void DeviceFree(int device, void* p);
Result<void*> StreamCreate();  // non-blocking with respect to the legacy default stream
void StreamDestroy(void* stream);
Status CopyHostToDeviceAsync(void* dst, const void* src, uint64_t bytes, void* stream);
Status CopyDeviceToDeviceAsync(void* dst, const void* src, uint64_t bytes, void* stream);
Status CopyDeviceToHost(void* dst, const void* src, uint64_t bytes);  // synchronous
Status CopyHostToDevice(void* dst, const void* src, uint64_t bytes);  // synchronous
Result<void*> EventCreate();                                          // timing disabled
void EventDestroy(void* event);
Status EventRecord(void* event, void* stream);
Result<bool> EventQuery(void* event);
Status EventSynchronize(void* event);
Status StreamSynchronize(void* stream);
Status InitContext();  // the current device's context, created if the process has none yet
Status DeviceSynchronize();
Status MemGetInfo(uint64_t* free_bytes, uint64_t* total_bytes);

}  // namespace cuda

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_CUDA_COPY_ENGINE_H_
