// StagingRing over the CPU stand-in: slots come back only after their copies ran, Acquire blocks
// when every slot is busy, streams go round-robin, and a ring over an engine that signals events
// early is caught by the stand-in's staging check.
#include "sink/staging_ring.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "sink/cpu_copy_engine.h"
#include "support/status_matchers.h"

namespace flashload::sink {
namespace {

using std::chrono::microseconds;
using ::testing::HasSubstr;

constexpr uint64_t kSlot = 4096;

// One "chunk" through a slot: fill the staging buffer, copy it to `dst`, submit.
Status Pass(StagingRing& ring, CopyEngine& engine, std::byte* dst, int value,
            StagingSlot** used = nullptr) {
  FL_ASSIGN_OR_RETURN(StagingSlot * slot, ring.Acquire());
  if (used != nullptr) *used = slot;
  std::memset(slot->host, value, kSlot);
  FL_RETURN_IF_ERROR(engine.CopyToDevice(slot->stream, dst, slot->host, kSlot));
  return ring.Submit(slot);
}

TEST(StagingRingTest, SlotsAreReusedOnlyAfterTheirCopiesCompleted) {
  CpuCopyEngineOptions o;
  o.streams = 3;
  o.op_delay = microseconds(3000);
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 2, false));
  constexpr int kPasses = 12;
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(kSlot * kPasses));
  auto* out = static_cast<std::byte*>(dev.get());
  std::vector<StagingSlot*> used(kPasses);
  for (int i = 0; i < kPasses; ++i) {
    FL_ASSERT_OK(Pass(*ring, engine, out + i * kSlot, i + 1, &used[i]));
    if (i >= 2) {
      // The slot handed out now was used two passes ago: that copy must be done.
      EXPECT_EQ(used[i], used[i - 2]);
    }
  }
  FL_ASSERT_OK(ring->Drain());
  for (int i = 0; i < kPasses; ++i) {
    EXPECT_EQ(out[i * kSlot], static_cast<std::byte>(i + 1)) << i;
    EXPECT_EQ(out[i * kSlot + kSlot - 1], static_cast<std::byte>(i + 1)) << i;
  }
  EXPECT_EQ(ring->reuses(), kPasses - 2u);
  EXPECT_EQ(ring->peak_busy(), 2u);
  EXPECT_EQ(ring->pinned_bytes(), 2 * (kSlot + StagingRing::kPatchBytes));
}

TEST(StagingRingTest, StreamsGoRoundRobin) {
  CpuCopyEngineOptions o;
  o.streams = 3;
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 4, false));
  std::vector<uint32_t> streams;
  for (int i = 0; i < 6; ++i) {
    FL_ASSERT_OK_AND_ASSIGN(StagingSlot * s, ring->Acquire());
    streams.push_back(s->stream);
    FL_ASSERT_OK(ring->Submit(s));
  }
  EXPECT_EQ(streams, (std::vector<uint32_t>{0, 1, 2, 0, 1, 2}));
}

TEST(StagingRingTest, AcquireWaitsWhileEverySlotIsHeld) {
  CpuCopyEngine engine;
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 2, false));
  FL_ASSERT_OK_AND_ASSIGN(StagingSlot * a, ring->Acquire());
  FL_ASSERT_OK_AND_ASSIGN(StagingSlot * b, ring->Acquire());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    Result<StagingSlot*> s = ring->Acquire();
    EXPECT_THAT(s, IsOk());
    got = true;
    if (s.ok()) ring->Release(*s);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(got.load()) << "no slot was free: Acquire must block (back-pressure)";
  ring->Release(a);
  waiter.join();
  EXPECT_TRUE(got.load());
  ring->Release(b);
}

TEST(StagingRingTest, CancelWakesAWaiter) {
  CpuCopyEngine engine;
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 1, false));
  FL_ASSERT_OK_AND_ASSIGN(StagingSlot * a, ring->Acquire());
  std::thread waiter([&] { EXPECT_THAT(ring->Acquire(), StatusIs(StatusCode::kCancelled)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ring->Cancel();
  waiter.join();
  ring->Release(a);
}

TEST(StagingRingTest, ACopyFaultComesBackFromAcquireAndDrain) {
  CpuCopyEngineOptions o;
  o.fail_copy_at = 0;
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 1, false));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(kSlot));
  // The copy fails when it runs: Submit() sees it when the copy already ran, else Acquire().
  Status st = Pass(*ring, engine, static_cast<std::byte*>(dev.get()), 1);
  if (st.ok()) st = ring->Acquire().status();
  EXPECT_THAT(st, StatusIs(StatusCode::kIoError, HasSubstr("injected fault")));
  EXPECT_THAT(ring->Acquire(), StatusIs(StatusCode::kIoError));
  EXPECT_THAT(ring->Drain(), StatusIs(StatusCode::kIoError));
}

TEST(StagingRingTest, ScratchIsAllocatedOnlyWhenAsked) {
  CpuCopyEngineOptions o;
  o.device_is_host = false;
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto plain, StagingRing::Create(engine, 100, 3, false));
  EXPECT_EQ(plain->slot_bytes(), 4096u);  // rounded up for O_DIRECT
  EXPECT_EQ(plain->scratch_bytes(), 0u);
  FL_ASSERT_OK_AND_ASSIGN(auto with, StagingRing::Create(engine, 4096, 3, true));
  EXPECT_EQ(with->scratch_bytes(), 3u * 4096);
  FL_ASSERT_OK_AND_ASSIGN(StagingSlot * s, with->Acquire());
  EXPECT_NE(s->scratch, nullptr);
  with->Release(s);
  EXPECT_THAT(StagingRing::Create(engine, 4096, 0, false), StatusIs(StatusCode::kInvalidArgument));
}

// The stand-in's check must be able to fail: over an engine that completes events before the
// copies ran, the ring hands a slot out again while its copy is pending, the next chunk overwrites
// it, and the staging check reports it (the load fails instead of delivering wrong bytes).
TEST(StagingRingTest, EarlyEventsAreCaughtByTheStagingCheck) {
  CpuCopyEngineOptions o;
  o.streams = 1;
  o.op_delay = microseconds(5000);
  o.signal_events_early = true;  // the deliberately broken engine
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 1, false));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(2 * kSlot));
  auto* out = static_cast<std::byte*>(dev.get());
  FL_ASSERT_OK(Pass(*ring, engine, out, 1));
  Status second = Pass(*ring, engine, out + kSlot, 2);
  // The early events let Drain() return at once; the engine's own synchronisation sees the copies.
  ring->Drain().IgnoreError();
  Status synced = engine.Synchronize();
  if (second.ok()) second = synced;
  EXPECT_THAT(second,
              StatusIs(StatusCode::kInternal, HasSubstr("reused before its copy completed")));
}

// The same sequence over the correct engine passes: the check is specific to early reuse.
TEST(StagingRingTest, TheSameSequenceOverACorrectEnginePasses) {
  CpuCopyEngineOptions o;
  o.streams = 1;
  o.op_delay = microseconds(5000);
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto ring, StagingRing::Create(engine, kSlot, 1, false));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(2 * kSlot));
  auto* out = static_cast<std::byte*>(dev.get());
  FL_ASSERT_OK(Pass(*ring, engine, out, 1));
  FL_ASSERT_OK(Pass(*ring, engine, out + kSlot, 2));
  FL_ASSERT_OK(ring->Drain());
  EXPECT_EQ(out[0], std::byte{1});
  EXPECT_EQ(out[kSlot], std::byte{2});
}

}  // namespace
}  // namespace flashload::sink
