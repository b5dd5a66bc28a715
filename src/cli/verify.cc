#include "cli/verify.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <vector>

#include "io/archive_source.h"
#include "io/mapping_guard.h"
#include "io/registry.h"
#include "sink/host_sink.h"

namespace flashload::cli {

namespace {

// Reads up to dst.size() bytes at `pos`; 0 only at end of file.
using PlainReader = std::function<Result<size_t>(uint64_t pos, std::span<std::byte> dst)>;

Result<std::map<std::string, uint64_t>> HashTensors(const std::string& path, const Header& header,
                                                    const PlainReader& read) {
  // One sequential pass over the data section in 8 MiB reads (tensors are contiguous in offset
  // order), each piece hashed into the tensors it covers.
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : header.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data_begin < b->data_begin; });
  std::vector<std::byte> buf(8 << 20);
  std::map<std::string, uint64_t> out;
  XXH3_state_t* state = XXH3_createState();
  const uint64_t base = header.data_offset();
  uint64_t pos = 0;  // within the data section
  size_t i = 0;
  Status status;
  while (i < order.size() && status.ok()) {
    const uint64_t begin = order[i]->data_begin;
    if (pos < begin) pos = begin;
    const uint64_t end = order.back()->data_end;
    const size_t want = std::min<uint64_t>(buf.size(), end - pos);
    size_t got = 0;
    if (want > 0) {
      Result<size_t> n = read(base + pos, {buf.data(), want});
      if (!n.ok()) {
        status = n.status();
        break;
      }
      if (*n == 0) {
        status = DataLossError(
            fmt::format("{}: unexpected end of file at byte offset {}", path, base + pos));
        break;
      }
      got = *n;
    }
    const uint64_t block_end = pos + got;
    // Feed every tensor that starts before the block's end.
    while (i < order.size() && order[i]->data_begin <= block_end) {
      const TensorInfo& t = *order[i];
      if (pos <= t.data_begin) XXH3_64bits_reset(state);
      const uint64_t from = std::max(pos, t.data_begin);
      const uint64_t to = std::min(block_end, t.data_end);
      if (to > from) XXH3_64bits_update(state, buf.data() + (from - pos), to - from);
      if (t.data_end > block_end) break;  // continues in the next block
      out[t.name] = XXH3_64bits_digest(state);
      ++i;
    }
    pos = block_end;
  }
  XXH3_freeState(state);
  if (!status.ok()) return status;
  return out;
}

struct HashJob {
  const std::byte* data;
  size_t size;
  uint64_t hash;
};

void HashBytes(void* context) {
  HashJob& job = *static_cast<HashJob*>(context);
  job.hash = XXH3_64bits(job.data, job.size);
}

// The xxh3 of a loaded tensor's bytes. They may be a view of the file's mapping (strategy mapped):
// a file truncated since the load raises SIGBUS there, turned into kDataLoss naming the tensor and
// the file's byte offset.
Result<uint64_t> HashLoaded(const std::string& path, const Header& header, const TensorInfo& info,
                            const Tensor& tensor) {
  const auto bytes = tensor.bytes();
  HashJob job{bytes.data(), bytes.size(), 0};
  const void* fault = io_internal::RunGuarded(HashBytes, &job);
  if (fault == nullptr) return job.hash;
  const uint64_t within =
      static_cast<uint64_t>(static_cast<const std::byte*>(fault) - bytes.data());
  return DataLossError(fmt::format(
      "{}: byte offset {} (tensor '{}') is no longer in the file, whose loaded tensors are views "
      "of its memory mapping: the file was truncated after or during the load; load it again once "
      "it is complete",
      path, header.data_offset() + info.data_begin + within, info.name));
}

}  // namespace

Result<std::map<std::string, uint64_t>> HashTensorsPlainRead(const std::string& path,
                                                             const Header& header,
                                                             const RemoteOpenOptions& remote) {
  if (!RemoteScheme(path).empty() || IsArchiveMemberUri(path)) {
    // A remote object: synchronous ReadAt() over one connection, not the engine's batched path.
    OpenOptions open;
    open.remote = remote;
    open.remote.connections = 1;
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(path, open));
    return HashTensors(path, header, [&](uint64_t pos, std::span<std::byte> dst) {
      return source->ReadAt(pos, dst);
    });
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  auto result =
      HashTensors(path, header, [&](uint64_t pos, std::span<std::byte> dst) -> Result<size_t> {
        while (true) {
          const ssize_t n = pread(fd, dst.data(), dst.size(), static_cast<off_t>(pos));
          if (n >= 0) return static_cast<size_t>(n);
          if (errno != EINTR) return ErrnoToStatus(errno, "pread", path, static_cast<int64_t>(pos));
        }
      });
  close(fd);
  return result;
}

Result<VerifyReport> VerifyModel(const LoadedModel& model, const RemoteOpenOptions& remote) {
  VerifyReport report;
  for (const ModelFile& f : model.layout.files) {
    const Header& h = model.headers.at(f.path);
    // The loaded bytes first: a truncated file shows up there as a guarded fault, not as a failed
    // read of the file.
    std::map<std::string, uint64_t> loaded;
    for (const TensorInfo& t : h.tensors) {
      auto it = model.tensors.find(sink::QualifiedTensorName(f.component, t.name));
      if (it == model.tensors.end()) continue;
      FL_ASSIGN_OR_RETURN(loaded[t.name], HashLoaded(f.path, h, t, it->second));
    }
    FL_ASSIGN_OR_RETURN(auto hashes, HashTensorsPlainRead(f.path, h, remote));
    for (const auto& [name, expected] : hashes) {
      const std::string qualified = sink::QualifiedTensorName(f.component, name);
      auto it = loaded.find(name);
      if (it == loaded.end()) {
        report.mismatches.push_back(fmt::format("{}: missing from the loaded model", qualified));
        continue;
      }
      const uint64_t got = it->second;
      if (got != expected) {
        report.mismatches.push_back(fmt::format("{} ({}): loaded xxh3 {:016x} != file xxh3 {:016x}",
                                                qualified, f.path, got, expected));
      }
      ++report.tensors_checked;
    }
  }
  return report;
}

}  // namespace flashload::cli
