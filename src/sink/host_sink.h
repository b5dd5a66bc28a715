// HostSink: reads land directly in one HostArena per file; tensors are cut from the arenas.
#ifndef FLASHLOAD_SINK_HOST_SINK_H_
#define FLASHLOAD_SINK_HOST_SINK_H_

#include <memory>
#include <vector>

#include "sink/host_arena.h"
#include "sink/sink.h"

namespace flashload::sink {

class HostSink final : public Sink {
 public:
  Status Prepare(const engine::LoadPlan& plan) override;
  Result<std::span<std::byte>> Acquire(const engine::Chunk& chunk) override;
  Status Commit(const engine::Chunk& chunk) override { return Status(); }
  Result<TensorMap> Finish() override;
  void Abort() override;

  const std::vector<std::shared_ptr<HostArena>>& arenas() const { return arenas_; }

 private:
  const engine::LoadPlan* plan_ = nullptr;
  std::vector<std::shared_ptr<HostArena>> arenas_;
};

// Full tensor name inside a load: "<component>/<name>", or "<name>" without a component.
std::string QualifiedTensorName(const std::string& component, const std::string& name);

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_SINK_H_
