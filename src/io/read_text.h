// Reading a small text file of a model (an index, model_index.json, a listing page) through any
// store: one function and one limit, so every store (local, HTTP, S3) refuses the same sizes with
// the same error.
//
// Thread-safety: reentrant; `read_at` and `source` are used from the calling thread only.
#ifndef FLASHLOAD_IO_READ_TEXT_H_
#define FLASHLOAD_IO_READ_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload {

// The largest text file a store reads whole. An index of a model with 100,000 tensors is under
// 10 MiB.
inline constexpr uint64_t kMaxTextFileBytes = 64ull << 20;

// A positional read as Source::ReadAt(): the bytes read into `dst`, fewer only at end of file.
using PositionalRead = std::function<Result<size_t>(uint64_t offset, std::span<std::byte> dst)>;

// The whole `size` bytes of the file `name` read through `read_at`. Errors:
// kResourceExhausted naming the file, its size and `limit` when size > limit (nothing is read);
// kDataLoss naming the file and byte offset when it ends before `size` bytes (it shrank); the
// errors of `read_at` as they come.
Result<std::string> ReadTextFile(std::string_view name, uint64_t size,
                                 const PositionalRead& read_at, uint64_t limit = kMaxTextFileBytes);
// The same through a source.
Result<std::string> ReadTextFile(const Source& source, uint64_t limit = kMaxTextFileBytes);

}  // namespace flashload

#endif  // FLASHLOAD_IO_READ_TEXT_H_
