// TagTable: lets a wrapper attach its own state to requests it forwards. Put() stores the caller's
// tag and a value and returns a substitute tag (a slot index) to send downstream; Take() turns the
// substitute back. Slots are recycled, so a steady stream of requests allocates nothing.
//
// Thread-safety: none; the owner locks.
#ifndef FLASHLOAD_IO_TAG_TABLE_H_
#define FLASHLOAD_IO_TAG_TABLE_H_

#include <cstdint>
#include <utility>
#include <vector>

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

}  // namespace flashload::io_internal

#endif  // FLASHLOAD_IO_TAG_TABLE_H_
