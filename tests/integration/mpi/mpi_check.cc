// mpi_check: the MPI communicator under mpirun, rank by rank. Prints every failed check and
// exits non-zero when one failed (no test framework: it runs as N processes).
//
//   mpirun -n N mpi_check collectives   exit 0 when every check passed on every rank, 1 otherwise
//   mpirun -n N mpi_check deadline      the last rank sleeps past the deadlines; the others check
//                                       that every collective returns kDeadlineExceeded promptly
//                                       and that later calls fail at once, then rank 0 ends the
//                                       job with MPI_Abort: exit 3 when all of that held, 1 if not
//   mpirun -n N mpi_check bench [MiB]   rank 0 prints the time and bytes per second of AllToAll
//                                       (MiB per pair, 64 by default), Agree and AllGather
//
// tests/integration/mpi/run.sh runs both for 2 and 4 ranks.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dist/mpi_communicator.h"

namespace flashload::dist {
namespace {

constexpr int kExitDeadlineChecked = 3;
using Clock = std::chrono::steady_clock;

int g_rank = 0;
int g_failures = 0;

void Fail(const std::string& what) {
  ++g_failures;
  std::fprintf(stderr, "mpi_check: rank %d: FAILED: %s\n", g_rank, what.c_str());
}

void Expect(bool ok, const std::string& what) {
  if (!ok) Fail(what);
}

void ExpectStatus(const Status& s, StatusCode code, std::string_view message_part,
                  const std::string& what) {
  if (s.code() != code || s.message().find(message_part) == std::string_view::npos) {
    Fail(fmt::format("{}: got {}, want {} with \"{}\"", what, s.ToString(), StatusCodeName(code),
                     message_part));
  }
}

std::byte PatternByte(int from, int to, int round, size_t i) {
  uint64_t x = (uint64_t(from) << 48) ^ (uint64_t(to) << 40) ^ (uint64_t(round) << 32) ^ i;
  x *= 0x9E3779B97F4A7C15ull;
  return std::byte(x >> 56);
}

// Uneven sizes around the message limit `unit`: zero, exact multiples, one more and one less.
size_t PairSize(int from, int to, int round, size_t unit) {
  switch ((from * 3 + to * 5 + round) % 6) {
    case 0:
      return 0;
    case 1:
      return unit;
    case 2:
      return 2 * unit + 1;
    case 3:
      return 3 * unit - 1;
    case 4:
      return 1;
    default:
      return (from * 131 + to * 17 + round * 7) % 997;
  }
}

// One AllToAll of patterned bytes; checks every received byte.
void AllToAllRound(MpiCommunicator& c, int round, size_t unit, const std::string& what) {
  const int n = c.size(), me = c.rank();
  std::vector<std::vector<std::byte>> out(n), in(n);
  std::vector<std::span<const std::byte>> send(n);
  std::vector<std::span<std::byte>> recv(n);
  for (int q = 0; q < n; ++q) {
    out[q].resize(PairSize(me, q, round, unit));
    for (size_t i = 0; i < out[q].size(); ++i) out[q][i] = PatternByte(me, q, round, i);
    in[q].assign(PairSize(q, me, round, unit), std::byte{0xEE});
    send[q] = out[q];
    recv[q] = in[q];
  }
  Status s = c.AllToAll(send, recv, Deadline::In(std::chrono::seconds(60)));
  if (!s.ok()) return Fail(fmt::format("{} round {}: {}", what, round, s.ToString()));
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < in[r].size(); ++i) {
      if (in[r][i] != PatternByte(r, me, round, i)) {
        return Fail(fmt::format("{} round {}: byte {} from rank {} is wrong", what, round, i, r));
      }
    }
  }
}

std::string Report(int r, int round) {
  if (r == 0) return std::string();
  return fmt::format("round {} rank {}", round, r) + std::string("\0", 1) +
         std::string(r * 50, char('a' + r));
}

void CheckAllGather(MpiCommunicator& c, int round) {
  Result<std::vector<std::string>> g =
      c.AllGather(Report(c.rank(), round), Deadline::In(std::chrono::seconds(60)));
  if (!g.ok()) return Fail(fmt::format("AllGather round {}: {}", round, g.status().ToString()));
  if (g->size() != size_t(c.size())) return Fail("AllGather: wrong number of reports");
  for (int q = 0; q < c.size(); ++q) {
    Expect((*g)[q] == Report(q, round),
           fmt::format("AllGather round {}: report of rank {}", round, q));
  }
}

int RunCollectives(MpiSession& session) {
  const Deadline d = Deadline::In(std::chrono::seconds(60));
  Expect(!session.under_mpirun() || session.world_size() >= 1, "session");
  Expect(session.under_mpirun() == (session.world_size() > 1 || MpiSession::LaunchedByMpirun()),
         "under_mpirun");
  Expect(session.thread_level() >= MPI_THREAD_SERIALIZED, "thread level");

  Result<std::unique_ptr<MpiCommunicator>> small =
      MpiCommunicator::Create(MPI_COMM_WORLD, {.max_message_bytes = 4096});
  Result<std::unique_ptr<MpiCommunicator>> plain = MpiCommunicator::Create();
  if (!small.ok() || !plain.ok()) {
    Fail("Create: " + small.status().ToString() + " / " + plain.status().ToString());
    return 1;
  }
  MpiCommunicator& c = **small;
  const int n = c.size(), me = c.rank();
  Expect(c.name() == "mpi" && n == session.world_size() && me == session.world_rank(), "identity");
  Expect(c.comm() != MPI_COMM_WORLD, "the communicator is a duplicate");
  Expect(MpiCommunicator::Create(MPI_COMM_WORLD, {.max_message_bytes = 0}).status().code() ==
             StatusCode::kInvalidArgument,
         "max_message_bytes 0 is refused");

  // AllToAll: many rounds split into 4 KiB messages, then larger transfers in one message each.
  for (int round = 0; round < 30; ++round) AllToAllRound(c, round, 4096, "AllToAll (4 KiB)");
  for (int round = 0; round < 6; ++round) AllToAllRound(**plain, round, 300000, "AllToAll");

  // Agree: nobody fails; the last rank fails; several fail (the lowest wins).
  Expect(c.Agree(Status::Ok(), d).ok(), "Agree with no failure");
  {
    const int failing = n - 1;
    Status local = me == failing ? DataLossError("w.3 truncated at byte offset 77") : Status::Ok();
    Status s = c.Agree(local, d);
    const std::string want = me == failing
                                 ? std::string("w.3 truncated at byte offset 77")
                                 : fmt::format("rank {}: w.3 truncated at byte offset 77", failing);
    Expect(s.code() == StatusCode::kDataLoss && s.message() == want,
           "Agree with one failure: got " + s.ToString());
  }
  {
    // Odd ranks fail with their own code; with one rank nobody fails.
    Status local = me % 2 == 1 ? Status(me == 1 ? StatusCode::kNotFound : StatusCode::kIoError,
                                        fmt::format("failure of rank {}", me))
                               : Status::Ok();
    Status s = c.Agree(local, d);
    if (n == 1) {
      Expect(s.ok(), "Agree alone");
    } else {
      const std::string want =
          me == 1 ? std::string("failure of rank 1") : std::string("rank 1: failure of rank 1");
      Expect(s.code() == StatusCode::kNotFound && s.message() == want,
             "Agree with several failures: got " + s.ToString());
    }
  }
  {
    // A long message is cut at 64 KiB, the same on every rank.
    Status local = me == 0 ? UnavailableError(std::string(100000, 'm')) : Status::Ok();
    Status s = c.Agree(local, d);
    const size_t want = me == 0 ? 100000 : 65536 + std::string_view("rank 0: ").size();
    Expect(s.code() == StatusCode::kUnavailable && s.message().size() == want,
           fmt::format("Agree with a long message: {} bytes", s.message().size()));
  }

  // AllGather, then mixed rounds in a row.
  CheckAllGather(c, 0);
  for (int round = 1; round < 150; ++round) {
    switch (round % 3) {
      case 0:
        AllToAllRound(c, round, 1000, "mixed AllToAll");
        break;
      case 1:
        CheckAllGather(c, round);
        break;
      case 2: {
        const int failing = round % n;
        Status s = c.Agree(
            me == failing ? CancelledError(fmt::format("round {}", round)) : Status::Ok(), d);
        Expect(s.code() == StatusCode::kCancelled &&
                   s.message().find(fmt::format("round {}", round)) != std::string_view::npos,
               fmt::format("mixed Agree round {}: {}", round, s.ToString()));
        break;
      }
    }
  }

  // Wrong arguments on this rank only: refused before anything is sent.
  {
    std::vector<std::span<const std::byte>> send(n + 1);
    std::vector<std::span<std::byte>> recv(n);
    ExpectStatus(c.AllToAll(send, recv, d), StatusCode::kInvalidArgument, "send and",
                 "AllToAll with too many buffers");
  }
  // Sizes that disagree between two ranks (same number of messages): the receiver says so.
  if (n >= 2) {
    std::vector<std::byte> a(100), b(120);
    std::vector<std::span<const std::byte>> send(n);
    std::vector<std::span<std::byte>> recv(n);
    if (me == 0) send[1] = std::span<const std::byte>(a);
    if (me == 1) recv[0] = std::span<std::byte>(b);
    Status s = (*plain)->AllToAll(send, recv, d);
    if (me == 1) {
      ExpectStatus(s, StatusCode::kInvalidArgument, "rank 0 sent a message of 100 bytes",
                   "AllToAll with disagreeing sizes");
    } else {
      Expect(s.ok(), "AllToAll with disagreeing sizes, other ranks: " + s.ToString());
    }
  }

  // Every rank's verdict, so rank 0 can say whether the job passed.
  Status mine =
      g_failures == 0 ? Status::Ok() : InternalError(fmt::format("{} check(s) failed", g_failures));
  Status all = c.Agree(mine, d);
  if (me == 0) {
    std::printf("mpi_check collectives, %d rank(s): %s\n", n,
                all.ok() ? "every check passed" : all.ToString().c_str());
  }
  return all.ok() ? 0 : 1;
}

int RunDeadline(MpiSession& session) {
  const int n = session.world_size(), me = session.world_rank();
  const int sleeper = n - 1;
  if (n < 2) {
    std::fprintf(stderr, "mpi_check deadline: needs 2 ranks or more\n");
    return 1;
  }
  // One communicator per collective: a deadline breaks the one it happened on.
  std::vector<std::unique_ptr<MpiCommunicator>> comms;
  for (int i = 0; i < 3; ++i) {
    Result<std::unique_ptr<MpiCommunicator>> c = MpiCommunicator::Create();
    if (!c.ok()) {
      Fail("Create: " + c.status().ToString());
      return 1;
    }
    comms.push_back(std::move(c).value());
  }
  if (me == sleeper) {
    // Arrives far too late; MPI_Abort from rank 0 ends this process first.
    std::this_thread::sleep_for(std::chrono::seconds(30));
    (void)comms[0]->Agree(Status::Ok(), Deadline::In(std::chrono::seconds(1)));
    std::fprintf(stderr, "mpi_check: rank %d: the job was not aborted\n", me);
    return 1;
  }
  constexpr auto kDeadline = std::chrono::seconds(1);
  constexpr auto kSlack = std::chrono::seconds(2);
  auto timed = [&](const char* what, auto&& call, std::string_view message_part) {
    const auto t0 = Clock::now();
    Status s = call(Deadline::In(kDeadline));
    const auto took = Clock::now() - t0;
    ExpectStatus(s, StatusCode::kDeadlineExceeded, message_part, what);
    if (me == 0)
      std::printf("  %s after %lld ms: %s\n", what,
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
                  s.ToString().c_str());
    Expect(took >= kDeadline - std::chrono::milliseconds(5) && took < kDeadline + kSlack,
           fmt::format("{} returned after {} ms", what,
                       std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
    const auto t1 = Clock::now();
    Status again = call(Deadline::Infinite());
    ExpectStatus(again, StatusCode::kFailedPrecondition, "unusable", std::string(what) + " again");
    Expect(Clock::now() - t1 < std::chrono::milliseconds(500),
           std::string(what) + " again does not fail at once");
  };
  timed(
      "Agree", [&](Deadline d) { return comms[0]->Agree(Status::Ok(), d); },
      "Agree (collective #1)");
  timed(
      "AllGather", [&](Deadline d) { return comms[1]->AllGather("report", d).status(); },
      "AllGather (collective #1)");
  std::vector<std::vector<std::byte>> out(n, std::vector<std::byte>(5000)), in = out;
  std::vector<std::span<const std::byte>> send(out.begin(), out.end());
  std::vector<std::span<std::byte>> recv(in.begin(), in.end());
  timed(
      "AllToAll", [&](Deadline d) { return comms[2]->AllToAll(send, recv, d); },
      fmt::format("the bytes from rank(s) {} did not all arrive", sleeper));

  // Rank 0 collects the verdicts of the ranks that did not sleep (on MPI_COMM_WORLD, which no
  // abandoned operation uses), then ends the job.
  constexpr int kVerdictTag = 4242;
  int failures = g_failures;
  if (me != 0) {
    MPI_Send(&failures, 1, MPI_INT, 0, kVerdictTag, MPI_COMM_WORLD);
    std::this_thread::sleep_for(std::chrono::seconds(60));  // until rank 0 aborts the job
    return 1;
  }
  for (int r = 1; r < sleeper; ++r) {
    int theirs = 0;
    MPI_Recv(&theirs, 1, MPI_INT, r, kVerdictTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    failures += theirs;
  }
  std::printf("mpi_check deadline, %d ranks (rank %d asleep): %s; aborting the job with %d\n", n,
              sleeper, failures == 0 ? "every check passed" : "FAILED",
              failures == 0 ? kExitDeadlineChecked : 1);
  std::fflush(stdout);
  std::fflush(stderr);
  MpiCommunicator::AbortJob(failures == 0 ? kExitDeadlineChecked : 1);
}

int RunBench(MpiSession& session, size_t mib) {
  Result<std::unique_ptr<MpiCommunicator>> made = MpiCommunicator::Create();
  if (!made.ok()) {
    Fail("Create: " + made.status().ToString());
    return 1;
  }
  MpiCommunicator& c = **made;
  const int n = c.size();
  const size_t per_pair = mib << 20;
  std::vector<std::vector<std::byte>> out(n, std::vector<std::byte>(per_pair, std::byte{1}));
  std::vector<std::vector<std::byte>> in(n, std::vector<std::byte>(per_pair));
  std::vector<std::span<const std::byte>> send(out.begin(), out.end());
  std::vector<std::span<std::byte>> recv(in.begin(), in.end());
  auto seconds_of = [&](auto&& call, int times) {
    const Deadline d = Deadline::In(std::chrono::seconds(120));
    (void)call(d);  // warm up
    MPI_Barrier(c.comm());
    const auto t0 = Clock::now();
    for (int i = 0; i < times; ++i) {
      Status s = call(d);
      if (!s.ok()) Fail(s.ToString());
    }
    return std::chrono::duration<double>(Clock::now() - t0).count() / times;
  };
  const double all_to_all = seconds_of([&](Deadline d) { return c.AllToAll(send, recv, d); }, 5);
  const double agree = seconds_of([&](Deadline d) { return c.Agree(Status::Ok(), d); }, 1000);
  const double gather =
      seconds_of([&](Deadline d) { return c.AllGather("a rank report", d).status(); }, 1000);
  if (session.world_rank() == 0) {
    std::printf(
        "mpi_check bench, %d ranks: AllToAll of %zu MiB per pair %.1f ms (%.2f GB/s received per "
        "rank, from the others); Agree %.1f us; AllGather %.1f us\n",
        n, mib, all_to_all * 1e3, double(per_pair) * (n - 1) / all_to_all / 1e9, agree * 1e6,
        gather * 1e6);
  }
  return g_failures == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  const std::string_view scenario = argc > 1 ? argv[1] : "collectives";
  if (scenario != "collectives" && scenario != "deadline" && scenario != "bench") {
    std::fprintf(stderr, "usage: mpi_check [collectives|deadline|bench [MiB]]\n");
    return 2;
  }
  Result<std::unique_ptr<MpiSession>> session = MpiSession::Start();
  if (!session.ok()) {
    std::fprintf(stderr, "mpi_check: %s\n", session.status().ToString().c_str());
    return 1;
  }
  g_rank = (*session)->world_rank();
  if (scenario == "bench")
    return RunBench(**session, argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 64);
  return scenario == "collectives" ? RunCollectives(**session) : RunDeadline(**session);
}

}  // namespace
}  // namespace flashload::dist

int main(int argc, char** argv) { return flashload::dist::Main(argc, argv); }
