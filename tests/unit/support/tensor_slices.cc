#include "support/tensor_slices.h"

namespace flashload::testing {

std::vector<std::byte> SliceOf(std::span<const std::byte> whole, const std::vector<uint64_t>& shape,
                               uint64_t element_bytes, const TensorPart& part) {
  const size_t rank = shape.size();
  if (rank == 0) return std::vector<std::byte>(whole.begin(), whole.end());
  std::vector<std::vector<uint64_t>> kept(rank);
  for (size_t d = 0; d < rank; ++d) {
    if (d < part.dims.size() && !part.dims[d].empty()) {
      for (const IndexRange& r : part.dims[d])
        for (uint64_t i = r.start; i < r.stop; ++i) kept[d].push_back(i);
    } else {
      for (uint64_t i = 0; i < shape[d]; ++i) kept[d].push_back(i);
    }
  }
  std::vector<std::byte> out;
  for (const auto& k : kept)
    if (k.empty()) return out;
  std::vector<size_t> at(rank, 0);
  while (true) {
    uint64_t flat = 0;
    for (size_t d = 0; d < rank; ++d) flat = flat * shape[d] + kept[d][at[d]];
    out.insert(out.end(), whole.begin() + flat * element_bytes,
               whole.begin() + (flat + 1) * element_bytes);
    size_t d = rank;
    while (d > 0) {
      --d;
      if (++at[d] < kept[d].size()) break;
      at[d] = 0;
      if (d == 0) return out;
    }
  }
}

}  // namespace flashload::testing
