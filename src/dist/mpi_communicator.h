// MpiCommunicator: the ranks of a tensor-parallel job as the processes of an MPI job (mpirun).
//
// MpiSession starts MPI for a process that has not (MPI_Init_thread, MPI_THREAD_SERIALIZED asked)
// and finalizes it on destruction, only then; an application that runs MPI itself keeps doing so.
//
// MpiCommunicator wraps a duplicate of an MPI communicator (MPI_COMM_WORLD by default), so
// flashload's messages never match the application's, with MPI_ERRORS_RETURN on the duplicate so
// an MPI error comes back as a Status (MPI_Error_string text) instead of ending the job.
//
// How the collectives run, each one a nonblocking MPI operation tested (MPI_Testall) until it
// completes or the deadline passes:
// - Agree(): MPI_Iallgather of {status code, message length} from every rank; when a rank failed,
//   MPI_Iallgatherv of the lowest failing rank's message (every other rank contributes 0 bytes).
//   Messages longer than 64 KiB are cut there.
// - AllGather(): MPI_Iallgather of the lengths, then MPI_Iallgatherv of the bytes. The bytes of all
//   ranks together must fit an MPI count (2 GiB - 1); above that every rank gets kInvalidArgument.
// - AllToAll(): a pair of point-to-point messages per peer (MPI_Isend / MPI_Irecv straight from and
//   into the caller's spans, no staging; MPI_Ialltoallv would need every span inside one buffer
//   at int displacements). A pair's bytes go in messages of at most max_message_bytes (1 GiB by
//   default: MPI counts are int); every pair exchanges at least one (possibly empty) message, so a
//   rank that does not arrive is always noticed and named. The bytes to itself are copied with
//   memcpy. Received sizes are checked: a peer that sends more or fewer bytes than expected is
//   kInvalidArgument naming both ranks.
//
// Deadlines: MPI cannot cancel a collective. When the deadline passes first, the call returns
// kDeadlineExceeded naming the collective (and, for AllToAll, the ranks whose bytes did not
// arrive), and the communicator is broken: later calls fail at once with kFailedPrecondition. The
// job should then be aborted (AbortJob()): the abandoned operation stays posted, and a late rank
// may still complete it. The communicator keeps the buffers of an abandoned Agree or AllGather
// alive for that reason (they are never freed); the pending receives of an abandoned AllToAll are
// cancelled, so the caller's receive buffers are free again, but a pending send may still read its
// send buffer until the job ends.
//
// Errors: arguments that are wrong on one rank (a number of spans other than size()) are
// kInvalidArgument on that rank alone, before anything is sent; the other ranks then reach their
// deadline. MPI errors become kIoError (kInvalidArgument for truncation, kResourceExhausted for
// memory) with MPI's own text.
//
// Thread-safety: one collective at a time per communicator, as flashload/communicator.h says.
// With MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE (thread_level()) any thread may call; with
// less, only the thread that initialized MPI.
//
// Lifetime: destroy every MpiCommunicator before the MpiSession (MPI_Finalize) and before the
// application finalizes MPI; the destructor frees the duplicate (MPI_Comm_free) unless MPI is
// already finalized or the communicator is broken.
#ifndef FLASHLOAD_DIST_MPI_COMMUNICATOR_H_
#define FLASHLOAD_DIST_MPI_COMMUNICATOR_H_

// The C API only: the deprecated MPI C++ bindings are not used (and warn under -Wextra).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/communicator.h"
#include "flashload/deadline.h"
#include "flashload/status.h"

namespace flashload::dist {

// A Status for an MPI return code: "<what>: <MPI_Error_string> (MPI error class <c>)".
Status MpiErrorToStatus(int mpi_error, std::string_view what);

class MpiSession {
 public:
  // Initializes MPI unless it already is (MPI_Init_thread asking for MPI_THREAD_SERIALIZED).
  // kFailedPrecondition when MPI was already finalized in this process (it cannot start twice);
  // an MPI error otherwise.
  static Result<std::unique_ptr<MpiSession>> Start();
  // MPI_Finalize, only when Start() initialized MPI (and it was not finalized since).
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // True when a launcher's environment is present (OMPI_COMM_WORLD_SIZE from Open MPI's mpirun,
  // PMI_SIZE or PMIX_RANK from other launchers and Slurm). Reads the environment only: callable
  // before MPI is started, to decide whether to start it.
  static bool LaunchedByMpirun();

  // True when the process runs as part of a launched job: world size > 1 or LaunchedByMpirun().
  bool under_mpirun() const { return world_size_ > 1 || LaunchedByMpirun(); }
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE, as MPI provides it.
  int thread_level() const { return thread_level_; }
  // True when Start() initialized MPI (and will finalize it).
  bool initialized_here() const { return initialized_here_; }

 private:
  MpiSession() = default;
  bool initialized_here_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = 0;
};

struct MpiCommunicatorOptions {
  // The largest message of an AllToAll (MPI counts are int); larger transfers between two ranks
  // go in several messages. 1 to INT_MAX.
  size_t max_message_bytes = size_t{1} << 30;
};

class MpiCommunicator final : public Communicator {
 public:
  // A communicator over a duplicate of `comm`. Collective over `comm` (MPI_Comm_dup): every rank
  // of `comm` calls it. kFailedPrecondition when MPI is not initialized, kInvalidArgument for bad
  // options, an MPI error otherwise.
  static Result<std::unique_ptr<MpiCommunicator>> Create(MPI_Comm comm = MPI_COMM_WORLD,
                                                         MpiCommunicatorOptions options = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  Status Agree(const Status& local, Deadline deadline) override;
  Result<std::vector<std::string>> AllGather(std::string_view mine, Deadline deadline) override;
  Status AllToAll(std::span<const std::span<const std::byte>> send,
                  std::span<const std::span<std::byte>> recv, Deadline deadline) override;

  // The duplicate flashload communicates on.
  MPI_Comm comm() const { return comm_; }
  // OK while usable; the error that broke it otherwise.
  const Status& broken() const { return broken_; }

  // Ends the whole job (MPI_Abort on MPI_COMM_WORLD with `code`, the exit status mpirun reports):
  // what to do after a kDeadlineExceeded, since MPI cannot take back a collective.
  [[noreturn]] static void AbortJob(int code);

 private:
  // Buffers an MPI operation in flight writes into; leaked when the operation is abandoned.
  struct Buffers;

  MpiCommunicator(MPI_Comm comm, int rank, int size, MpiCommunicatorOptions options);

  // kFailedPrecondition quoting broken_, when broken.
  Status CheckUsable(const char* what) const;
  // Tests `requests` until all complete or `deadline` passes. On expiry the communicator is
  // broken and `buffers` (if any) is kept alive for good.
  Status Wait(std::span<MPI_Request> requests, const char* what, Deadline deadline,
              std::unique_ptr<Buffers>& buffers);
  // The deadline error of `what`; breaks the communicator.
  Status Expire(const char* what, std::string_view detail);

  MPI_Comm comm_;
  const int rank_;
  const int size_;
  const MpiCommunicatorOptions options_;
  uint64_t collectives_ = 0;  // calls so far, for messages and message tags
  Status broken_;
  std::vector<std::unique_ptr<Buffers>> abandoned_;
};

}  // namespace flashload::dist

#endif  // FLASHLOAD_DIST_MPI_COMMUNICATOR_H_
