// Placing shards that were assembled in host memory (read-once-then-share): converted to the
// load's dtypes and, for a GPU rank, copied into one device allocation.
//
// Thread-safety: one call at a time per copy engine. Errors: a conversion the spec cannot do
// (kInvalidArgument naming the tensor), an allocation or copy failure of the engine (naming the
// tensor and its bytes); nothing is handed out on error.
#ifndef FLASHLOAD_DIST_PLACEMENT_H_
#define FLASHLOAD_DIST_PLACEMENT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flashload/convert.h"
#include "flashload/tensor.h"
#include "sink/copy_engine.h"

namespace flashload::dist {

// A shard as assembled: stored dtype, loaded shape, its bytes in host memory.
struct HostShard {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  const std::byte* data = nullptr;
  uint64_t bytes = 0;
};

// The tensors of `shards`, converted by `spec` (host code, the engine's rounding) and, with an
// `engine`, in its device memory (one allocation, 256-byte aligned tensors); without one, in host
// memory: shards that keep their dtype stay views of `host_owner`'s memory, converted ones get
// one new host allocation.
Result<TensorMap> PlaceShards(std::span<const HostShard> shards,
                              const std::shared_ptr<void>& host_owner, const ConvertSpec& spec,
                              const std::shared_ptr<sink::CopyEngine>& engine);

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_PLACEMENT_H_
