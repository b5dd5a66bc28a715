// Deadline: a point in time after which a wait gives up.
//
// Measured on the steady clock, so changes of the wall clock do not move it. What a call does once
// its deadline has passed is that call's contract; Now() makes a waiting call poll without
// waiting, Infinite() never gives up.
// Thread-safety: a value; copies may be used on any thread.
#ifndef FLASHLOAD_DEADLINE_H_
#define FLASHLOAD_DEADLINE_H_

#include <chrono>

namespace flashload {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  static Deadline Infinite() { return Deadline(Clock::time_point::max()); }
  static Deadline Now() { return Deadline(Clock::now()); }  // poll: do not wait
  static Deadline In(Clock::duration d) { return Deadline(Clock::now() + d); }
  explicit Deadline(Clock::time_point t) : when_(t) {}

  Clock::time_point when() const { return when_; }
  bool infinite() const { return when_ == Clock::time_point::max(); }
  bool expired() const { return !infinite() && Clock::now() >= when_; }

 private:
  Clock::time_point when_;
};

}  // namespace flashload

#endif  // FLASHLOAD_DEADLINE_H_
