// Tensor: a loaded tensor that owns a share of its memory.
//
// Ownership and lifetime: a Tensor holds a shared reference to the allocation it was cut from (a
// host arena of one file, or a device allocation). The memory stays valid while any Tensor, copy of
// a Tensor, or exported DLPack tensor still refers to it: after the loader, the file and the model
// object are gone. flashload never writes to a tensor's memory after handing it out; users need not
// clone. Alignment: data() is aligned as the file laid it out (8 bytes for reference files, more
// for files written with a larger alignment); host arenas are 4096-byte aligned. Thread-safety: a
// Tensor is an immutable value; copies may be used from any thread.
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
  // Host bytes (device must be kCpu).
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(data_), static_cast<size_t>(byte_size_)};
  }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Exports as a DLPack tensor that holds its own share of the memory; the consumer calls its
  // deleter exactly once. Row-major, strides = nullptr (compact). The DLPack data pointer is the
  // tensor's data (byte_offset 0). Types DLPack cannot name are exported as unsigned integers of
  // the same width (see DlpackIsExact()).
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
