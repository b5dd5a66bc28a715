// ThreadCommunicator: the ranks of a tensor-parallel job as threads of one process.
//
// A ThreadWorld of N ranks is created once; each rank's thread takes its communicator with
// Join(rank) and calls the collectives of flashload/communicator.h on it. The unit tests of the
// tensor-parallel loader run their ranks this way, and so can an application that drives several
// GPUs from one process.
//
// How a collective runs: the ranks meet in rounds, one round per collective, counted by a
// generation number (every rank calls the same collectives in the same order, so the k-th call of
// each rank is round k). A rank publishes what it brings (a pointer to its status, its string, its
// send and receive spans) and waits until all N ranks have arrived; the last to arrive checks that
// the ranks agree (same collective, sizes that match), then every rank reads the others'
// published data and fills its own results. AllToAll copies straight from the sender's buffer
// into the receiver's (each receiver copies what it receives, in parallel; nothing is staged).
// A rank returns only after every rank has finished reading, so its buffers are no longer used
// once it returns.
//
// Deadlines: the wait for the other ranks to arrive honours the caller's deadline. When it passes
// before every rank arrived, that rank returns kDeadlineExceeded naming the ranks that did not
// arrive, the other waiting ranks return the same error at once, and the world is broken: every
// later collective on any of its communicators fails at once with kFailedPrecondition quoting
// that first error (create a new world to go on). Once all ranks have arrived, the round is
// finished even past the deadline (only memory copies remain, and returning earlier would free
// buffers that peers still read).
//
// Errors that leave the world usable (every rank of the round gets the same kInvalidArgument):
// AllToAll with a number of spans other than size(), or send[q] on rank r not of the size of
// recv[r] on rank q. Ranks calling different collectives in the same round (a bug in the caller,
// after which the ranks are out of step) break the world with kFailedPrecondition.
//
// Buffers: host memory; send and receive buffers must not overlap. The spans (and the arrays of
// spans) must stay valid for the call.
//
// Thread-safety: ThreadWorld is thread-safe. A ThreadCommunicator runs one collective at a time,
// called from one thread at a time (each rank normally has its own thread).
//
// Ownership: each communicator shares ownership of its world; the world lives until the last of
// its communicators (and the creator's pointer) is gone.
#ifndef FLASHLOAD_DIST_THREAD_COMMUNICATOR_H_
#define FLASHLOAD_DIST_THREAD_COMMUNICATOR_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/communicator.h"
#include "flashload/deadline.h"
#include "flashload/status.h"

namespace flashload::dist {

class ThreadCommunicator;

class ThreadWorld : public std::enable_shared_from_this<ThreadWorld> {
 public:
  // A world of `size` ranks (1 or more; kInvalidArgument otherwise).
  static Result<std::shared_ptr<ThreadWorld>> Create(int size);
  // A world and the communicators of all its ranks, index = rank.
  static Result<std::vector<std::unique_ptr<ThreadCommunicator>>> CreateCommunicators(int size);

  ThreadWorld(const ThreadWorld&) = delete;
  ThreadWorld& operator=(const ThreadWorld&) = delete;

  int size() const { return size_; }

  // The communicator of `rank`. kInvalidArgument for a rank outside [0, size()),
  // kFailedPrecondition when that rank was already joined (each rank has one communicator).
  Result<std::unique_ptr<ThreadCommunicator>> Join(int rank);

  // OK while the world is usable; otherwise the error that broke it.
  Status broken() const;

 private:
  friend class ThreadCommunicator;

  enum class Op { kAgree, kAllGather, kAllToAll };
  static const char* OpName(Op op);

  // What one rank brings to a round; the pointers borrow from the caller for the call.
  struct Contribution {
    Op op = Op::kAgree;
    const Status* status = nullptr;  // Agree
    std::string_view gathered;       // AllGather
    std::span<const std::span<const std::byte>> send;
    std::span<const std::span<std::byte>> recv;
  };

  explicit ThreadWorld(int size);

  // Runs one round for `rank`: publishes `mine`, waits for every rank (until `deadline`), then
  // calls `exchange` with every rank's contribution (outside the lock; no one writes them until
  // all ranks have returned from `exchange`). Returns the round's status: OK, the agreement check
  // error, or the deadline / broken-world error (then `exchange` was not called).
  Status RunRound(int rank, const Contribution& mine, Deadline deadline,
                  const std::function<void(const std::vector<Contribution>&)>& exchange);
  // Checks that the contributions of a full round agree; called by the last rank to arrive.
  Status CheckRound() const;

  const int size_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> joined_;                 // guarded by mu_
  uint64_t round_ = 0;                       // the round being gathered; guarded by mu_
  uint64_t rounds_gathered_ = 0;             // rounds whose ranks all arrived; guarded by mu_
  int arrived_ = 0;                          // in round_; guarded by mu_
  int finished_ = 0;                         // ranks done reading in round_; guarded by mu_
  std::vector<bool> present_;                // arrived in round_; guarded by mu_
  std::vector<Contribution> contributions_;  // of round_; written under mu_ before gathering
  Status round_status_;                      // CheckRound() of round_; guarded by mu_
  Status broken_;                            // guarded by mu_
};

class ThreadCommunicator final : public Communicator {
 public:
  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }
  std::string name() const override { return "threads"; }

  Status Agree(const Status& local, Deadline deadline) override;
  Result<std::vector<std::string>> AllGather(std::string_view mine, Deadline deadline) override;
  Status AllToAll(std::span<const std::span<const std::byte>> send,
                  std::span<const std::span<std::byte>> recv, Deadline deadline) override;

  const std::shared_ptr<ThreadWorld>& world() const { return world_; }

 private:
  friend class ThreadWorld;
  ThreadCommunicator(std::shared_ptr<ThreadWorld> world, int rank)
      : world_(std::move(world)), rank_(rank) {}

  std::shared_ptr<ThreadWorld> world_;
  const int rank_;
};

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_THREAD_COMMUNICATOR_H_
