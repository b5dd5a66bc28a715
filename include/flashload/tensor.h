// Tensor: a loaded tensor that owns a share of its memory.
//
// Ownership and lifetime: a Tensor holds a shared reference to the allocation it was cut from: a
// host arena of one file, or one allocation for the whole model (in device memory for GPU loads,
// in host memory for host loads with a conversion spec, LoadOptions::dtype). The memory stays
// valid while any Tensor, copy of a Tensor, or exported DLPack tensor still refers to it: after
// the loader, the file and the model object are gone. flashload never writes to a tensor's memory
// after handing it out; users need not clone. A tensor of 0 bytes may have a null data().
//
// Alignment: tensors of host loads without a conversion spec are aligned as the file laid them
// out: data() is congruent to the tensor's file offset modulo 4096 (host arenas are 4096-byte
// aligned; the reference writer starts the data section at a multiple of 8, flashload's writer at
// a multiple of WriteOptions::alignment). Tensors of GPU loads, and of host loads with a
// conversion spec, are 256-byte aligned.
//
// Thread-safety: a Tensor is an immutable value; copies may be used from any thread.
#ifndef FLASHLOAD_TENSOR_H_
#define FLASHLOAD_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flashload/dtype.h"

struct DLManagedTensor;

namespace flashload {

enum class DeviceType { kCpu, kCuda };

struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;
  friend bool operator==(const Device&, const Device&) = default;
};

class Tensor {
 public:
  Tensor() = default;
  // `data` points inside the allocation kept alive by `owner`.
  Tensor(std::string name, Dtype dtype, std::vector<uint64_t> shape, Device device, void* data,
         uint64_t byte_size, std::shared_ptr<void> owner)
      : name_(std::move(name)),
        dtype_(dtype),
        shape_(std::move(shape)),
        device_(device),
        data_(data),
        byte_size_(byte_size),
        owner_(std::move(owner)) {}

  const std::string& name() const { return name_; }
  Dtype dtype() const { return dtype_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  Device device() const { return device_; }
  const void* data() const { return data_; }
  uint64_t byte_size() const { return byte_size_; }
  uint64_t element_count() const;
  // Host bytes (device must be kCpu); the span borrows the memory this Tensor keeps alive.
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(data_), static_cast<size_t>(byte_size_)};
  }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Exports as a new DLPack tensor that holds its own share of the memory and its own shape array;
  // the consumer owns it and calls its deleter exactly once. Row-major, strides = nullptr
  // (compact). The DLPack data pointer is the tensor's data (byte_offset 0). The dtype is
  // ToDlpackType(): the types DLPack cannot name are exported as 8-bit unsigned integers with the
  // tensor's own shape.
  DLManagedTensor* ToDlpack() const;

 private:
  std::string name_;
  Dtype dtype_ = Dtype::kU8;
  std::vector<uint64_t> shape_;
  Device device_;
  void* data_ = nullptr;
  uint64_t byte_size_ = 0;
  std::shared_ptr<void> owner_;
};

// Tensors by name, in name order.
using TensorMap = std::map<std::string, Tensor, std::less<>>;

}  // namespace flashload

#endif  // FLASHLOAD_TENSOR_H_
