#include "flashload/writer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <set>

#include "format/json_text.h"

namespace flashload {
namespace {

constexpr size_t kFillBufferBytes = 8 << 20;

struct Layout {
  SerializedHeader header;
  std::vector<size_t> order;  // index into the caller's tensors, in file order
};

Result<uint64_t> TensorBytes(const TensorToWrite& t) {
  uint64_t elements = 1;
  for (uint64_t d : t.shape) {
    if (__builtin_mul_overflow(elements, d, &elements)) {
      return InvalidArgumentError(fmt::format("tensor {}: element count overflows 64 bits",
                                              format_internal::Quote(t.name)));
    }
  }
  uint64_t bits;
  if (__builtin_mul_overflow(elements, uint64_t{DtypeBits(t.dtype)}, &bits)) {
    return InvalidArgumentError(
        fmt::format("tensor {}: bit count overflows 64 bits", format_internal::Quote(t.name)));
  }
  if (bits % 8 != 0) {
    return InvalidArgumentError(
        fmt::format("tensor {}: {} elements of {} are {} bits, not whole bytes",
                    format_internal::Quote(t.name), elements, DtypeName(t.dtype), bits));
  }
  return bits / 8;
}

Result<Layout> BuildLayout(std::span<const TensorToWrite> tensors, const WriteOptions& options) {
  if (options.alignment < 8 || (options.alignment & (options.alignment - 1)) != 0) {
    return InvalidArgumentError(
        fmt::format("alignment {} is not a power of two >= 8", options.alignment));
  }
  Layout layout;
  layout.order.resize(tensors.size());
  std::iota(layout.order.begin(), layout.order.end(), 0);
  // The reference order: dtype descending, then name.
  std::sort(layout.order.begin(), layout.order.end(), [&](size_t a, size_t b) {
    if (tensors[a].dtype != tensors[b].dtype) return tensors[a].dtype > tensors[b].dtype;
    return tensors[a].name < tensors[b].name;
  });
  std::vector<std::string_view> names;
  names.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end()) {
    return InvalidArgumentError(
        fmt::format("tensor {} is given twice", format_internal::Quote(*dup)));
  }
  Header header;
  header.metadata = options.metadata;
  header.tensors.reserve(tensors.size());
  uint64_t offset = 0;
  for (size_t i : layout.order) {
    const TensorToWrite& t = tensors[i];
    if (t.name == "__metadata__") {
      return InvalidArgumentError("a tensor cannot be named __metadata__");
    }
    FL_ASSIGN_OR_RETURN(const uint64_t bytes, TensorBytes(t));
    if (!t.fill && t.data.size() != bytes) {
      return InvalidArgumentError(fmt::format(
          "tensor {}: {} bytes of data, but {} {} needs {} bytes", format_internal::Quote(t.name),
          t.data.size(), DtypeName(t.dtype), fmt::format("[{}]", fmt::join(t.shape, ", ")), bytes));
    }
    TensorInfo& info = header.tensors.emplace_back();
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.data_begin = offset;
    if (__builtin_add_overflow(offset, bytes, &offset)) {
      return InvalidArgumentError("total data size overflows 64 bits");
    }
    info.data_end = offset;
  }
  std::string json = HeaderToJson(header);
  const uint64_t padded =
      (8 + json.size() + options.alignment - 1) / options.alignment * options.alignment;
  const uint64_t n = padded - 8;
  if (n > kDefaultHeaderLimit) {
    return InvalidArgumentError(fmt::format(
        "header of {} bytes exceeds the format's limit of {} bytes", n, kDefaultHeaderLimit));
  }
  json.resize(n, ' ');
  std::string& bytes = layout.header.bytes;
  bytes.reserve(padded);
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  bytes += json;
  layout.header.layout = std::move(header.tensors);
  return layout;
}

Status WriteAll(int fd, const void* data, size_t size, const std::string& path, uint64_t offset) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path, static_cast<int64_t>(offset));
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

std::string TempPath(const std::string& path) {
  std::random_device rd;
  return fmt::format("{}.tmp.{:08x}{:08x}", path, rd(), rd());
}

Status WriteBody(int fd, const std::string& tmp, const Layout& layout,
                 std::span<const TensorToWrite> tensors) {
  const std::string& head = layout.header.bytes;
  FL_RETURN_IF_ERROR(WriteAll(fd, head.data(), head.size(), tmp, 0));
  std::unique_ptr<std::byte[]> buffer;
  uint64_t file_offset = head.size();
  for (size_t k = 0; k < layout.order.size(); ++k) {
    const TensorToWrite& t = tensors[layout.order[k]];
    const uint64_t size = layout.header.layout[k].byte_size();
    if (!t.fill) {
      FL_RETURN_IF_ERROR(WriteAll(fd, t.data.data(), size, tmp, file_offset));
      file_offset += size;
      continue;
    }
    if (!buffer) buffer = std::make_unique<std::byte[]>(kFillBufferBytes);
    for (uint64_t done = 0; done < size;) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(kFillBufferBytes, size - done));
      t.fill(std::span<std::byte>(buffer.get(), chunk), done);
      FL_RETURN_IF_ERROR(WriteAll(fd, buffer.get(), chunk, tmp, file_offset));
      done += chunk;
      file_offset += chunk;
    }
  }
  if (::fsync(fd) != 0) return ErrnoToStatus(errno, "fsync", tmp);
  return Status::Ok();
}

}  // namespace

Result<SerializedHeader> SerializeHeader(std::span<const TensorToWrite> tensors,
                                         const WriteOptions& options) {
  FL_ASSIGN_OR_RETURN(Layout layout, BuildLayout(tensors, options));
  return std::move(layout.header);
}

Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                        const WriteOptions& options) {
  FL_ASSIGN_OR_RETURN(const Layout layout, BuildLayout(tensors, options));
  const std::string tmp = TempPath(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "open", tmp);
  Status status = WriteBody(fd, tmp, layout, tensors);
  if (::close(fd) != 0 && status.ok()) status = ErrnoToStatus(errno, "close", tmp);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoToStatus(errno, "rename", tmp);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  // Make the rename itself durable; best effort, the data is already safe.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

}  // namespace flashload
