// TagTable: lets a wrapper attach its own state to requests it forwards. Put() stores the caller's
// tag and a value and returns a substitute tag (a slot index) to send downstream; Take() turns the
// substitute back. Slots are recycled, so a steady stream of requests allocates nothing.
//
// ForwardTagged() is the one way a wrapper sends a batch on with substitute tags: every policy
// wrapper (retry, statistics, fault and latency injection) submits through it, and turns each
// completion's tag back with Take() when it reaps it.
//
// Thread-safety: TagTable has none; the owner locks. ForwardTagged() takes the owner's mutex.
#ifndef FLASHLOAD_IO_TAG_TABLE_H_
#define FLASHLOAD_IO_TAG_TABLE_H_

#include <cstdint>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "flashload/source.h"

namespace flashload::io_internal {

template <typename T>
class TagTable {
 public:
  uint64_t Put(uint64_t tag, T value) {
    uint64_t slot;
    if (free_.empty()) {
      slot = entries_.size();
      entries_.push_back(Entry{tag, std::move(value)});
    } else {
      slot = free_.back();
      free_.pop_back();
      entries_[slot] = Entry{tag, std::move(value)};
    }
    return slot;
  }

  // The caller's tag and the value stored for `substitute`, which is then free again.
  std::pair<uint64_t, T> Take(uint64_t substitute) {
    free_.push_back(substitute);
    return {entries_[substitute].tag, std::move(entries_[substitute].value)};
  }

  size_t size() const { return entries_.size() - free_.size(); }

 private:
  struct Entry {
    uint64_t tag;
    T value;
  };
  std::vector<Entry> entries_;
  std::vector<uint64_t> free_;
};

// Sends `requests` on through `forward` (a Status(std::span<const ReadRequest>)) with each tag
// replaced by a slot of `slots` holding value_of(i) for request i. `mu` guards `slots`, and is held
// while value_of runs (so it may update the owner's counters). When `forward` fails, none of the
// batch was queued: the slots are freed again and on_refused(count) runs, also under `mu`.
template <typename T, typename ValueOf, typename Forward, typename OnRefused>
Status ForwardTagged(std::mutex& mu, TagTable<T>& slots, std::span<const ReadRequest> requests,
                     ValueOf&& value_of, Forward&& forward, OnRefused&& on_refused) {
  std::vector<ReadRequest> forwarded(requests.begin(), requests.end());
  {
    std::lock_guard lock(mu);
    for (size_t i = 0; i < forwarded.size(); ++i) {
      forwarded[i].tag = slots.Put(requests[i].tag, value_of(i));
    }
  }
  Status s = forward(std::span<const ReadRequest>(forwarded));
  if (!s.ok()) {
    std::lock_guard lock(mu);
    for (const ReadRequest& r : forwarded) slots.Take(r.tag);
    on_refused(forwarded.size());
  }
  return s;
}

}  // namespace flashload::io_internal

#endif  // FLASHLOAD_IO_TAG_TABLE_H_
