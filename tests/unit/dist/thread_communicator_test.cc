#include "dist/thread_communicator.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "support/status_matchers.h"

namespace flashload::dist {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

constexpr auto kGenerous = std::chrono::seconds(60);

std::vector<std::unique_ptr<ThreadCommunicator>> MakeWorld(int size) {
  Result<std::vector<std::unique_ptr<ThreadCommunicator>>> c =
      ThreadWorld::CreateCommunicators(size);
  EXPECT_THAT(c, IsOk());
  return std::move(c).value();
}

// Runs `body(communicator)` on one thread per rank and joins them.
void RunRanks(std::vector<std::unique_ptr<ThreadCommunicator>>& comms,
              const std::function<void(ThreadCommunicator&)>& body) {
  std::vector<std::thread> threads;
  for (auto& c : comms) threads.emplace_back([&body, &c] { body(*c); });
  for (std::thread& t : threads) t.join();
}

// Bytes that encode where they belong: sender, receiver, round and position.
std::byte PatternByte(int from, int to, int round, size_t i) {
  uint64_t x = (uint64_t(from) << 48) ^ (uint64_t(to) << 40) ^ (uint64_t(round) << 32) ^ i;
  x *= 0x9E3779B97F4A7C15ull;
  return std::byte(x >> 56);
}

// Uneven sizes with zeros: pairs where (from + to + round) % 4 == 0 send nothing.
size_t PairSize(int from, int to, int round) {
  if ((from + to + round) % 4 == 0) return 0;
  return 1 + (from * 131 + to * 17 + round * 7) % 997;
}

// One AllToAll round on `c`; returns the number of wrong bytes received.
size_t AllToAllRound(ThreadCommunicator& c, int round, Status* status) {
  const int n = c.size(), me = c.rank();
  std::vector<std::vector<std::byte>> out(n), in(n);
  std::vector<std::span<const std::byte>> send(n);
  std::vector<std::span<std::byte>> recv(n);
  for (int q = 0; q < n; ++q) {
    out[q].resize(PairSize(me, q, round));
    for (size_t i = 0; i < out[q].size(); ++i) out[q][i] = PatternByte(me, q, round, i);
    send[q] = out[q];
    in[q].assign(PairSize(q, me, round), std::byte{0xEE});
    recv[q] = in[q];
  }
  *status = c.AllToAll(send, recv, Deadline::In(kGenerous));
  size_t wrong = 0;
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < in[r].size(); ++i) wrong += in[r][i] != PatternByte(r, me, round, i);
  }
  return wrong;
}

TEST(ThreadWorldTest, RefusesBadSizesAndRanks) {
  EXPECT_THAT(ThreadWorld::Create(0), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ThreadWorld::Create(-3), StatusIs(StatusCode::kInvalidArgument));
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<ThreadWorld> world, ThreadWorld::Create(2));
  EXPECT_THAT(world->Join(2), StatusIs(StatusCode::kInvalidArgument, HasSubstr("rank 2")));
  EXPECT_THAT(world->Join(-1), StatusIs(StatusCode::kInvalidArgument));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ThreadCommunicator> c1, world->Join(1));
  EXPECT_EQ(c1->rank(), 1);
  EXPECT_EQ(c1->size(), 2);
  EXPECT_EQ(c1->name(), "threads");
  EXPECT_EQ(c1->device(), Device{});
  EXPECT_THAT(world->Join(1), StatusIs(StatusCode::kFailedPrecondition, HasSubstr("already")));
  EXPECT_THAT(world->broken(), IsOk());
}

class ThreadCommunicatorSizeTest : public ::testing::TestWithParam<int> {};

TEST_P(ThreadCommunicatorSizeTest, AllToAllWithUnevenAndZeroSizes) {
  auto comms = MakeWorld(GetParam());
  std::vector<Status> status(GetParam());
  std::vector<size_t> wrong(GetParam());
  RunRanks(comms, [&](ThreadCommunicator& c) {
    for (int round = 0; round < 8; ++round) {
      Status s;
      wrong[c.rank()] += AllToAllRound(c, round, &s);
      if (!s.ok() && status[c.rank()].ok()) status[c.rank()] = s;
    }
  });
  for (int r = 0; r < GetParam(); ++r) {
    EXPECT_THAT(status[r], IsOk()) << "rank " << r;
    EXPECT_EQ(wrong[r], 0u) << "rank " << r;
  }
}

TEST_P(ThreadCommunicatorSizeTest, AgreeWithoutFailureIsOk) {
  auto comms = MakeWorld(GetParam());
  std::vector<Status> agreed(GetParam(), InternalError("not run"));
  RunRanks(comms, [&](ThreadCommunicator& c) {
    agreed[c.rank()] = c.Agree(Status::Ok(), Deadline::In(kGenerous));
  });
  for (const Status& s : agreed) EXPECT_THAT(s, IsOk());
}

TEST_P(ThreadCommunicatorSizeTest, AgreeSpreadsOneFailureToEveryRank) {
  const int n = GetParam();
  const int failing = n - 1;
  auto comms = MakeWorld(n);
  std::vector<Status> agreed(n);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    Status local = c.rank() == failing ? DataLossError("tensor w.0 truncated at byte offset 12")
                                       : Status::Ok();
    agreed[c.rank()] = c.Agree(local, Deadline::In(kGenerous));
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(agreed[r].code(), StatusCode::kDataLoss) << "rank " << r;
    if (r == failing) {
      EXPECT_EQ(agreed[r].message(), "tensor w.0 truncated at byte offset 12");
    } else {
      EXPECT_EQ(agreed[r].message(),
                fmt::format("rank {}: tensor w.0 truncated at byte offset 12", failing));
    }
  }
}

TEST_P(ThreadCommunicatorSizeTest, AllGatherReturnsEveryRanksBytesInRankOrder) {
  const int n = GetParam();
  auto comms = MakeWorld(n);
  std::vector<std::vector<std::string>> got(n);
  std::vector<Status> status(n);
  auto report = [](int r) {
    // Rank 0 sends nothing; the others a string with a NUL inside, longer for higher ranks.
    return r == 0 ? std::string() : std::string("rank\0", 5) + std::string(r * 100, 'a' + r);
  };
  RunRanks(comms, [&](ThreadCommunicator& c) {
    Result<std::vector<std::string>> g = c.AllGather(report(c.rank()), Deadline::In(kGenerous));
    status[c.rank()] = g.status();
    if (g.ok()) got[c.rank()] = std::move(g).value();
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_THAT(status[r], IsOk());
    ASSERT_EQ(got[r].size(), size_t(n));
    for (int q = 0; q < n; ++q) EXPECT_EQ(got[r][q], report(q)) << r << " from " << q;
  }
}

TEST_P(ThreadCommunicatorSizeTest, ManyRoundsOfMixedCollectivesStayInStep) {
  const int n = GetParam();
  auto comms = MakeWorld(n);
  std::vector<int> errors(n, 0);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    for (int round = 0; round < 300; ++round) {
      const Deadline d = Deadline::In(kGenerous);
      switch (round % 3) {
        case 0: {
          Status s;
          errors[c.rank()] += AllToAllRound(c, round, &s) != 0 || !s.ok();
          break;
        }
        case 1: {
          Result<std::vector<std::string>> g =
              c.AllGather(fmt::format("{}/{}", round, c.rank()), d);
          if (!g.ok() || g->size() != size_t(n)) {
            ++errors[c.rank()];
            break;
          }
          for (int q = 0; q < n; ++q) errors[c.rank()] += (*g)[q] != fmt::format("{}/{}", round, q);
          break;
        }
        case 2: {
          // Rank (round % n) fails; everyone must see that rank's round number.
          const int failing = round % n;
          Status local =
              c.rank() == failing ? UnavailableError(fmt::format("round {}", round)) : Status::Ok();
          Status s = c.Agree(local, d);
          errors[c.rank()] +=
              s.code() != StatusCode::kUnavailable ||
              s.message().find(fmt::format("round {}", round)) == std::string_view::npos;
          break;
        }
      }
    }
  });
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[r], 0) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Worlds, ThreadCommunicatorSizeTest, ::testing::Values(1, 2, 4, 8),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return fmt::format("ranks{}", p.param);
                         });

TEST(ThreadCommunicatorTest, AgreeReturnsTheLowestOfSeveralFailures) {
  auto comms = MakeWorld(4);
  std::vector<Status> agreed(4);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    Status local;
    if (c.rank() == 1) local = NotFoundError("tensor a missing");
    if (c.rank() == 2) local = IoError("pread b: EIO");
    if (c.rank() == 3) local = DataLossError("c truncated");
    agreed[c.rank()] = c.Agree(local, Deadline::In(kGenerous));
  });
  EXPECT_THAT(agreed[0], StatusIs(StatusCode::kNotFound, "rank 1: tensor a missing"));
  EXPECT_THAT(agreed[1], StatusIs(StatusCode::kNotFound, "tensor a missing"));
  EXPECT_THAT(agreed[2], StatusIs(StatusCode::kNotFound, "rank 1: tensor a missing"));
  EXPECT_THAT(agreed[3], StatusIs(StatusCode::kNotFound, "rank 1: tensor a missing"));
}

TEST(ThreadCommunicatorTest, ARankThatNeverArrivesFailsTheOthersByTheDeadlineAndBreaksTheWorld) {
  auto comms = MakeWorld(4);
  constexpr auto kDeadline = std::chrono::milliseconds(300);
  constexpr auto kSlack = std::chrono::seconds(3);
  std::vector<Status> first(4), later(4);
  std::vector<Clock::duration> first_took(4), later_took(4);
  std::vector<std::thread> threads;
  for (int r : {0, 1, 3}) {  // rank 2 never arrives
    threads.emplace_back([&, r] {
      auto t0 = Clock::now();
      first[r] = comms[r]->Agree(Status::Ok(), Deadline::In(kDeadline));
      first_took[r] = Clock::now() - t0;
      t0 = Clock::now();
      // An infinite deadline: must still fail at once.
      later[r] = comms[r]->AllGather("x", Deadline::Infinite()).status();
      later_took[r] = Clock::now() - t0;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r : {0, 1, 3}) {
    EXPECT_THAT(first[r], StatusIs(StatusCode::kDeadlineExceeded, HasSubstr("rank(s) 2 did")))
        << "rank " << r;
    EXPECT_LT(first_took[r], kDeadline + kSlack) << "rank " << r;
    EXPECT_THAT(later[r], StatusIs(StatusCode::kFailedPrecondition, HasSubstr("unusable")));
    EXPECT_LT(later_took[r], std::chrono::seconds(1));
  }
  // At least one rank waited for the whole deadline (the others may have been woken by it).
  EXPECT_GE(std::max({first_took[0], first_took[1], first_took[3]}), kDeadline);
  // The late rank fails at once too.
  EXPECT_THAT(comms[2]->Agree(Status::Ok(), Deadline::Infinite()),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("DEADLINE_EXCEEDED")));
  EXPECT_THAT(comms[0]->world()->broken(), StatusIs(StatusCode::kDeadlineExceeded));
}

TEST(ThreadCommunicatorTest, NamesEveryRankThatDidNotArrive) {
  auto comms = MakeWorld(8);
  Status s = comms[5]->Agree(Status::Ok(), Deadline::In(std::chrono::milliseconds(50)));
  EXPECT_THAT(s, StatusIs(StatusCode::kDeadlineExceeded,
                          HasSubstr("collective #1 (Agree): rank(s) 0, 1, 2, 3, 4, 6, 7 did not")));
}

TEST(ThreadCommunicatorTest, PollingDeadlineSucceedsWhenEveryoneIsThere) {
  auto comms = MakeWorld(1);
  EXPECT_THAT(comms[0]->Agree(Status::Ok(), Deadline::Now()), IsOk());
  FL_ASSERT_OK_AND_ASSIGN(std::vector<std::string> g, comms[0]->AllGather("me", Deadline::Now()));
  EXPECT_EQ(g, std::vector<std::string>{"me"});
  // A world of one that polls never breaks; a rank of two polling alone does.
  auto two = MakeWorld(2);
  EXPECT_THAT(two[0]->Agree(Status::Ok(), Deadline::Now()),
              StatusIs(StatusCode::kDeadlineExceeded));
}

TEST(ThreadCommunicatorTest, MismatchedAllToAllSizesFailEveryRankAndKeepTheWorld) {
  auto comms = MakeWorld(2);
  std::vector<Status> status(2), after(2);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    std::vector<std::byte> a(8), b(c.rank() == 1 ? 9 : 8);  // rank 1 expects 9 from rank 0
    std::vector<std::span<const std::byte>> send = {a, a};
    std::vector<std::span<std::byte>> recv = {b, b};
    status[c.rank()] = c.AllToAll(send, recv, Deadline::In(kGenerous));
    after[c.rank()] = c.Agree(Status::Ok(), Deadline::In(kGenerous));
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(status[r], StatusIs(StatusCode::kInvalidArgument,
                                    HasSubstr("rank 0 sends 8 bytes to rank 1, which expects 9")));
    EXPECT_THAT(after[r], IsOk());
  }
}

TEST(ThreadCommunicatorTest, WrongNumberOfBuffersFailsEveryRank) {
  auto comms = MakeWorld(3);
  std::vector<Status> status(3);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    std::vector<std::span<const std::byte>> send(c.rank() == 2 ? 2 : 3);
    std::vector<std::span<std::byte>> recv(3);
    status[c.rank()] = c.AllToAll(send, recv, Deadline::In(kGenerous));
  });
  for (const Status& s : status) {
    EXPECT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr("rank 2 passed 2 send")));
  }
}

TEST(ThreadCommunicatorTest, RanksCallingDifferentCollectivesBreakTheWorld) {
  auto comms = MakeWorld(2);
  std::vector<Status> status(2);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    status[c.rank()] = c.rank() == 0 ? c.Agree(Status::Ok(), Deadline::In(kGenerous))
                                     : c.AllGather("x", Deadline::In(kGenerous)).status();
  });
  for (const Status& s : status) {
    EXPECT_THAT(s, StatusIs(StatusCode::kFailedPrecondition,
                            HasSubstr("rank 0 called Agree but rank 1 called AllGather")));
  }
  EXPECT_THAT(comms[0]->Agree(Status::Ok(), Deadline::In(kGenerous)),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("unusable")));
}

TEST(ThreadCommunicatorTest, AllToAllCopiesLargeBuffersWithoutLosingBytes) {
  auto comms = MakeWorld(4);
  constexpr size_t kBytes = 3 << 20;  // odd-sized megabytes per pair
  std::vector<size_t> wrong(4);
  std::vector<Status> status(4);
  RunRanks(comms, [&](ThreadCommunicator& c) {
    const int me = c.rank();
    std::vector<std::vector<std::byte>> out(4), in(4);
    std::vector<std::span<const std::byte>> send(4);
    std::vector<std::span<std::byte>> recv(4);
    for (int q = 0; q < 4; ++q) {
      out[q].resize(kBytes + q);
      for (size_t i = 0; i < out[q].size(); ++i) out[q][i] = PatternByte(me, q, 0, i);
      in[q].resize(kBytes + me);
      send[q] = out[q];
      recv[q] = in[q];
    }
    status[me] = c.AllToAll(send, recv, Deadline::In(kGenerous));
    for (int r = 0; r < 4; ++r) {
      for (size_t i = 0; i < in[r].size(); ++i) wrong[me] += in[r][i] != PatternByte(r, me, 0, i);
    }
  });
  for (int r = 0; r < 4; ++r) {
    EXPECT_THAT(status[r], IsOk());
    EXPECT_EQ(wrong[r], 0u);
  }
}

}  // namespace
}  // namespace flashload::dist
