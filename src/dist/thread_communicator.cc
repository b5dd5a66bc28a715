#include "dist/thread_communicator.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

namespace flashload::dist {

Result<std::shared_ptr<ThreadWorld>> ThreadWorld::Create(int size) {
  if (size < 1) {
    return InvalidArgumentError(
        fmt::format("thread world: size {} is not a number of ranks; pass 1 or more", size));
  }
  return std::shared_ptr<ThreadWorld>(new ThreadWorld(size));
}

Result<std::vector<std::unique_ptr<ThreadCommunicator>>> ThreadWorld::CreateCommunicators(
    int size) {
  FL_ASSIGN_OR_RETURN(std::shared_ptr<ThreadWorld> world, Create(size));
  std::vector<std::unique_ptr<ThreadCommunicator>> communicators;
  communicators.reserve(size);
  for (int r = 0; r < size; ++r) {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<ThreadCommunicator> c, world->Join(r));
    communicators.push_back(std::move(c));
  }
  return communicators;
}

ThreadWorld::ThreadWorld(int size)
    : size_(size), joined_(size, false), present_(size, false), contributions_(size) {}

Result<std::unique_ptr<ThreadCommunicator>> ThreadWorld::Join(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rank < 0 || rank >= size_) {
    return InvalidArgumentError(
        fmt::format("thread world of {} ranks: rank {} does not exist; join ranks 0 to {}", size_,
                    rank, size_ - 1));
  }
  if (joined_[rank]) {
    return FailedPreconditionError(fmt::format(
        "thread world of {} ranks: rank {} already has its communicator; each rank joins once",
        size_, rank));
  }
  joined_[rank] = true;
  return std::unique_ptr<ThreadCommunicator>(new ThreadCommunicator(shared_from_this(), rank));
}

Status ThreadWorld::broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

const char* ThreadWorld::OpName(Op op) {
  switch (op) {
    case Op::kAgree:
      return "Agree";
    case Op::kAllGather:
      return "AllGather";
    case Op::kAllToAll:
      return "AllToAll";
  }
  return "?";
}

Status ThreadWorld::CheckRound() const {
  const Op op = contributions_[0].op;
  for (int r = 1; r < size_; ++r) {
    if (contributions_[r].op != op) {
      return FailedPreconditionError(fmt::format(
          "thread world of {} ranks, collective #{}: rank 0 called {} but rank {} called {}; "
          "every rank must call the same collectives in the same order",
          size_, round_ + 1, OpName(op), r, OpName(contributions_[r].op)));
    }
  }
  if (op != Op::kAllToAll) return Status::Ok();
  for (int r = 0; r < size_; ++r) {
    const Contribution& c = contributions_[r];
    if (c.send.size() != static_cast<size_t>(size_) ||
        c.recv.size() != static_cast<size_t>(size_)) {
      return InvalidArgumentError(fmt::format(
          "thread world of {} ranks, collective #{} (AllToAll): rank {} passed {} send and {} "
          "receive buffers; pass one of each per rank ({})",
          size_, round_ + 1, r, c.send.size(), c.recv.size(), size_));
    }
  }
  for (int r = 0; r < size_; ++r) {
    for (int q = 0; q < size_; ++q) {
      const size_t sent = contributions_[r].send[q].size();
      const size_t expected = contributions_[q].recv[r].size();
      if (sent != expected) {
        return InvalidArgumentError(fmt::format(
            "thread world of {} ranks, collective #{} (AllToAll): rank {} sends {} bytes to rank "
            "{}, which expects {} bytes from it; both sides must agree on every size",
            size_, round_ + 1, r, sent, q, expected));
      }
    }
  }
  return Status::Ok();
}

Status ThreadWorld::RunRound(
    int rank, const Contribution& mine, Deadline deadline,
    const std::function<void(const std::vector<Contribution>&)>& exchange) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!broken_.ok()) {
    return FailedPreconditionError(fmt::format(
        "thread world of {} ranks: rank {} cannot run {}: the world is unusable since an earlier "
        "collective failed ({}); create a new world",
        size_, rank, OpName(mine.op), broken_.ToString()));
  }
  const uint64_t my_round = round_;
  contributions_[rank] = mine;
  present_[rank] = true;
  if (++arrived_ == size_) {
    round_status_ = CheckRound();
    if (round_status_.code() == StatusCode::kFailedPrecondition) broken_ = round_status_;
    rounds_gathered_ = my_round + 1;
    cv_.notify_all();
  } else {
    auto gathered = [&] { return rounds_gathered_ > my_round || !broken_.ok(); };
    if (deadline.infinite()) {
      cv_.wait(lock, gathered);
    } else if (!cv_.wait_until(lock, deadline.when(), gathered)) {
      std::string missing;
      for (int r = 0; r < size_; ++r) {
        if (!present_[r]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
      }
      broken_ = DeadlineExceededError(fmt::format(
          "thread world of {} ranks, collective #{} ({}): rank(s) {} did not arrive by the "
          "deadline; the world is now unusable",
          size_, my_round + 1, OpName(mine.op), missing));
      cv_.notify_all();
      return broken_;
    }
    // Broken while waiting (a peer's deadline passed first): nobody reads this round.
    if (rounds_gathered_ <= my_round) return broken_;
  }
  const Status status = round_status_;
  if (status.ok()) {
    lock.unlock();
    exchange(contributions_);
    lock.lock();
  }
  if (++finished_ == size_) {
    arrived_ = 0;
    finished_ = 0;
    present_.assign(size_, false);
    round_ = my_round + 1;
    cv_.notify_all();
  } else {
    // Only the other ranks' copies remain: wait without a deadline, since returning would let the
    // caller free buffers they still read.
    cv_.wait(lock, [&] { return round_ > my_round; });
  }
  return status;
}

Status ThreadCommunicator::Agree(const Status& local, Deadline deadline) {
  ThreadWorld::Contribution mine;
  mine.op = ThreadWorld::Op::kAgree;
  mine.status = &local;
  Status agreed;
  FL_RETURN_IF_ERROR(world_->RunRound(
      rank_, mine, deadline, [&](const std::vector<ThreadWorld::Contribution>& all) {
        for (int r = 0; r < static_cast<int>(all.size()); ++r) {
          const Status& s = *all[r].status;
          if (s.ok()) continue;
          agreed = r == rank_ ? s : Status(s.code(), fmt::format("rank {}: {}", r, s.message()));
          return;
        }
      }));
  return agreed;
}

Result<std::vector<std::string>> ThreadCommunicator::AllGather(std::string_view mine_bytes,
                                                               Deadline deadline) {
  ThreadWorld::Contribution mine;
  mine.op = ThreadWorld::Op::kAllGather;
  mine.gathered = mine_bytes;
  std::vector<std::string> gathered;
  FL_RETURN_IF_ERROR(world_->RunRound(rank_, mine, deadline,
                                      [&](const std::vector<ThreadWorld::Contribution>& all) {
                                        gathered.reserve(all.size());
                                        for (const ThreadWorld::Contribution& c : all)
                                          gathered.emplace_back(c.gathered);
                                      }));
  return gathered;
}

Status ThreadCommunicator::AllToAll(std::span<const std::span<const std::byte>> send,
                                    std::span<const std::span<std::byte>> recv, Deadline deadline) {
  ThreadWorld::Contribution mine;
  mine.op = ThreadWorld::Op::kAllToAll;
  mine.send = send;
  mine.recv = recv;
  return world_->RunRound(rank_, mine, deadline,
                          [&](const std::vector<ThreadWorld::Contribution>& all) {
                            for (size_t r = 0; r < all.size(); ++r) {
                              const std::span<const std::byte> from = all[r].send[rank_];
                              if (!from.empty())
                                std::memcpy(recv[r].data(), from.data(), from.size());
                            }
                          });
}

}  // namespace flashload::dist
