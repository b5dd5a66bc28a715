#include "sink/host_sink.h"

#include <fmt/format.h>

namespace flashload::sink {

std::string QualifiedTensorName(const std::string& component, const std::string& name) {
  return component.empty() ? name : component + "/" + name;
}

Status HostSink::Prepare(const engine::LoadPlan& plan) {
  plan_ = &plan;
  arenas_.clear();
  arenas_.reserve(plan.files.size());
  for (const engine::FilePlan& f : plan.files) {
    Result<std::shared_ptr<HostArena>> arena =
        f.mapped ? HostArena::MapFile(f.path, f.read_begin, f.header.file_size - f.read_begin)
                 : HostArena::Allocate(f.arena_size());
    if (!arena.ok()) {
      arenas_.clear();
      return arena.status().WithContext(f.path);
    }
    arenas_.push_back(*std::move(arena));
  }
  return Status();
}

Result<std::span<std::byte>> HostSink::Acquire(const engine::Chunk& chunk) {
  const HostArena& arena = *arenas_.at(chunk.file);
  if (chunk.arena_offset + chunk.length > arena.size()) {
    return InternalError(fmt::format("chunk [{}, +{}) outside the arena of {} bytes",
                                     chunk.arena_offset, chunk.length, arena.size()));
  }
  return std::span<std::byte>(arena.data() + chunk.arena_offset, chunk.length);
}

Result<TensorMap> HostSink::Finish() {
  TensorMap out;
  for (size_t i = 0; i < plan_->files.size(); ++i) {
    const engine::FilePlan& f = plan_->files[i];
    const std::shared_ptr<HostArena>& arena = arenas_[i];
    for (const TensorInfo& t : f.header.tensors) {
      std::byte* data =
          arena->data() == nullptr ? nullptr : arena->data() + f.tensor_arena_offset(t);
      std::string name = QualifiedTensorName(f.component, t.name);
      Tensor tensor(name, t.dtype, t.shape, Device{}, data, t.byte_size(), arena);
      if (!out.emplace(name, std::move(tensor)).second) {
        return DataLossError(fmt::format(
            "tensor '{}' appears twice in the model ({} and another file)", name, f.path));
      }
    }
  }
  arenas_.clear();
  return out;
}

void HostSink::Abort() { arenas_.clear(); }

}  // namespace flashload::sink
