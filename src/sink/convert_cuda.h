// LaunchConvert: dtype conversion of device memory by a CUDA kernel, for the GPU sink (convert
// right after the host-to-device copy, so the DMA fast path is kept).
//
// Supported pairs and results are exactly those of ConvertElements() (flashload/convert.h): both
// use the scalar code in sink/convert_scalar.h, so the GPU produces the same bits as the CPU.
//
// This header does not need the CUDA headers: the stream is passed as a void*. It is implemented
// in convert.cu, in the library fl_cuda, which exists only when the build found nvcc
// (FLASHLOAD_HAVE_CUDA=1 is defined for code that links it).
//
// Thread-safety: any thread may launch; ordering is the stream's.
#ifndef FLASHLOAD_SINK_CONVERT_CUDA_H_
#define FLASHLOAD_SINK_CONVERT_CUDA_H_

#include <cstdint>

#include "flashload/dtype.h"
#include "flashload/status.h"

namespace flashload::sink {

// Enqueues on `cuda_stream` (a cudaStream_t; nullptr is the legacy default stream) the
// conversion of `count` elements of dtype `from` at device address `src_dev` into dtype `to` at
// `dst_dev`, and returns without waiting: the result is valid once the stream reaches it, and
// both buffers must stay allocated until then.
//
// Buffers: device (or managed) memory, any alignment (aligned buffers, the usual case, take a
// vectorised path: 16-byte loads or stores). The buffers must not overlap, except dst == src for
// a conversion between dtypes of the same size (F16 <-> BF16) and for identity; unlike the CPU
// code, in-place narrowing is not supported (threads run in no particular order). Identity is a
// device-to-device copy on the stream.
//
// Errors (nothing enqueued): kInvalidArgument for an unsupported pair (naming both dtypes), a
// null pointer with count > 0, overlapping buffers, or a byte count that overflows;
// kFailedPrecondition when no usable GPU or driver is present; kInternal for any other launch
// failure, with the CUDA error text. Faults while the kernel runs (e.g. an invalid address)
// surface at the next synchronisation of the stream, as CUDA reports them.
Status LaunchConvert(Dtype from, Dtype to, const void* src_dev, void* dst_dev, uint64_t count,
                     void* cuda_stream);

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_CONVERT_CUDA_H_
