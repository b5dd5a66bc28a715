#include "sink/host_sink.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <thread>

namespace flashload::sink {

std::string QualifiedTensorName(const std::string& component, const std::string& name) {
  return component.empty() ? name : component + "/" + name;
}

HostSink::~HostSink() { StopPopulating(); }

void HostSink::StopPopulating() {
  if (!populator_) return;
  populator_->Stop();
  stats_.populated_ahead = populator_->populated_by_workers();
  stats_.populated_on_demand = populator_->populated_by_callers();
  stats_.waits = populator_->waits();
  stats_.page_size = populator_->page_size();
  populator_.reset();
}

Status HostSink::Prepare(const plan::LoadPlan& plan) {
  StopPopulating();
  stats_ = HostMemoryStats{};
  plan_ = &plan;
  arenas_.clear();
  arenas_.reserve(plan.files.size());
  for (const plan::FilePlan& f : plan.files) {
    Result<std::shared_ptr<HostArena>> arena =
        f.mapped ? HostArena::MapFile(f.path, f.read_begin(), f.header.file_size - f.read_begin())
                 : HostArena::Allocate(f.arena_size());
    if (!arena.ok()) {
      arenas_.clear();
      return arena.status().WithContext(f.path);
    }
    arenas_.push_back(*std::move(arena));
  }
  std::vector<MemoryPopulator::Region> regions(arenas_.size());
  for (size_t i = 0; i < arenas_.size(); ++i) {
    const HostArena& a = *arenas_[i];
    if (a.file_backed() || a.data() == nullptr || plan.files[i].chunks.empty()) continue;
    regions[i] = {a.data(), a.size(), a.populated()};
    stats_.reused_bytes += a.populated();
    stats_.fresh_bytes += a.size() - a.populated();
  }
  uint32_t workers = 0;
  if (stats_.fresh_bytes >= 4 * MemoryPopulator::kStep) {
    workers = populate_workers_ >= 0 ? static_cast<uint32_t>(populate_workers_)
                                     : std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  }
  stats_.workers = workers;
  populator_ = std::make_unique<MemoryPopulator>(std::move(regions), workers);
  return Status();
}

Result<std::span<std::byte>> HostSink::Acquire(const plan::Chunk& chunk) {
  const HostArena& arena = *arenas_.at(chunk.file);
  if (chunk.arena_offset + chunk.length > arena.size()) {
    return InternalError(fmt::format("chunk [{}, +{}) outside the arena of {} bytes",
                                     chunk.arena_offset, chunk.length, arena.size()));
  }
  if (populator_) populator_->Ensure(chunk.file, chunk.arena_offset, chunk.length);
  return std::span<std::byte>(arena.data() + chunk.arena_offset, chunk.length);
}

Result<TensorMap> HostSink::Finish() {
  StopPopulating();
  TensorMap out;
  for (size_t i = 0; i < plan_->files.size(); ++i) {
    const plan::FilePlan& f = plan_->files[i];
    const std::shared_ptr<HostArena>& arena = arenas_[i];
    for (const plan::PlannedTensor& pt : f.tensors) {
      const TensorInfo& t = f.info(pt);
      std::byte* data = nullptr;
      if (arena->data() != nullptr && !pt.segments.empty()) {
        FL_ASSIGN_OR_RETURN(uint64_t at, f.ArenaOffset(pt.segments.front().offset));
        data = arena->data() + at;
        // A part made of several runs (a column slice) is gathered in place: every run moves to
        // an arena offset at or below its own, in order, so no run is overwritten before it moved.
        uint64_t filled = pt.segments.front().bytes;
        for (size_t k = 1; k < pt.segments.size(); ++k) {
          const plan::Segment& seg = pt.segments[k];
          FL_ASSIGN_OR_RETURN(uint64_t from, f.ArenaOffset(seg.offset));
          std::memmove(data + filled, arena->data() + from, seg.bytes);
          filled += seg.bytes;
        }
      } else if (arena->data() != nullptr) {
        data = arena->data();  // an empty tensor
      }
      std::string name = QualifiedTensorName(f.component, t.name);
      Tensor tensor(name, t.dtype, pt.shape, Device{}, data, pt.bytes(), arena);
      if (!out.emplace(name, std::move(tensor)).second) {
        return DataLossError(fmt::format(
            "tensor '{}' appears twice in the model ({} and another file)", name, f.path));
      }
    }
  }
  arenas_.clear();
  return out;
}

void HostSink::Abort() {
  StopPopulating();
  arenas_.clear();
}

}  // namespace flashload::sink
