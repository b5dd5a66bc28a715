#include "sink/host_sink.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>

namespace flashload::sink {

std::string QualifiedTensorName(const std::string& component, const std::string& name) {
  return component.empty() ? name : component + "/" + name;
}

namespace {

// Pre-faults `arenas` (writable, contents kept) in 32 MiB steps until done or `stop`.
void PrefaultArenas(std::vector<std::shared_ptr<HostArena>> arenas, const std::atomic<bool>* stop) {
  constexpr uint64_t kStep = 32ull << 20;
  for (const std::shared_ptr<HostArena>& a : arenas) {
    for (uint64_t off = 0; off < a->size() && !stop->load(std::memory_order_relaxed);
         off += kStep) {
      const uint64_t len = std::min(kStep, a->size() - off);
      // Best effort: a kernel without MADV_POPULATE_WRITE (< 5.14) just faults on first write.
      if (madvise(a->data() + off, (len + 4095) & ~uint64_t{4095}, MADV_POPULATE_WRITE) != 0) {
        return;
      }
    }
  }
}

}  // namespace

HostSink::~HostSink() { StopPrefault(); }

void HostSink::StopPrefault() {
  stop_prefault_ = true;
  if (prefault_.joinable()) prefault_.join();
}

Status HostSink::Prepare(const engine::LoadPlan& plan) {
  StopPrefault();
  stop_prefault_ = false;
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
  std::vector<std::shared_ptr<HostArena>> remote;
  for (size_t i = 0; i < plan.files.size(); ++i) {
    if (!plan.files[i].mapped && plan.files[i].path.find("://") != std::string::npos &&
        arenas_[i]->data() != nullptr) {
      remote.push_back(arenas_[i]);
    }
  }
  if (!remote.empty()) prefault_ = std::thread(PrefaultArenas, std::move(remote), &stop_prefault_);
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
  StopPrefault();
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

void HostSink::Abort() {
  StopPrefault();
  arenas_.clear();
}

}  // namespace flashload::sink
