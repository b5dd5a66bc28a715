#include "dist/mpi_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>
#include <utility>

namespace flashload::dist {
namespace {

// Agree() cuts longer messages: a status message is a sentence, not a payload.
constexpr int64_t kMaxAgreeMessage = 64 << 10;
// Tags cycle below the smallest MPI_TAG_UB the standard allows.
constexpr uint64_t kTagCycle = 32767;

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

std::string JoinRanks(const std::set<int>& ranks) {
  std::string out;
  for (int r : ranks) out += fmt::format("{}{}", out.empty() ? "" : ", ", r);
  return out;
}

// Tests `requests` until all completed (true) or `deadline` passed (false). `statuses` gets one
// entry per request when not null. An MPI error (of the call or of one request) is returned.
Result<bool> TestUntil(std::span<MPI_Request> requests, std::vector<MPI_Status>* statuses,
                       Deadline deadline, std::string_view what) {
  if (statuses != nullptr) statuses->resize(requests.size());
  MPI_Status* st = statuses != nullptr ? statuses->data() : MPI_STATUSES_IGNORE;
  for (;;) {
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, st);
    if (rc == MPI_ERR_IN_STATUS && statuses != nullptr) {
      for (const MPI_Status& s : *statuses) {
        if (s.MPI_ERROR != MPI_SUCCESS && s.MPI_ERROR != MPI_ERR_PENDING) {
          return MpiErrorToStatus(s.MPI_ERROR, what);
        }
      }
    }
    if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, what);
    if (done) return true;
    if (deadline.expired()) return false;
    // Open MPI progresses transfers inside MPI calls: keep testing (as MPI_Wait would), but give
    // the core to another runnable thread if there is one.
    std::this_thread::yield();
  }
}

StatusCode CodeFromWire(int64_t code) {
  if (code <= 0 || code > static_cast<int64_t>(StatusCode::kInternal)) return StatusCode::kInternal;
  return static_cast<StatusCode>(code);
}

}  // namespace

Status MpiErrorToStatus(int mpi_error, std::string_view what) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(mpi_error, text, &length) != MPI_SUCCESS) {
    std::snprintf(text, sizeof(text), "unknown MPI error %d", mpi_error);
    length = static_cast<int>(std::strlen(text));
  }
  int error_class = mpi_error;
  MPI_Error_class(mpi_error, &error_class);
  StatusCode code = StatusCode::kIoError;
  switch (error_class) {
    case MPI_ERR_TRUNCATE:
    case MPI_ERR_COUNT:
    case MPI_ERR_ARG:
    case MPI_ERR_BUFFER:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_RANK:
    case MPI_ERR_COMM:
      code = StatusCode::kInvalidArgument;
      break;
    case MPI_ERR_NO_MEM:
      code = StatusCode::kResourceExhausted;
      break;
    default:
      break;
  }
  return Status(code, fmt::format("{}: {} (MPI error class {})", what,
                                  std::string_view(text, length), error_class));
}

// ---- MpiSession ------------------------------------------------------------------------------

Result<std::unique_ptr<MpiSession>> MpiSession::Start() {
  std::unique_ptr<MpiSession> session(new MpiSession());
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      return MpiErrorToStatus(rc, "MPI_Init_thread (starting MPI for tensor-parallel loading)");
    }
    session->initialized_here_ = true;
  } else if (MpiFinalized()) {
    return FailedPreconditionError(
        "MPI was already finalized in this process and cannot start again; start the MPI "
        "session before the application finalizes MPI");
  }
  MPI_Query_thread(&session->thread_level_);
  MPI_Comm_rank(MPI_COMM_WORLD, &session->world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &session->world_size_);
  return session;
}

MpiSession::~MpiSession() {
  if (initialized_here_ && !MpiFinalized()) MPI_Finalize();
}

bool MpiSession::LaunchedByMpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return true;
  }
  return false;
}

// ---- MpiCommunicator -------------------------------------------------------------------------

struct MpiCommunicator::Buffers {
  std::vector<int64_t> ints_out, ints_in;
  std::vector<int> counts, displacements;
  std::string bytes_out;
  std::vector<char> bytes_in;
};

MpiCommunicator::MpiCommunicator(MPI_Comm comm, int rank, int size, MpiCommunicatorOptions options)
    : comm_(comm), rank_(rank), size_(size), options_(options) {}

Result<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(MPI_Comm comm,
                                                                 MpiCommunicatorOptions options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized || MpiFinalized()) {
    return FailedPreconditionError(
        "MPI communicator: MPI is not running in this process; start it first (MpiSession::Start "
        "or MPI_Init_thread)");
  }
  if (options.max_message_bytes == 0 || options.max_message_bytes > size_t{INT_MAX}) {
    return InvalidArgumentError(fmt::format(
        "MPI communicator: max_message_bytes {} is outside 1 to {} (an MPI count is an int)",
        options.max_message_bytes, INT_MAX));
  }
  MPI_Comm dup = MPI_COMM_NULL;
  int rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Comm_dup (flashload's communicator)");
  rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(dup, &rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(dup, &size);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&dup);
    return MpiErrorToStatus(rc, "setting up flashload's MPI communicator");
  }
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(dup, rank, size, options));
}

MpiCommunicator::~MpiCommunicator() {
  if (!broken_.ok()) {
    // Abandoned operations may still write into these buffers while the job lives.
    for (std::unique_ptr<Buffers>& b : abandoned_) (void)b.release();
    return;
  }
  if (comm_ != MPI_COMM_NULL && !MpiFinalized()) MPI_Comm_free(&comm_);
}

void MpiCommunicator::AbortJob(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; should it, the process still ends
}

Status MpiCommunicator::CheckUsable(const char* what) const {
  if (broken_.ok()) return Status::Ok();
  return FailedPreconditionError(fmt::format(
      "mpi (rank {} of {}): cannot run {}: the communicator is unusable since an earlier "
      "collective failed ({}); abort the job (MpiCommunicator::AbortJob)",
      rank_, size_, what, broken_.ToString()));
}

Status MpiCommunicator::Expire(const char* what, std::string_view detail) {
  broken_ = DeadlineExceededError(fmt::format(
      "mpi (rank {} of {}): {} (collective #{}) did not complete by its deadline: {}; MPI cannot "
      "take back a collective, so this communicator is unusable: abort the job "
      "(MpiCommunicator::AbortJob)",
      rank_, size_, what, collectives_, detail));
  return broken_;
}

Status MpiCommunicator::Wait(std::span<MPI_Request> requests, const char* what, Deadline deadline,
                             std::unique_ptr<Buffers>& buffers) {
  Result<bool> done = TestUntil(requests, nullptr, deadline, what);
  if (done.ok() && *done) return Status::Ok();
  // Expired, or an MPI error: the operation may still be in flight and write into `buffers`.
  abandoned_.push_back(std::move(buffers));
  if (!done.ok()) {
    broken_ = done.status().WithContext(
        fmt::format("mpi (rank {} of {}), collective #{}", rank_, size_, collectives_));
    return broken_;
  }
  return Expire(what, "not every rank arrived (MPI does not say which)");
}

Status MpiCommunicator::Agree(const Status& local, Deadline deadline) {
  FL_RETURN_IF_ERROR(CheckUsable("Agree"));
  ++collectives_;
  auto b = std::make_unique<Buffers>();
  const int64_t my_length = std::min<int64_t>(local.message().size(), kMaxAgreeMessage);
  b->ints_out = {static_cast<int64_t>(local.code()), local.ok() ? 0 : my_length};
  b->ints_in.assign(2 * size_, 0);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc = MPI_Iallgather(b->ints_out.data(), 2, MPI_INT64_T, b->ints_in.data(), 2, MPI_INT64_T,
                          comm_, &request);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Iallgather (Agree: status codes)");
  FL_RETURN_IF_ERROR(Wait({&request, 1}, "Agree", deadline, b));

  int lowest = -1;
  for (int r = 0; r < size_ && lowest < 0; ++r) {
    if (b->ints_in[2 * r] != 0) lowest = r;
  }
  if (lowest < 0) return Status::Ok();
  const int64_t length = std::clamp<int64_t>(b->ints_in[2 * lowest + 1], 0, kMaxAgreeMessage);
  if (length > 0) {
    // The lowest failing rank's message, to every rank (the others contribute nothing).
    if (lowest == rank_) b->bytes_out.assign(local.message().substr(0, length));
    b->counts.assign(size_, 0);
    b->counts[lowest] = static_cast<int>(length);
    b->displacements.assign(size_, 0);
    b->bytes_in.assign(length, '\0');
    rc = MPI_Iallgatherv(b->bytes_out.data(), static_cast<int>(b->bytes_out.size()), MPI_CHAR,
                         b->bytes_in.data(), b->counts.data(), b->displacements.data(), MPI_CHAR,
                         comm_, &request);
    if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Iallgatherv (Agree: the message)");
    FL_RETURN_IF_ERROR(Wait({&request, 1}, "Agree", deadline, b));
  }
  if (lowest == rank_) return local;
  return Status(CodeFromWire(b->ints_in[2 * lowest]),
                fmt::format("rank {}: {}", lowest, std::string_view(b->bytes_in.data(), length)));
}

Result<std::vector<std::string>> MpiCommunicator::AllGather(std::string_view mine,
                                                            Deadline deadline) {
  FL_RETURN_IF_ERROR(CheckUsable("AllGather"));
  ++collectives_;
  auto b = std::make_unique<Buffers>();
  b->bytes_out.assign(mine);  // owned: an abandoned operation may still read it
  b->ints_out = {static_cast<int64_t>(mine.size())};
  b->ints_in.assign(size_, 0);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc = MPI_Iallgather(b->ints_out.data(), 1, MPI_INT64_T, b->ints_in.data(), 1, MPI_INT64_T,
                          comm_, &request);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Iallgather (AllGather: lengths)");
  FL_RETURN_IF_ERROR(Wait({&request, 1}, "AllGather", deadline, b));

  int64_t total = 0;
  for (int64_t n : b->ints_in) total += n;
  if (total > INT_MAX) {
    return InvalidArgumentError(fmt::format(
        "mpi (rank {} of {}): AllGather (collective #{}) of {} bytes in all is more than one MPI "
        "operation carries ({} bytes); gather less per rank",
        rank_, size_, collectives_, total, INT_MAX));
  }
  b->counts.resize(size_);
  b->displacements.resize(size_);
  int offset = 0;
  for (int r = 0; r < size_; ++r) {
    b->counts[r] = static_cast<int>(b->ints_in[r]);
    b->displacements[r] = offset;
    offset += b->counts[r];
  }
  b->bytes_in.resize(std::max<int64_t>(total, 1));
  rc = MPI_Iallgatherv(b->bytes_out.data(), static_cast<int>(b->bytes_out.size()), MPI_CHAR,
                       b->bytes_in.data(), b->counts.data(), b->displacements.data(), MPI_CHAR,
                       comm_, &request);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Iallgatherv (AllGather: bytes)");
  FL_RETURN_IF_ERROR(Wait({&request, 1}, "AllGather", deadline, b));

  std::vector<std::string> gathered;
  gathered.reserve(size_);
  for (int r = 0; r < size_; ++r) {
    gathered.emplace_back(b->bytes_in.data() + b->displacements[r], b->counts[r]);
  }
  return gathered;
}

Status MpiCommunicator::AllToAll(std::span<const std::span<const std::byte>> send,
                                 std::span<const std::span<std::byte>> recv, Deadline deadline) {
  FL_RETURN_IF_ERROR(CheckUsable("AllToAll"));
  ++collectives_;
  if (send.size() != static_cast<size_t>(size_) || recv.size() != static_cast<size_t>(size_)) {
    return InvalidArgumentError(fmt::format(
        "mpi (rank {} of {}): AllToAll (collective #{}) got {} send and {} receive buffers; pass "
        "one of each per rank",
        rank_, size_, collectives_, send.size(), recv.size()));
  }
  if (send[rank_].size() != recv[rank_].size()) {
    return InvalidArgumentError(fmt::format(
        "mpi (rank {} of {}): AllToAll (collective #{}) sends {} bytes to itself into a receive "
        "buffer of {} bytes; both sides must agree on every size",
        rank_, size_, collectives_, send[rank_].size(), recv[rank_].size()));
  }
  const int tag = static_cast<int>(collectives_ % kTagCycle);
  const size_t max_message = options_.max_message_bytes;

  // One entry per message: receives first (posted before the sends, so eager messages land in
  // place), then sends.
  struct Message {
    int peer;
    int bytes;
    bool receive;
  };
  std::vector<Message> messages;
  std::vector<MPI_Request> requests;
  auto post = [&](bool receive, int peer, std::byte* data, size_t total) -> Status {
    size_t offset = 0;
    do {
      const int bytes = static_cast<int>(std::min(max_message, total - offset));
      MPI_Request request = MPI_REQUEST_NULL;
      const int rc = receive
                         ? MPI_Irecv(data + offset, bytes, MPI_BYTE, peer, tag, comm_, &request)
                         : MPI_Isend(data + offset, bytes, MPI_BYTE, peer, tag, comm_, &request);
      if (rc != MPI_SUCCESS) {
        broken_ = MpiErrorToStatus(
            rc,
            fmt::format("mpi (rank {} of {}): AllToAll (collective #{}): {} rank {}", rank_, size_,
                        collectives_, receive ? "MPI_Irecv from" : "MPI_Isend to", peer));
        return broken_;
      }
      requests.push_back(request);
      messages.push_back({peer, bytes, receive});
      offset += bytes;
    } while (offset < total);
    return Status::Ok();
  };
  for (int i = 1; i < size_; ++i) {
    const int peer = (rank_ + size_ - i) % size_;
    FL_RETURN_IF_ERROR(post(true, peer, recv[peer].data(), recv[peer].size()));
  }
  for (int i = 1; i < size_; ++i) {
    const int peer = (rank_ + i) % size_;
    FL_RETURN_IF_ERROR(
        post(false, peer, const_cast<std::byte*>(send[peer].data()), send[peer].size()));
  }
  if (!send[rank_].empty()) {
    std::memcpy(recv[rank_].data(), send[rank_].data(), send[rank_].size());
  }

  std::vector<MPI_Status> statuses;
  Result<bool> done = TestUntil(requests, &statuses, deadline, "AllToAll");
  if (!done.ok()) {
    broken_ = done.status().WithContext(
        fmt::format("mpi (rank {} of {}), collective #{}", rank_, size_, collectives_));
    return broken_;
  }
  if (!*done) {
    // Name the peers whose bytes did not all arrive, take back the receives (so the caller's
    // buffers are no longer written) and let go of the sends.
    std::set<int> missing;
    for (size_t i = 0; i < requests.size(); ++i) {
      int complete = 0;
      MPI_Request_get_status(requests[i], &complete, MPI_STATUS_IGNORE);
      if (messages[i].receive && !complete) {
        missing.insert(messages[i].peer);
        MPI_Cancel(&requests[i]);
        const Deadline grace = Deadline::In(std::chrono::seconds(1));
        int cancelled = 0;
        while (!cancelled && !grace.expired())
          MPI_Test(&requests[i], &cancelled, MPI_STATUS_IGNORE);
      }
      if (requests[i] != MPI_REQUEST_NULL) MPI_Request_free(&requests[i]);
    }
    return Expire("AllToAll", missing.empty()
                                  ? std::string("the bytes sent did not all leave")
                                  : fmt::format("the bytes from rank(s) {} did not all arrive",
                                                JoinRanks(missing)));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].receive) continue;
    int count = 0;
    MPI_Get_count(&statuses[i], MPI_BYTE, &count);
    if (count != messages[i].bytes) {
      return InvalidArgumentError(fmt::format(
          "mpi (rank {} of {}): AllToAll (collective #{}): rank {} sent a message of {} bytes "
          "where {} were expected; both sides must agree on every size",
          rank_, size_, collectives_, messages[i].peer, count, messages[i].bytes));
    }
  }
  return Status::Ok();
}

}  // namespace flashload::dist
