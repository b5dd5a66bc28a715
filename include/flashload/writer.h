// Writing safetensors files atomically.
//
// The file is written to `<path>.tmp.<random>` in the same folder, flushed (fsync), then renamed
// over `path`; on any error the temporary file is removed and `path` is untouched. Tensors are laid
// out in the reference order (dtype descending, then name), and the header is padded with spaces so
// the data section starts at a multiple of `alignment` (8 by default, as the reference; 4096 lets
// O_DIRECT reads land tensors at page-aligned addresses).
//
// Thread-safety: independent calls may run concurrently; the caller must not write the same path
// twice at once.
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
// fill(dst, offset_within_tensor) writes dst.size() bytes.
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;
  std::span<const std::byte> data;
  std::function<void(std::span<std::byte> dst, uint64_t offset)> fill;
};

struct WriteOptions {
  uint64_t alignment = 8;  // data section start alignment; a power of two >= 8
  std::optional<std::map<std::string, std::string>> metadata;
};

// Writes `tensors` to `path` atomically. Fails (kInvalidArgument) on duplicate names, data whose
// size does not match dtype × shape, or a bad alignment.
Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                        const WriteOptions& options = {});

// Builds the header bytes (8-byte length + padded JSON) and the laid-out TensorInfos for `tensors`
// without writing anything. Exposed for tests and for tools that stream the data themselves.
struct SerializedHeader {
  std::string bytes;               // the first data_offset bytes of the file
  std::vector<TensorInfo> layout;  // in file order
};
Result<SerializedHeader> SerializeHeader(std::span<const TensorToWrite> tensors,
                                         const WriteOptions& options = {});

}  // namespace flashload

#endif  // FLASHLOAD_WRITER_H_
