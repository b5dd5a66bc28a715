#include "io/retry_source.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "io/fault_source.h"
#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr uint64_t kSize = 64 * 1024;
constexpr uint64_t kSeed = 9;
constexpr uint64_t kChunk = 4096;

RetryPolicy TinyPolicy(uint32_t attempts, uint64_t seed = 7) {
  return RetryPolicy{.max_attempts = attempts, .base = 200us, .cap = 1ms, .seed = seed};
}

std::unique_ptr<Source> Memory() {
  return NewMemorySource(PositionalBytes(kSize, kSeed), {.name = "weights.bin"});
}

// A source whose completions fail in scripted ways, to test what the retry layer does with the
// intact leading bytes a failed completion reports. Each request (by call order) takes the next
// script entry; a request beyond the script succeeds. A failing entry writes its `intact` leading
// bytes correctly and garbage after them, so a retry that does not resume from exactly there is
// caught by the position check.
struct Step {
  StatusCode code = StatusCode::kOk;
  uint64_t intact = 0;
};

class ScriptedSource : public SourceWrapper {
 public:
  ScriptedSource(std::unique_ptr<Source> target, std::vector<Step> script)
      : SourceWrapper(std::move(target)), script_(std::move(script)) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    const Step step = NextStep(offset, dst.size());
    if (step.code == StatusCode::kOk) return target().ReadAt(offset, dst, options);
    std::memset(dst.data(), 0xEE, dst.size());
    return Status(step.code, fmt::format("scripted failure at byte offset {}", offset));
  }

  Status DoSubmit(std::span<const ReadRequest> requests) override {
    std::lock_guard lock(mu_);
    for (const ReadRequest& r : requests) {
      const Step step = NextStepLocked(r.offset, r.length);
      std::memset(r.dst, 0xEE, r.length);  // garbage everywhere first
      ReadResult done{r.tag, 0, Status()};
      if (step.code == StatusCode::kOk) {
        Result<size_t> n = target().ReadAt(r.offset, {r.dst, r.length}, {});
        done.bytes = n.ok() ? *n : 0;
        done.status = n.status();
      } else {
        const uint64_t intact = std::min(step.intact, r.length);
        FL_RETURN_IF_ERROR(target().ReadAt(r.offset, {r.dst, intact}, {}).status());
        done.bytes = intact;
        done.status =
            Status(step.code, fmt::format("scripted failure at byte offset {}", r.offset));
      }
      done_.push_back(std::move(done));
    }
    cv_.notify_all();
    return Status();
  }

  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, deadline.when(), [&] { return !done_.empty(); })) return size_t{0};
    size_t n = 0;
    while (n < out.size() && !done_.empty()) {
      out[n++] = std::move(done_.front());
      done_.pop_front();
    }
    return n;
  }

  void Cancel() override { ++cancels_; }

  // (offset, length) of every request seen, in order.
  std::vector<std::pair<uint64_t, uint64_t>> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  int cancels() const { return cancels_.load(); }

 private:
  Step NextStep(uint64_t offset, uint64_t length) const {
    std::lock_guard lock(mu_);
    return NextStepLocked(offset, length);
  }
  Step NextStepLocked(uint64_t offset, uint64_t length) const {
    seen_.emplace_back(offset, length);
    return next_ < script_.size() ? script_[next_++] : Step{};
  }

  const std::vector<Step> script_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable size_t next_ = 0;
  mutable std::vector<std::pair<uint64_t, uint64_t>> seen_;
  std::deque<ReadResult> done_;
  std::atomic<int> cancels_{0};
};

// Submits `reqs` to `s` and reaps every completion (within 10 s), keyed by tag.
std::map<uint64_t, ReadResult> SubmitAndReap(Source& s, const std::vector<ReadRequest>& reqs) {
  std::map<uint64_t, ReadResult> by_tag;
  EXPECT_THAT(s.Submit(reqs), IsOk());
  std::vector<ReadResult> out(8);
  const Deadline give_up = Deadline::In(10s);
  while (by_tag.size() < reqs.size() && !give_up.expired()) {
    Result<size_t> n = s.Reap(out, Deadline::In(1s));
    EXPECT_THAT(n, IsOk());
    if (!n.ok()) break;
    for (size_t i = 0; i < *n; ++i) {
      EXPECT_TRUE(by_tag.emplace(out[i].tag, out[i]).second) << "tag reaped twice: " << out[i].tag;
    }
  }
  EXPECT_EQ(by_tag.size(), reqs.size());
  return by_tag;
}

TEST(BackoffTest, CeilingDoublesFromBaseUpToCap) {
  RetryPolicy p{.base = 100ms, .cap = 20s};
  EXPECT_EQ(BackoffCeiling(p, 1), 100ms);
  EXPECT_EQ(BackoffCeiling(p, 2), 200ms);
  EXPECT_EQ(BackoffCeiling(p, 3), 400ms);
  EXPECT_EQ(BackoffCeiling(p, 8), 12800ms);
  EXPECT_EQ(BackoffCeiling(p, 9), 20s);
  EXPECT_EQ(BackoffCeiling(p, 200), 20s) << "no overflow for large retry numbers";
}

TEST(BackoffTest, FullJitterStaysWithinTheCeilingAndUsesTheWholeRange) {
  RetryPolicy p{.base = 100ms, .cap = 20s, .seed = 1234};
  Backoff b(p);
  for (uint32_t retry = 1; retry <= 12; ++retry) {
    const auto ceiling = BackoffCeiling(p, retry);
    std::chrono::nanoseconds lo = ceiling, hi{0}, sum{0};
    constexpr int kDraws = 2000;
    for (int i = 0; i < kDraws; ++i) {
      const auto d = b.Next(retry);
      ASSERT_GE(d.count(), 0);
      ASSERT_LE(d, ceiling) << "retry " << retry;
      lo = std::min(lo, d);
      hi = std::max(hi, d);
      sum += d;
    }
    // Uniform over [0, ceiling]: draws come near both ends, and average near the middle.
    EXPECT_LT(lo, ceiling / 20) << "retry " << retry;
    EXPECT_GT(hi, ceiling * 19 / 20) << "retry " << retry;
    const double mean = static_cast<double>(sum.count()) / kDraws / ceiling.count();
    EXPECT_NEAR(mean, 0.5, 0.05) << "retry " << retry;
  }
}

TEST(BackoffTest, SameSeedSameDelays) {
  Backoff a(RetryPolicy{.seed = 99}), b(RetryPolicy{.seed = 99}), c(RetryPolicy{.seed = 100});
  std::vector<int64_t> da, db, dc;
  for (uint32_t r = 1; r <= 20; ++r) {
    da.push_back(a.Next(r).count());
    db.push_back(b.Next(r).count());
    dc.push_back(c.Next(r).count());
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(RetrySourceTest, ReadAtRecoversInterruptedReadsWithIdenticalBytes) {
  // Every other request fails with EINTR (kUnavailable); each read succeeds on its second try.
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kInterrupted, .seed = 3, .one_in = 2});
  FaultSource* f = faulty.get();
  RetrySource s(std::move(faulty), TinyPolicy(8));
  std::vector<std::byte> buf(kChunk);
  for (uint64_t off = 0; off < kSize; off += kChunk) {
    Result<size_t> n = s.ReadAt(off, buf, {});
    ASSERT_THAT(n, IsOk()) << "offset " << off;
    ASSERT_EQ(*n, kChunk);
    ASSERT_EQ(FirstPositionMismatch(buf, off, kSeed), -1) << "offset " << off;
  }
  EXPECT_GT(f->injected(), 0u);
  const RetryCounters c = s.counters();
  EXPECT_EQ(c.retries, f->injected()) << "one retry per injected fault";
  EXPECT_EQ(c.attempts, kSize / kChunk + f->injected());
  EXPECT_EQ(c.exhausted, 0u);
  EXPECT_LE(c.max_backoff_ns, static_cast<uint64_t>(std::chrono::nanoseconds(1ms).count()));
}

TEST(RetrySourceTest, NonRetryableErrorsPassThroughAtOnce) {
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kIoError});
  FaultSource* f = faulty.get();
  RetrySource s(std::move(faulty), TinyPolicy(5));
  std::vector<std::byte> buf(kChunk);
  Result<size_t> n = s.ReadAt(kChunk, buf, {});
  EXPECT_THAT(n, StatusIs(StatusCode::kIoError, HasSubstr("weights.bin")));
  EXPECT_THAT(n, StatusIs(StatusCode::kIoError, ::testing::Not(HasSubstr("gave up"))));
  EXPECT_EQ(f->requests(), 1u);
  EXPECT_EQ(s.counters().retries, 0u);
}

TEST(RetrySourceTest, GivesUpAfterMaxAttemptsKeepingTheMessage) {
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kInterrupted});
  FaultSource* f = faulty.get();
  RetrySource s(std::move(faulty), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  Result<size_t> n = s.ReadAt(2 * kChunk, buf, {});
  EXPECT_THAT(n, StatusIs(StatusCode::kUnavailable, HasSubstr("gave up after 3 attempts")));
  EXPECT_THAT(n, StatusIs(StatusCode::kUnavailable, HasSubstr("weights.bin")));
  EXPECT_THAT(n, StatusIs(StatusCode::kUnavailable, HasSubstr(std::to_string(2 * kChunk))));
  EXPECT_EQ(f->requests(), 3u);
  EXPECT_EQ(s.counters().exhausted, 1u);
}

TEST(RetrySourceTest, ReadAtDoesNotSleepPastTheCallersDeadline) {
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kInterrupted});
  RetrySource s(std::move(faulty),
                RetryPolicy{.max_attempts = 10, .base = 10s, .cap = 10s, .seed = 5});
  std::vector<std::byte> buf(kChunk);
  const auto start = std::chrono::steady_clock::now();
  Result<size_t> n = s.ReadAt(0, buf, {.deadline = Deadline::In(50ms)});
  EXPECT_THAT(n, StatusIs(StatusCode::kUnavailable));
  // With a 10 s ceiling, waiting would take seconds; the deadline makes it give up long before.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(RetrySourceTest, ShortReadFaultIsNeverTurnedIntoSuccess) {
  // A short read comes back OK (not retryable): the retry layer must pass it on, not hide it.
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kShortRead});
  RetrySource s(std::move(faulty), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  Result<size_t> n = s.ReadAt(0, buf, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_LT(*n, kChunk);
}

TEST(RetrySourceTest, SubmitReapResumesAfterTheIntactBytes) {
  // Request 0 fails after 1000 intact bytes, its retry fails after 500 more, the third succeeds.
  auto scripted = std::make_unique<ScriptedSource>(
      Memory(),
      std::vector<Step>{{StatusCode::kUnavailable, 1000}, {StatusCode::kDeadlineExceeded, 500}});
  ScriptedSource* sc = scripted.get();
  RetrySource s(std::move(scripted), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  auto done = SubmitAndReap(s, {{8192, kChunk, buf.data(), 77}});
  ASSERT_EQ(done.count(77), 1u);
  EXPECT_THAT(done[77].status, IsOk());
  EXPECT_EQ(done[77].bytes, kChunk);
  EXPECT_EQ(FirstPositionMismatch(buf, 8192, kSeed), -1);
  EXPECT_EQ(sc->seen(), (std::vector<std::pair<uint64_t, uint64_t>>{
                            {8192, kChunk}, {9192, kChunk - 1000}, {9692, kChunk - 1500}}));
  const RetryCounters c = s.counters();
  EXPECT_EQ(c.attempts, 3u);
  EXPECT_EQ(c.retries, 2u);
  EXPECT_EQ(c.bytes_resumed, 1500u);
}

TEST(RetrySourceTest, SubmitReapGivesUpWithIntactBytesAndAttemptCount) {
  auto scripted = std::make_unique<ScriptedSource>(
      Memory(), std::vector<Step>{{StatusCode::kUnavailable, 100},
                                  {StatusCode::kUnavailable, 100},
                                  {StatusCode::kUnavailable, 100}});
  RetrySource s(std::move(scripted), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  auto done = SubmitAndReap(s, {{0, kChunk, buf.data(), 5}});
  EXPECT_THAT(done[5].status,
              StatusIs(StatusCode::kUnavailable, HasSubstr("gave up after 3 attempts")));
  EXPECT_THAT(done[5].status, StatusIs(StatusCode::kUnavailable, HasSubstr("scripted failure")));
  EXPECT_EQ(done[5].bytes, 300u) << "three attempts each delivered 100 intact bytes";
  EXPECT_EQ(FirstPositionMismatch(std::span(buf).first(300), 0, kSeed), -1);
  EXPECT_EQ(s.counters().exhausted, 1u);
}

TEST(RetrySourceTest, SubmitReapPassesNonRetryableErrorsAtOnce) {
  auto scripted =
      std::make_unique<ScriptedSource>(Memory(), std::vector<Step>{{StatusCode::kDataLoss, 0}});
  ScriptedSource* sc = scripted.get();
  RetrySource s(std::move(scripted), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  auto done = SubmitAndReap(s, {{0, kChunk, buf.data(), 5}});
  EXPECT_THAT(done[5].status,
              StatusIs(StatusCode::kDataLoss, ::testing::Not(HasSubstr("gave up"))));
  EXPECT_EQ(sc->seen().size(), 1u);
}

TEST(RetrySourceTest, ManyFaultyRequestsAllComeBackRightOrFailed) {
  // One in three requests fails (retryable); the retries themselves fail at the same rate.
  auto faulty =
      NewFaultSource(Memory(), {.kind = FaultKind::kInterrupted, .seed = 11, .one_in = 3});
  FaultSource* f = faulty.get();
  RetrySource s(std::move(faulty), TinyPolicy(6, 42));
  std::vector<std::byte> buf(kSize);
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < kSize; off += 1024)
    reqs.push_back({off, 1024, buf.data() + off, off});
  auto done = SubmitAndReap(s, reqs);
  uint64_t ok = 0;
  for (const auto& [tag, r] : done) {
    if (r.status.ok()) {
      ++ok;
      EXPECT_EQ(r.bytes, 1024u);
      EXPECT_EQ(FirstPositionMismatch(std::span(buf).subspan(tag, 1024), tag, kSeed), -1);
    } else {
      EXPECT_THAT(r.status, StatusIs(StatusCode::kUnavailable, HasSubstr("gave up after 6")));
    }
  }
  EXPECT_GT(f->injected(), 0u);
  EXPECT_EQ(ok + s.counters().exhausted, reqs.size());
  EXPECT_EQ(s.counters().retries, f->injected() - s.counters().exhausted);
}

TEST(RetrySourceTest, WaitingRetryDoesNotBlockOtherCompletions) {
  // The first request fails and waits 10 s for its retry; the second must be reaped long before.
  auto scripted =
      std::make_unique<ScriptedSource>(Memory(), std::vector<Step>{{StatusCode::kUnavailable, 0}});
  RetrySource s(std::move(scripted),
                RetryPolicy{.max_attempts = 2, .base = 10s, .cap = 10s, .seed = 1});
  // (The retry is resubmitted only from a Reap(), so its draw does not matter here.)
  std::vector<std::byte> a(kChunk), b(kChunk);
  ASSERT_THAT(
      s.Submit(std::vector<ReadRequest>{{0, kChunk, a.data(), 1}, {kChunk, kChunk, b.data(), 2}}),
      IsOk());
  std::vector<ReadResult> out(4);
  Result<size_t> n = s.Reap(out, Deadline::In(2s));
  ASSERT_THAT(n, IsOk());
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].tag, 2u);
  EXPECT_THAT(out[0].status, IsOk());
  // Cancel completes the waiting retry at once, with kCancelled and no wrong bytes claimed.
  s.Cancel();
  n = s.Reap(out, Deadline::In(2s));
  ASSERT_THAT(n, IsOk());
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(out[0].tag, 1u);
  EXPECT_THAT(out[0].status, StatusIs(StatusCode::kCancelled, HasSubstr("retry")));
  EXPECT_EQ(out[0].bytes, 0u);
}

TEST(RetrySourceTest, CancelReachesTheTarget) {
  auto scripted = std::make_unique<ScriptedSource>(Memory(), std::vector<Step>{});
  ScriptedSource* sc = scripted.get();
  RetrySource s(std::move(scripted), TinyPolicy(3));
  s.Cancel();
  EXPECT_EQ(sc->cancels(), 1);
}

TEST(RetrySourceTest, CorruptionIsNotRetryableAndStaysVisible) {
  auto faulty = NewFaultSource(Memory(), {.kind = FaultKind::kCorrupt});
  RetrySource s(std::move(faulty), TinyPolicy(3));
  std::vector<std::byte> buf(kChunk);
  auto done = SubmitAndReap(s, {{0, kChunk, buf.data(), 1}});
  ASSERT_THAT(done[1].status, IsOk());
  EXPECT_GE(FirstPositionMismatch(buf, 0, kSeed), 0) << "the retry layer cannot see corruption";
  EXPECT_EQ(s.counters().retries, 0u);
}

}  // namespace
}  // namespace flashload
