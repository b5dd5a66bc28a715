#include "flashload/source.h"

#include <fmt/format.h>

#include <vector>

namespace flashload {

Status Source::Submit(std::span<const ReadRequest> requests) {
  std::vector<ReadResult> done;
  done.reserve(requests.size());
  for (const ReadRequest& r : requests) {
    Result<size_t> n = ReadAt(r.offset, {r.dst, static_cast<size_t>(r.length)});
    done.push_back(ReadResult{r.tag, n.ok() ? *n : 0, n.status()});
  }
  {
    std::lock_guard lock(default_mu_);
    for (ReadResult& d : done) default_done_.push_back(std::move(d));
  }
  default_cv_.notify_all();
  return Status();
}

Result<size_t> Source::Reap(std::span<ReadResult> out, Deadline deadline) {
  std::unique_lock lock(default_mu_);
  auto ready = [&] { return !default_done_.empty(); };
  if (deadline.infinite()) {
    default_cv_.wait(lock, ready);
  } else if (!default_cv_.wait_until(lock, deadline.when(), ready)) {
    return size_t{0};
  }
  size_t n = 0;
  while (n < out.size() && !default_done_.empty()) {
    out[n++] = std::move(default_done_.front());
    default_done_.pop_front();
  }
  return n;
}

Status ReadExact(const Source& source, uint64_t offset, std::span<std::byte> dst) {
  FL_ASSIGN_OR_RETURN(size_t n, source.ReadAt(offset, dst));
  if (n != dst.size()) {
    return DataLossError(fmt::format(
        "{}: unexpected end of file reading {} bytes at byte offset {} (file is {} bytes)",
        source.name(), dst.size(), offset, source.size()));
  }
  return Status();
}

}  // namespace flashload
