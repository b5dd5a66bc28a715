// CpuCopyEngine: stream order, events, sticky faults, the staging check (and that it can fail),
// and memory that outlives the engine.
#include "sink/cpu_copy_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "flashload/convert.h"
#include "support/status_matchers.h"

namespace flashload::sink {
namespace {

using std::chrono::microseconds;
using ::testing::HasSubstr;

TEST(CpuCopyEngineTest, CopiesOnOneStreamRunInOrderAndEventsWaitForThem) {
  CpuCopyEngineOptions o;
  o.streams = 2;
  o.op_delay = microseconds(2000);
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto pinned, engine.AllocatePinned(64));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(64));
  auto* src = static_cast<std::byte*>(pinned.get());
  auto* dst = static_cast<std::byte*>(dev.get());
  // Two copies to the same byte on stream 1: the later one must win.
  src[0] = std::byte{1};
  src[1] = std::byte{2};
  FL_ASSERT_OK(engine.CopyToDevice(1, dst, src, 1));
  FL_ASSERT_OK(engine.CopyToDevice(1, dst, src + 1, 1));
  FL_ASSERT_OK_AND_ASSIGN(CopyEngine::Event ev, engine.CreateEvent());
  FL_ASSERT_OK(engine.RecordEvent(ev, 1));
  FL_ASSERT_OK_AND_ASSIGN(bool done_now, engine.EventDone(ev));
  EXPECT_FALSE(done_now) << "two delayed copies cannot have run yet";
  FL_ASSERT_OK(engine.WaitEvent(ev));
  FL_ASSERT_OK_AND_ASSIGN(bool done, engine.EventDone(ev));
  EXPECT_TRUE(done);
  EXPECT_EQ(dst[0], std::byte{2});
  EXPECT_EQ(engine.copies_enqueued(), 2u);
}

TEST(CpuCopyEngineTest, AnUnrecordedEventIsComplete) {
  CpuCopyEngine engine;
  FL_ASSERT_OK_AND_ASSIGN(CopyEngine::Event ev, engine.CreateEvent());
  FL_ASSERT_OK_AND_ASSIGN(bool done, engine.EventDone(ev));
  EXPECT_TRUE(done);
  EXPECT_THAT(engine.RecordEvent(ev + 7, 0), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(engine.CopyToDevice(9, nullptr, nullptr, 1), StatusIs(StatusCode::kInvalidArgument));
}

TEST(CpuCopyEngineTest, ConvertsOnTheStreamAfterTheCopy) {
  CpuCopyEngineOptions o;
  o.device_is_host = false;
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto pinned, engine.AllocatePinned(4 * 100));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(6 * 100));
  std::vector<float> values(100);
  for (int i = 0; i < 100; ++i) values[i] = 1.0f / (i + 3);
  std::memcpy(pinned.get(), values.data(), 400);
  auto* scratch = static_cast<std::byte*>(dev.get());
  FL_ASSERT_OK(engine.CopyToDevice(0, scratch, pinned.get(), 400));
  FL_ASSERT_OK(engine.Convert(0, Dtype::kF32, Dtype::kBF16, scratch, scratch + 400, 100));
  FL_ASSERT_OK(engine.Synchronize());
  std::vector<std::byte> want(200);
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, values.data(), want.data(), 100));
  EXPECT_EQ(std::memcmp(scratch + 400, want.data(), 200), 0);
  EXPECT_THAT(engine.Convert(0, Dtype::kI32, Dtype::kF16, scratch, scratch + 400, 1),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(CpuCopyEngineTest, InjectedCopyFaultIsStickyAndNeverSuccess) {
  CpuCopyEngineOptions o;
  o.fail_copy_at = 1;
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto pinned, engine.AllocatePinned(16));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(16));
  FL_ASSERT_OK_AND_ASSIGN(CopyEngine::Event ev, engine.CreateEvent());
  FL_ASSERT_OK(engine.CopyToDevice(0, dev.get(), pinned.get(), 8));
  // The second copy fails when it runs; depending on timing, the enqueue calls after it see the
  // failure already (sticky) or the wait does. Either way it is never success.
  Status st = engine.CopyToDevice(0, dev.get(), pinned.get(), 8);
  if (st.ok()) st = engine.RecordEvent(ev, 0);
  if (st.ok()) st = engine.WaitEvent(ev);
  EXPECT_THAT(st, StatusIs(StatusCode::kIoError, HasSubstr("injected fault")));
  EXPECT_THAT(engine.Synchronize(), StatusIs(StatusCode::kIoError));
  EXPECT_THAT(engine.EventDone(ev), StatusIs(StatusCode::kIoError));
  EXPECT_THAT(engine.CopyToDevice(1, dev.get(), pinned.get(), 8), StatusIs(StatusCode::kIoError));
}

TEST(CpuCopyEngineTest, WritingAStagingBufferWhileItsCopyIsPendingIsCaught) {
  CpuCopyEngineOptions o;
  o.op_delay = microseconds(20000);
  CpuCopyEngine engine(o);
  FL_ASSERT_OK_AND_ASSIGN(auto pinned, engine.AllocatePinned(4096));
  FL_ASSERT_OK_AND_ASSIGN(auto dev, engine.AllocateDevice(4096));
  std::memset(pinned.get(), 1, 4096);
  FL_ASSERT_OK(engine.CopyToDevice(0, dev.get(), pinned.get(), 4096));
  static_cast<std::byte*>(pinned.get())[100] = std::byte{9};  // too early: the copy is pending
  EXPECT_THAT(engine.Synchronize(),
              StatusIs(StatusCode::kInternal, HasSubstr("written while copy #0")));
}

TEST(CpuCopyEngineTest, MemoryOutlivesTheEngineAndIsCounted) {
  std::shared_ptr<void> kept;
  {
    CpuCopyEngine engine;
    FL_ASSERT_OK_AND_ASSIGN(kept, engine.AllocateDevice(10000));
    FL_ASSERT_OK_AND_ASSIGN(auto pinned, engine.AllocatePinned(10));
    EXPECT_EQ(engine.live_allocations(), 2);
    pinned.reset();
    EXPECT_EQ(engine.live_allocations(), 1);
    EXPECT_GE(engine.peak_device_bytes(), 10000u);
  }
  std::memset(kept.get(), 3, 10000);  // still mapped
  EXPECT_EQ(static_cast<std::byte*>(kept.get())[9999], std::byte{3});
}

}  // namespace
}  // namespace flashload::sink
