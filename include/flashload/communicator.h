// Communicator: the ranks of a tensor-parallel job, as the distributed engine a server already
// runs sees them (MPI, NCCL, a torch.distributed process group, or threads in tests).
//
// Tensor-parallel loading (flashload/dist.h) needs three collectives. Every rank of the group
// calls each of them, in the same order, with the same deadline; a rank that does not arrive by
// the deadline makes the others return kDeadlineExceeded (no rank waits forever), and after that
// the communicator may be unusable (MPI: the caller aborts the job).
//
// - Agree(): the first failure across the ranks, so a failure on one rank fails every rank.
// - AllGather(): a byte string from every rank (the per-rank reports).
// - AllToAll(): bytes from every rank to every rank (read-once-then-share). Sizes are known to
//   both sides beforehand: send[q] on rank r has exactly the size of recv[r] on rank q.
//
// Buffers are host memory, or device memory of device() for a GPU communicator (NCCL).
//
// Thread-safety: one collective at a time per communicator, from one thread.
#ifndef FLASHLOAD_COMMUNICATOR_H_
#define FLASHLOAD_COMMUNICATOR_H_

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/deadline.h"
#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // For reports: "mpi", "nccl", "torch.distributed (gloo)", "threads".
  virtual std::string name() const = 0;
  // Where AllToAll() buffers live.
  virtual Device device() const { return Device{}; }

  // Every rank passes its own status; every rank gets OK when all passed OK, otherwise the failure
  // of the lowest failing rank with its code and "rank R: " before its message (a rank's own
  // failure comes back unchanged when it is the lowest). kDeadlineExceeded when a rank does not
  // arrive in time, naming the ranks that did not.
  virtual Status Agree(const Status& local, Deadline deadline) = 0;

  // Every rank's `mine`, indexed by rank.
  virtual Result<std::vector<std::string>> AllGather(std::string_view mine, Deadline deadline) = 0;

  // send[q] goes to rank q, recv[r] is filled from rank r (send[rank()] to recv[rank()] too).
  // Both spans have size() entries.
  virtual Status AllToAll(std::span<const std::span<const std::byte>> send,
                          std::span<const std::span<std::byte>> recv, Deadline deadline) = 0;
};

}  // namespace flashload

#endif  // FLASHLOAD_COMMUNICATOR_H_
