#include "flashload/source.h"

#include <fmt/format.h>

#include <cstdint>
#include <vector>

#include "common/completions.h"

namespace flashload {
namespace {

bool IsAligned(uint64_t v, uint32_t alignment) { return (v & (alignment - 1)) == 0; }

// The batch contract (flashload/source.h): a destination for every byte, a range that does not
// wrap around, and with direct I/O offset, length and buffer multiples of the alignment.
Status ValidateBatch(std::span<const ReadRequest> requests, const SourceCaps& caps,
                     const std::string& name) {
  for (const ReadRequest& r : requests) {
    if (r.dst == nullptr && r.length > 0) {
      return InvalidArgumentError(
          fmt::format("{}: read of {} bytes at byte offset {} has no destination buffer", name,
                      r.length, r.offset));
    }
    if (r.offset + r.length < r.offset) {
      return InvalidArgumentError(
          fmt::format("{}: read of {} bytes at byte offset {} runs past the largest offset", name,
                      r.length, r.offset));
    }
    if (caps.direct_io &&
        !(IsAligned(r.offset, caps.alignment) && IsAligned(r.length, caps.alignment) &&
          IsAligned(reinterpret_cast<uintptr_t>(r.dst), caps.alignment))) {
      return InvalidArgumentError(fmt::format(
          "{}: direct read of {} bytes at byte offset {} into {} is not aligned to {} bytes", name,
          r.length, r.offset, static_cast<const void*>(r.dst), caps.alignment));
    }
  }
  return Status();
}

}  // namespace

Status Source::Submit(std::span<const ReadRequest> requests) {
  FL_RETURN_IF_ERROR(ValidateBatch(requests, caps(), name()));
  return DoSubmit(requests);
}

Status Source::DoSubmit(std::span<const ReadRequest> requests) {
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
