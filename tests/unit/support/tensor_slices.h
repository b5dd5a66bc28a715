// The expected bytes of a part of a tensor (flashload/selection.h), computed element by element
// from the whole tensor's bytes: the reference the selection and tensor-parallel tests compare
// loads with.
#ifndef FLASHLOAD_TESTS_SUPPORT_TENSOR_SLICES_H_
#define FLASHLOAD_TESTS_SUPPORT_TENSOR_SLICES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "flashload/selection.h"

namespace flashload::testing {

// `part` of a row-major tensor of `shape` whose elements are `element_bytes` wide, stored as
// `whole`: the kept indices of every dimension, in order (dimensions the part does not name whole).
std::vector<std::byte> SliceOf(std::span<const std::byte> whole, const std::vector<uint64_t>& shape,
                               uint64_t element_bytes, const TensorPart& part);

}  // namespace flashload::testing

#endif  // FLASHLOAD_TESTS_SUPPORT_TENSOR_SLICES_H_
