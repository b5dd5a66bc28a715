// NcclCommunicator: the ranks of a tensor-parallel job as GPUs, one CUDA device per rank; the
// bytes of AllToAll() move between device buffers over NCCL (NVLink, PCIe, InfiniBand).
//
// Bootstrap: NCCL needs its unique id on every rank before it can connect them. Create() takes
// another communicator over the same ranks (normally the MpiCommunicator of the job): rank 0
// makes the id (ncclGetUniqueId) and every rank receives it through the bootstrap's AllGather();
// then each rank joins (ncclCommInitRankConfig, non-blocking) on its device and the ranks Agree()
// on the outcome, so a rank that failed to join fails every rank.
//
// Collectives:
// - Agree() and AllGather() carry host data: they are the bootstrap's, delegated as they are.
// - AllToAll(): the buffers are device memory of device() (checked with cudaPointerGetAttributes),
//   or all of them host memory: then they are staged through one device allocation (copied in,
//   exchanged, copied back; what LoadSharded() passes). A mix of host and device buffers, or
//   memory of another device, is kInvalidArgument. One NCCL group (ncclGroupStart, an ncclSend and an
//   ncclRecv per peer with bytes to exchange, ncclGroupEnd) on the communicator's own CUDA
//   stream; the bytes to itself are a device-to-device cudaMemcpyAsync on the same stream. Pairs
//   with nothing to exchange send nothing (both sides know the sizes). The call returns once the
//   stream has finished: the received bytes are then in place and the send buffers free.
//   Ordering: the stream does not wait for the caller's work. The send buffers must be fully
//   written (their producing stream synchronized) before the call.
//
// Deadlines: the wait (cudaStreamQuery and ncclCommGetAsyncError, tested until done) honours the
// caller's deadline. When it passes first, the NCCL communicator is aborted (ncclCommAbort, which
// ends the transfers in flight), the call returns kDeadlineExceeded, and this communicator is
// broken: every later AllToAll() fails at once with kFailedPrecondition. An NCCL error (a peer
// gone, a network failure) breaks it the same way, with NCCL's own text (ncclGetLastError).
// Agree() and AllGather() keep the bootstrap's deadline behaviour.
//
// Thread-safety: one collective at a time, as flashload/communicator.h says; any thread may call
// (each call makes device() current and restores the thread's device before returning).
//
// Lifetime: `bootstrap` is borrowed and must outlive this communicator (for MPI: destroy this
// before the MpiCommunicator and the MpiSession). The destructor finalizes NCCL (ncclCommFinalize,
// then ncclCommDestroy), or aborts it when finalizing does not end within a few seconds or the
// communicator is broken.
#ifndef FLASHLOAD_DIST_NCCL_COMMUNICATOR_H_
#define FLASHLOAD_DIST_NCCL_COMMUNICATOR_H_

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/communicator.h"
#include "flashload/deadline.h"
#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload::dist {

class NcclCommunicator final : public Communicator {
 public:
  // Joins the NCCL communicator of `bootstrap`'s ranks on CUDA device `cuda_device`. Collective
  // over `bootstrap` (every rank calls it, with the same deadline). kFailedPrecondition when the
  // device does not exist (no GPU, a bad index), kDeadlineExceeded when a rank did not join in
  // time, an NCCL or CUDA error otherwise (on every rank: "rank R: ..." for another rank's).
  static Result<std::unique_ptr<NcclCommunicator>> Create(Communicator& bootstrap, int cuda_device,
                                                          Deadline deadline);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }
  std::string name() const override { return "nccl"; }
  Device device() const override { return Device{DeviceType::kCuda, cuda_device_}; }

  Status Agree(const Status& local, Deadline deadline) override;
  Result<std::vector<std::string>> AllGather(std::string_view mine, Deadline deadline) override;
  Status AllToAll(std::span<const std::span<const std::byte>> send,
                  std::span<const std::span<std::byte>> recv, Deadline deadline) override;

  // OK while usable; the error that broke it otherwise.
  const Status& broken() const { return broken_; }

 private:
  struct State;  // the NCCL communicator and the CUDA stream

  NcclCommunicator(Communicator& bootstrap, int cuda_device, std::unique_ptr<State> state);

  // Whether `buffer` is CUDA device (or managed) memory.
  bool OnDevice(const void* buffer) const;
  // AllToAll of host buffers: copied into device staging, exchanged, copied back.
  Status HostStagedAllToAll(std::span<const std::span<const std::byte>> send,
                            std::span<const std::span<std::byte>> recv, Deadline deadline);
  // Checks that `buffer` (of rank `peer`'s pair, a send buffer if `sending`) is memory of device().
  Status CheckDeviceBuffer(const void* buffer, size_t bytes, int peer, bool sending) const;
  // Waits for the stream and NCCL until done, an NCCL/CUDA error, or `deadline` (then aborts).
  Status WaitForStream(Deadline deadline);

  Communicator& bootstrap_;
  const int cuda_device_;
  std::unique_ptr<State> state_;
  uint64_t all_to_alls_ = 0;  // calls so far, for messages
  Status broken_;
};

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_NCCL_COMMUNICATOR_H_
