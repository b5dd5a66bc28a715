// The CUDA runtime calls behind CudaCopyEngine (cuda_copy_engine.h), as Status-returning functions.
// No kernels here: this file only keeps cuda_runtime.h out of the C++20 code.
#include <cuda_runtime.h>

#include <string>

#include "sink/cuda_copy_engine.h"

namespace flashload::sink::cuda {
namespace {

std::string ErrorText(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
}

Status Error(cudaError_t err, const std::string& what) {
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return FailedPreconditionError("no CUDA device: " + what + ": " + ErrorText(err));
    case cudaErrorMemoryAllocation:
      return ResourceExhaustedError(what + ": " + ErrorText(err));
    case cudaErrorInvalidDevice:
      return InvalidArgumentError(what + ": " + ErrorText(err));
    default:
      return InternalError(what + ": " + ErrorText(err));
  }
}

}  // namespace

Result<int> DeviceCount() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it
    return FailedPreconditionError("no CUDA device: " + ErrorText(err));
  }
  if (n <= 0) return FailedPreconditionError("no CUDA device: the driver reports 0 devices");
  return n;
}

std::string DeviceName(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "unknown GPU";
  return prop.name;
}

Status SetDevice(int device) {
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return Error(err, "selecting CUDA device " + std::to_string(device));
  return Status::Ok();
}

Result<void*> HostAlloc(uint64_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (err != cudaSuccess) {
    return Error(err, "allocating " + std::to_string(bytes) + " bytes of pinned host memory");
  }
  return p;
}

void HostFree(void* p) {
  if (p != nullptr) cudaFreeHost(p);
}

Result<void*> DeviceAlloc(uint64_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Error(err, "allocating " + std::to_string(bytes) + " bytes of device memory");
  }
  return p;
}

void DeviceFree(int device, void* p) {
  if (p == nullptr) return;
  int current = 0;
  const bool switched = cudaGetDevice(&current) == cudaSuccess && current != device &&
                        cudaSetDevice(device) == cudaSuccess;
  cudaFree(p);
  if (switched) cudaSetDevice(current);
}

Result<void*> StreamCreate() {
  cudaStream_t s = nullptr;
  const cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  if (err != cudaSuccess) return Error(err, "creating a CUDA stream");
  return static_cast<void*>(s);
}

void StreamDestroy(void* stream) {
  if (stream != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

Status CopyHostToDeviceAsync(void* dst, const void* src, uint64_t bytes, void* stream) {
  const cudaError_t err =
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) {
    return Error(err, "enqueuing a copy of " + std::to_string(bytes) + " bytes to the device");
  }
  return Status::Ok();
}

Status CopyDeviceToDeviceAsync(void* dst, const void* src, uint64_t bytes, void* stream) {
  const cudaError_t err =
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) {
    return Error(err, "enqueuing a device-to-device copy of " + std::to_string(bytes) + " bytes");
  }
  return Status::Ok();
}

Status CopyDeviceToHost(void* dst, const void* src, uint64_t bytes) {
  const cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) {
    return Error(err, "copying " + std::to_string(bytes) + " bytes from the device");
  }
  return Status::Ok();
}

Status CopyHostToDevice(void* dst, const void* src, uint64_t bytes) {
  const cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  if (err != cudaSuccess) {
    return Error(err, "copying " + std::to_string(bytes) + " bytes to the device");
  }
  return Status::Ok();
}

Result<void*> EventCreate() {
  cudaEvent_t e = nullptr;
  const cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
  if (err != cudaSuccess) return Error(err, "creating a CUDA event");
  return static_cast<void*>(e);
}

void EventDestroy(void* event) {
  if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

Status EventRecord(void* event, void* stream) {
  const cudaError_t err =
      cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) return Error(err, "recording a CUDA event");
  return Status::Ok();
}

Result<bool> EventQuery(void* event) {
  const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (err == cudaSuccess) return true;
  if (err == cudaErrorNotReady) return false;
  return Error(err, "work on the GPU failed");
}

Status EventSynchronize(void* event) {
  const cudaError_t err = cudaEventSynchronize(static_cast<cudaEvent_t>(event));
  if (err != cudaSuccess) return Error(err, "work on the GPU failed");
  return Status::Ok();
}

Status StreamSynchronize(void* stream) {
  const cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) return Error(err, "work on the GPU failed");
  return Status::Ok();
}

Status InitContext() {
  const cudaError_t err = cudaFree(nullptr);  // creates the current device's context
  if (err != cudaSuccess) return Error(err, "creating the CUDA context");
  return Status::Ok();
}

Status DeviceSynchronize() {
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return Error(err, "work on the GPU failed");
  return Status::Ok();
}

Status MemGetInfo(uint64_t* free_bytes, uint64_t* total_bytes) {
  size_t f = 0, t = 0;
  const cudaError_t err = cudaMemGetInfo(&f, &t);
  if (err != cudaSuccess) return Error(err, "querying device memory");
  *free_bytes = f;
  *total_bytes = t;
  return Status::Ok();
}

}  // namespace flashload::sink::cuda
