#include "engine/staging_budget.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace flashload::engine {
namespace {

TEST(StagingBudgetTest, BlocksUntilReleasedAndCancels) {
  StagingBudget b(100);
  EXPECT_TRUE(b.TryAcquire(60));
  EXPECT_FALSE(b.TryAcquire(50));
  std::thread t([&] { EXPECT_TRUE(b.Acquire(50)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b.Release(60);
  t.join();
  EXPECT_EQ(b.in_use(), 50u);
  EXPECT_EQ(b.peak(), 60u);
  // An oversized request proceeds alone.
  b.Release(50);
  EXPECT_TRUE(b.Acquire(1000));
  std::thread waiter([&] { EXPECT_FALSE(b.Acquire(10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b.Cancel();
  waiter.join();
}

}  // namespace
}  // namespace flashload::engine
