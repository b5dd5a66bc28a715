// Completion queues of the batch interface (flashload/source.h): the wait-and-take half of Reap()
// that every backend with its own queue shares.
#ifndef FLASHLOAD_COMMON_COMPLETIONS_H_
#define FLASHLOAD_COMMON_COMPLETIONS_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <span>

#include "flashload/deadline.h"
#include "flashload/source.h"

namespace flashload::common_internal {

// Waits on `cv` until a completion is queued or `deadline` passes, then moves up to out.size()
// completions into `out`, oldest first. Returns how many (0 when the deadline passed first).
// Thread-safety: `lock` must hold the mutex that guards `done`, and producers push to `done` under
// it and notify `cv`; the lock is released while waiting and held again on return. Spurious
// wake-ups are absorbed. Several threads may reap one queue; each completion goes to one of them.
inline size_t TakeCompletions(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                              std::deque<ReadResult>& done, std::span<ReadResult> out,
                              Deadline deadline) {
  auto ready = [&] { return !done.empty(); };
  if (deadline.infinite()) {
    cv.wait(lock, ready);
  } else if (!cv.wait_until(lock, deadline.when(), ready)) {
    return 0;
  }
  size_t n = 0;
  while (n < out.size() && !done.empty()) {
    out[n++] = std::move(done.front());
    done.pop_front();
  }
  return n;
}

}  // namespace flashload::common_internal

#endif  // FLASHLOAD_COMMON_COMPLETIONS_H_
