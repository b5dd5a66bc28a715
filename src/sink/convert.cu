#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "flashload/dtype.h"
#include "flashload/status.h"
#include "sink/convert_cuda.h"
#include "sink/convert_scalar.h"

namespace flashload::sink {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kMaxBlocks = 8192;  // grid-stride beyond this

// kVec elements moved as one aligned load or store (at most 16 bytes).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
  T v[kVec];
};

// One element of each supported pair, as a functor over bit patterns.
struct F32ToF16Op {
  __device__ uint16_t operator()(uint32_t x) const { return F32ToF16Bits(x); }
};
struct F32ToBF16Op {
  __device__ uint16_t operator()(uint32_t x) const { return F32ToBF16Bits(x); }
};
struct F16ToF32Op {
  __device__ uint32_t operator()(uint16_t x) const { return F16ToF32Bits(x); }
};
struct BF16ToF32Op {
  __device__ uint32_t operator()(uint16_t x) const { return BF16ToF32Bits(x); }
};
struct F16ToBF16Op {
  __device__ uint16_t operator()(uint16_t x) const { return F16ToBF16Bits(x); }
};
struct BF16ToF16Op {
  __device__ uint16_t operator()(uint16_t x) const { return BF16ToF16Bits(x); }
};

enum class Fp8 { kE4M3, kE5M2, kE4M3Fnuz, kE5M2Fnuz };

template <Fp8 kKind>
__device__ inline uint32_t DecodeFp8(uint8_t x) {
  if constexpr (kKind == Fp8::kE4M3) return F8E4M3ToF32Bits(x);
  if constexpr (kKind == Fp8::kE5M2) return F8E5M2ToF32Bits(x);
  if constexpr (kKind == Fp8::kE4M3Fnuz) return F8E4M3FnuzToF32Bits(x);
  if constexpr (kKind == Fp8::kE5M2Fnuz) return F8E5M2FnuzToF32Bits(x);
}

// fp8 values are exact in every target, so the narrowing after the decode never rounds.
template <Fp8 kKind>
struct Fp8ToF32Op {
  __device__ uint32_t operator()(uint8_t x) const { return DecodeFp8<kKind>(x); }
};
template <Fp8 kKind>
struct Fp8ToF16Op {
  __device__ uint16_t operator()(uint8_t x) const { return F32ToF16Bits(DecodeFp8<kKind>(x)); }
};
template <Fp8 kKind>
struct Fp8ToBF16Op {
  __device__ uint16_t operator()(uint8_t x) const { return F32ToBF16Bits(DecodeFp8<kKind>(x)); }
};

// Grid-stride over groups of kVec elements (aligned vector loads and stores), then the last
// count % kVec elements one by one. kVec == 1 is the path for unaligned buffers.
template <typename In, typename Out, int kVec, typename Op>
__global__ void ConvertKernel(const In* src, Out* dst, uint64_t count, Op op) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  const uint64_t tid = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint64_t groups = count / kVec;
  const auto* src_vec = reinterpret_cast<const Vec<In, kVec>*>(src);
  auto* dst_vec = reinterpret_cast<Vec<Out, kVec>*>(dst);
  for (uint64_t g = tid; g < groups; g += stride) {
    const Vec<In, kVec> x = src_vec[g];
    Vec<Out, kVec> y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = op(x.v[k]);
    dst_vec[g] = y;
  }
  for (uint64_t i = groups * kVec + tid; i < count; i += stride) dst[i] = op(src[i]);
}

Status CudaError(cudaError_t err, const std::string& what) {
  std::string message = what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
      return FailedPreconditionError(std::move(message));
    default:
      return InternalError(std::move(message));
  }
}

std::string Describe(Dtype from, Dtype to, uint64_t count) {
  return "converting " + std::to_string(count) + " elements from " + std::string(DtypeName(from)) +
         " to " + std::string(DtypeName(to)) + " on the GPU";
}

template <typename In, typename Out, typename Op>
Status Launch(Dtype from, Dtype to, const void* src, void* dst, uint64_t count,
              cudaStream_t stream) {
  constexpr int kVec = 16 / (sizeof(In) > sizeof(Out) ? sizeof(In) : sizeof(Out));
  const bool aligned = reinterpret_cast<uintptr_t>(src) % (sizeof(In) * kVec) == 0 &&
                       reinterpret_cast<uintptr_t>(dst) % (sizeof(Out) * kVec) == 0;
  const uint64_t work = aligned ? (count + kVec - 1) / kVec : count;
  uint64_t blocks = (work + kThreads - 1) / kThreads;
  blocks = blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks);
  const auto* s = static_cast<const In*>(src);
  auto* d = static_cast<Out*>(dst);
  if (aligned) {
    ConvertKernel<In, Out, kVec, Op>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, d, count, Op{});
  } else {
    ConvertKernel<In, Out, 1, Op>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, d, count, Op{});
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return CudaError(err, Describe(from, to, count));
  return Status::Ok();
}

template <Fp8 kKind>
Status LaunchFp8(Dtype from, Dtype to, const void* src, void* dst, uint64_t count,
                 cudaStream_t stream) {
  switch (to) {
    case Dtype::kF32:
      return Launch<uint8_t, uint32_t, Fp8ToF32Op<kKind>>(from, to, src, dst, count, stream);
    case Dtype::kF16:
      return Launch<uint8_t, uint16_t, Fp8ToF16Op<kKind>>(from, to, src, dst, count, stream);
    case Dtype::kBF16:
      return Launch<uint8_t, uint16_t, Fp8ToBF16Op<kKind>>(from, to, src, dst, count, stream);
    default:
      return InternalError("unreachable: fp8 target checked before launch");
  }
}

bool Supported(Dtype from, Dtype to) {
  return from != to && IsConversionSource(from) && IsConversionTarget(to);
}

}  // namespace

Status LaunchConvert(Dtype from, Dtype to, const void* src_dev, void* dst_dev, uint64_t count,
                     void* cuda_stream) {
  if (from != to && !Supported(from, to)) {
    return InvalidArgumentError("cannot convert " + std::string(DtypeName(from)) + " to " +
                                std::string(DtypeName(to)) +
                                " on the GPU (supported: F32, F16 and BF16 to each other, and "
                                "F8_E4M3, F8_E5M2, F8_E4M3FNUZ and F8_E5M2FNUZ to F32, F16 or "
                                "BF16)");
  }
  if (count == 0) return Status::Ok();
  if (src_dev == nullptr || dst_dev == nullptr) {
    return InvalidArgumentError(Describe(from, to, count) + ": null buffer");
  }
  const uint64_t in_size = DtypeBits(from) / 8;
  const uint64_t out_size = DtypeBits(to) / 8;
  const uint64_t largest = in_size > out_size ? in_size : out_size;
  if (count > UINT64_MAX / largest) {
    return InvalidArgumentError(Describe(from, to, count) + ": byte count overflows");
  }
  const auto s = reinterpret_cast<uintptr_t>(src_dev);
  const auto d = reinterpret_cast<uintptr_t>(dst_dev);
  const bool overlap = s < d + count * out_size && d < s + count * in_size;
  if (overlap && !(s == d && in_size == out_size)) {
    return InvalidArgumentError(Describe(from, to, count) +
                                ": source and destination overlap (only the same buffer, for "
                                "dtypes of the same size, is allowed)");
  }
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  if (from == to) {
    if (s == d) return Status::Ok();
    const cudaError_t err =
        cudaMemcpyAsync(dst_dev, src_dev, count * in_size, cudaMemcpyDeviceToDevice, stream);
    if (err != cudaSuccess) return CudaError(err, Describe(from, to, count));
    return Status::Ok();
  }
  switch (from) {
    case Dtype::kF32:
      return to == Dtype::kF16
                 ? Launch<uint32_t, uint16_t, F32ToF16Op>(from, to, src_dev, dst_dev, count, stream)
                 : Launch<uint32_t, uint16_t, F32ToBF16Op>(from, to, src_dev, dst_dev, count,
                                                           stream);
    case Dtype::kF16:
      return to == Dtype::kF32
                 ? Launch<uint16_t, uint32_t, F16ToF32Op>(from, to, src_dev, dst_dev, count, stream)
                 : Launch<uint16_t, uint16_t, F16ToBF16Op>(from, to, src_dev, dst_dev, count,
                                                           stream);
    case Dtype::kBF16:
      return to == Dtype::kF32 ? Launch<uint16_t, uint32_t, BF16ToF32Op>(from, to, src_dev, dst_dev,
                                                                         count, stream)
                               : Launch<uint16_t, uint16_t, BF16ToF16Op>(from, to, src_dev, dst_dev,
                                                                         count, stream);
    case Dtype::kF8E4M3:
      return LaunchFp8<Fp8::kE4M3>(from, to, src_dev, dst_dev, count, stream);
    case Dtype::kF8E5M2:
      return LaunchFp8<Fp8::kE5M2>(from, to, src_dev, dst_dev, count, stream);
    case Dtype::kF8E4M3Fnuz:
      return LaunchFp8<Fp8::kE4M3Fnuz>(from, to, src_dev, dst_dev, count, stream);
    case Dtype::kF8E5M2Fnuz:
      return LaunchFp8<Fp8::kE5M2Fnuz>(from, to, src_dev, dst_dev, count, stream);
    default:
      return InternalError("unreachable: pair checked before launch");
  }
}

}  // namespace flashload::sink
