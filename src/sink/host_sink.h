// HostSink: reads land directly in one HostArena per file; tensors are cut from the arenas.
#ifndef FLASHLOAD_SINK_HOST_SINK_H_
#define FLASHLOAD_SINK_HOST_SINK_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "sink/host_arena.h"
#include "sink/sink.h"

namespace flashload::sink {

// Remote files (a "scheme://" path): their reads complete on one event thread, which would also
// take every first-touch page fault of the arena (zeroing fresh pages). A helper thread pre-faults
// those arenas in file order with MADV_POPULATE_WRITE, which never changes bytes already written,
// so it may run beside the reads; it is joined in Finish() and Abort().
class HostSink final : public Sink {
 public:
  ~HostSink() override;
  Status Prepare(const engine::LoadPlan& plan) override;
  Result<std::span<std::byte>> Acquire(const engine::Chunk& chunk) override;
  Status Commit(const engine::Chunk& chunk) override { return Status(); }
  Result<TensorMap> Finish() override;
  void Abort() override;

  const std::vector<std::shared_ptr<HostArena>>& arenas() const { return arenas_; }

 private:
  void StopPrefault();

  const engine::LoadPlan* plan_ = nullptr;
  std::vector<std::shared_ptr<HostArena>> arenas_;
  std::atomic<bool> stop_prefault_{false};
  std::thread prefault_;
};

// Full tensor name inside a load: "<component>/<name>", or "<name>" without a component.
std::string QualifiedTensorName(const std::string& component, const std::string& name);

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_SINK_H_
