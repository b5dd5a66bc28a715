#include "flashload/tensor.h"

#include <dlpack/dlpack.h>

#include <memory>

namespace flashload {

uint64_t Tensor::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : shape_) n *= d;
  return n;
}

namespace {

// Keeps the memory share and the shape array alive for one exported DLPack tensor.
struct DlpackContext {
  std::shared_ptr<void> owner;
  std::vector<int64_t> shape;
  DLManagedTensor managed{};
};

void DeleteDlpackContext(DLManagedTensor* self) {
  delete static_cast<DlpackContext*>(self->manager_ctx);
}

}  // namespace

DLManagedTensor* Tensor::ToDlpack() const {
  auto ctx = std::make_unique<DlpackContext>();
  ctx->owner = owner_;
  ctx->shape.assign(shape_.begin(), shape_.end());
  DLTensor& t = ctx->managed.dl_tensor;
  t.data = data_;
  t.device = DLDevice{device_.type == DeviceType::kCuda ? kDLCUDA : kDLCPU, device_.index};
  t.ndim = static_cast<int32_t>(ctx->shape.size());
  const DlpackType type = ToDlpackType(dtype_);
  t.dtype = DLDataType{type.code, type.bits, type.lanes};
  t.shape = ctx->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx.get();
  ctx->managed.deleter = &DeleteDlpackContext;
  return &ctx.release()->managed;
}

}  // namespace flashload
