// Writing safetensors files atomically.
//
// The file is written to `<path>.tmp.<random>` in the same folder, flushed (fsync), then renamed
// over `path`; on any error the temporary file is removed and `path` is untouched. Tensors are laid
// out in the reference order (dtype descending, then name), and the header is padded with spaces so
// the data section starts at a multiple of `alignment` (8 by default, as the reference; 4096 lets
// O_DIRECT reads land tensors at page-aligned addresses).
//
// Thread-safety: calls may run concurrently; each writes its own temporary file. Two calls writing
// the same path at once cannot mix their bytes: `path` ends up as whichever file was renamed last.
#ifndef FLASHLOAD_WRITER_H_
#define FLASHLOAD_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/header.h"
#include "flashload/status.h"

namespace flashload {

// A tensor to write. Its bytes come either from `data` or, when `fill` is set, from a callback that
// fills a buffer (so large synthetic models can be written without holding them in memory):
// fill(dst, offset_within_tensor) must write all dst.size() bytes (at most 8 MiB a call); it is
// called on the writing thread, with offsets ascending from 0, and cannot report an error. `data`
// is borrowed: it must stay valid until WriteSafetensors() returns.
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  std::span<const std::byte> data;
  std::function<void(std::span<std::byte> dst, uint64_t offset)> fill;
};

struct WriteOptions {
  uint64_t alignment = 8;  // data section start alignment; a power of two >= 8
  std::optional<std::map<std::string, std::string>> metadata;  // `__metadata__`, when set
};

// Writes `tensors` to `path` atomically. Errors, with nothing written: kInvalidArgument naming the
// tensor for a duplicate name, the name "__metadata__", data whose size does not match dtype ×
// shape, or a size that is not whole bytes or overflows 64 bits; kInvalidArgument for a bad
// alignment or a header over kDefaultHeaderLimit. Failures of open, write, fsync, close and rename
// come from ErrnoToStatus(), naming the temporary file (and the byte offset of a failed write); the
// temporary file is then removed. The final fsync of the folder is best effort.
Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                        const WriteOptions& options = {});

// Builds the header bytes (8-byte length + padded JSON) and the laid-out TensorInfos for `tensors`
// without writing anything. Exposed for tests and for tools that stream the data themselves.
// Errors: the kInvalidArgument cases of WriteSafetensors().
struct SerializedHeader {
  std::string bytes;               // the first data_offset bytes of the file
  std::vector<TensorInfo> layout;  // in file order
};
Result<SerializedHeader> SerializeHeader(std::span<const TensorToWrite> tensors,
                                         const WriteOptions& options = {});

}  // namespace flashload

#endif  // FLASHLOAD_WRITER_H_
