// TensorSelection: which tensors a load reads, and which part of each.
//
// A part keeps, along each dimension, a list of index ranges; the loaded tensor is the cartesian
// product of those indices, in order (the ranges of one dimension are concatenated). So a part is
// - a box (`get_slice(name)[2:5, 10:20]`): one range per dimension;
// - a tensor-parallel shard (`torch.tensor_split(t, n, dim)[rank]`): one range on `dim`;
// - a shard of a fused tensor (q, k and v stacked in one qkv projection): on `dim`, the rank's
//   range of every block, concatenated.
// Dimensions past the end of `dims`, and dimensions whose list is empty, are kept whole.
//
// Usage:
//   auto sel = std::make_shared<flashload::TensorSelection>();
//   sel->tensors["lm_head.weight"] = flashload::TensorPart::Along(0, 0, 1000);
//   sel->tensors["model.norm.weight"] = {};                  // whole
//   options.selection = sel;                                 // LoadOptions
//   // Load() reads only those bytes; report.bytes says how many.
//
// Rules (checked by Load(), kInvalidArgument naming the tensor): ranges lie inside the dimension,
// are non-empty, ascending and do not overlap; a part of a sub-byte dtype (F4, F6) must cut whole
// bytes. A name the model lacks is kNotFound.
//
// Thread-safety: plain values.
#ifndef FLASHLOAD_SELECTION_H_
#define FLASHLOAD_SELECTION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace flashload {

// Indices [start, stop) of one dimension.
struct IndexRange {
  uint64_t start = 0;
  uint64_t stop = 0;
  uint64_t size() const { return stop > start ? stop - start : 0; }
  bool operator==(const IndexRange&) const = default;
};

struct TensorPart {
  // dims[d]: the ranges kept along dimension d (empty: all of it).
  std::vector<std::vector<IndexRange>> dims;

  // [start, stop) along `dim`, everything along the other dimensions.
  static TensorPart Along(uint32_t dim, uint64_t start, uint64_t stop) {
    TensorPart p;
    p.dims.resize(dim + 1);
    p.dims[dim].push_back({start, stop});
    return p;
  }
  bool whole() const {
    for (const auto& d : dims)
      if (!d.empty()) return false;
    return true;
  }
  bool operator==(const TensorPart&) const = default;
};

struct TensorSelection {
  // By the name the load gives the tensor ("<component>/<name>" in a diffusers folder). Tensors not
  // named are not read.
  std::map<std::string, TensorPart> tensors;
};

}  // namespace flashload

#endif  // FLASHLOAD_SELECTION_H_
