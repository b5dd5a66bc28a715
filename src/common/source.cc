#include "flashload/source.h"

#include <fmt/format.h>

#include <vector>

#include "common/completions.h"

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
  return common_internal::TakeCompletions(lock, default_cv_, default_done_, out, deadline);
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
