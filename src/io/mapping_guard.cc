#include "io/mapping_guard.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

namespace flashload::io_internal {
namespace {

struct RecoveryPoint {
  sigjmp_buf env;
  const void* volatile fault = nullptr;
};

// Which thread is inside a guarded call, and where it recovers. Not thread_local: the handler may
// not touch the TLS of a dlopen'ed module (Python's), whose first access allocates; a table of
// slots keyed by thread id is read with plain atomic loads. A slot is claimed (tid -1), filled,
// then published with the thread's id.
constexpr int kSlots = 1024;
struct Slot {
  std::atomic<pid_t> tid{0};
  RecoveryPoint* point = nullptr;
};
Slot g_slots[kSlots];

// Guarded calls running now in any thread: a fault while none runs skips the table.
std::atomic<int> g_active{0};
struct sigaction g_previous {};

pid_t CurrentTid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

int Claim(pid_t tid, RecoveryPoint* point) {
  while (true) {
    for (int n = 0; n < kSlots; ++n) {
      const int i = static_cast<int>((static_cast<unsigned>(tid) + n) % kSlots);
      pid_t expected = 0;
      if (g_slots[i].tid.load(std::memory_order_relaxed) == 0 &&
          g_slots[i].tid.compare_exchange_strong(expected, -1, std::memory_order_acquire)) {
        g_slots[i].point = point;
        g_slots[i].tid.store(tid, std::memory_order_release);
        return i;
      }
    }
    sched_yield();  // more than kSlots threads inside guarded calls at once: wait for one
  }
}

void OnSigbus(int sig, siginfo_t* info, void* ucontext) {
  if (g_active.load(std::memory_order_acquire) > 0) {
    const pid_t tid = CurrentTid();
    for (Slot& slot : g_slots) {
      if (slot.tid.load(std::memory_order_acquire) == tid) {
        slot.point->fault = info->si_addr;
        siglongjmp(slot.point->env, 1);
      }
    }
  }
  // Not ours: what would have happened without us.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, ucontext);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action (an ignored SIGBUS from a fault would loop forever, so it dies too): restore it
  // and re-raise; the signal is blocked until this handler returns, then kills the process.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
  raise(SIGBUS);
}

void InstallOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

struct CopyJob {
  std::byte* dst;
  const std::byte* src;
  size_t length;
  volatile size_t done;
};

// Pieces in order, so a fault leaves every earlier piece complete.
constexpr size_t kPiece = 256 << 10;

void CopyPieces(void* context) {
  CopyJob& job = *static_cast<CopyJob*>(context);
  size_t done = 0;
  while (done < job.length) {
    const size_t n = std::min(kPiece, job.length - done);
    std::memcpy(job.dst + done, job.src + done, n);
    done += n;
    job.done = done;
  }
}

}  // namespace

thread_local bool t_guarded = false;

const void* RunGuarded(void (*fn)(void* context), void* context) {
  if (t_guarded) {  // inside another guarded call: its recovery point covers this one
    fn(context);
    return nullptr;
  }
  InstallOnce();
  RecoveryPoint point;
  t_guarded = true;
  g_active.fetch_add(1, std::memory_order_acq_rel);
  const int slot = Claim(CurrentTid(), &point);
  // savemask 0: no sigprocmask per call; the fault path unblocks SIGBUS itself below.
  if (sigsetjmp(point.env, 0) == 0) {
    fn(context);
  } else {
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);  // left blocked by leaving the handler
  }
  g_slots[slot].tid.store(0, std::memory_order_release);
  g_active.fetch_sub(1, std::memory_order_acq_rel);
  t_guarded = false;
  return point.fault;
}

size_t GuardedCopy(std::byte* dst, const std::byte* src, size_t length, const void** fault) {
  CopyJob job{dst, src, length, 0};
  const void* at = RunGuarded(CopyPieces, &job);
  if (fault != nullptr) *fault = at;
  return at == nullptr ? length : job.done;
}

}  // namespace flashload::io_internal
