// Writing a tar stream member by member, with the header blocks of src/format/tar.h.
//
// The writer checks the shape of the stream as it goes: a member's data must be exactly the size
// its header announced (BeginFile() .. WriteData()* .. EndFile()), members come one at a time, and
// Finish() writes the end-of-archive blocks. It knows nothing of compression: the bytes go to a
// `write` callback, and `boundary` (when set) is called right before every header and right after
// it, so a seekable zstd writer can start a new frame at each header and at each member's data
// (SeekableZstdWriter::EndFrame()).
//
// Errors: kInvalidArgument (a caller bug: data beyond the announced size, EndFile() short of it,
// calls out of order, or a header BuildTarHeader() refuses); callback errors are returned as they
// are. Errors are sticky: after one, every call returns it.
//
// Thread-safety: thread-compatible; the callbacks run on the calling thread.
#ifndef FLASHLOAD_STORE_TAR_WRITER_H_
#define FLASHLOAD_STORE_TAR_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "flashload/status.h"

namespace flashload::store {

class TarWriter {
 public:
  using WriteFn = std::function<Status(std::span<const std::byte>)>;
  using BoundaryFn = std::function<Status()>;

  // `name` (the archive) appears in error messages. `boundary` may be empty.
  TarWriter(WriteFn write, BoundaryFn boundary, std::string name);

  // A folder member (mode 0755, mtime 0, uid/gid 0, no owner names).
  Status AddDirectory(std::string_view path);
  // Starts a regular file member of `size` bytes (mode 0644, mtime 0, uid/gid 0, no owner names).
  Status BeginFile(std::string_view path, uint64_t size);
  // Data of the current file member; in total exactly the size given to BeginFile().
  Status WriteData(std::span<const std::byte> bytes);
  // Ends the current file member (writes its padding).
  Status EndFile();
  // Writes the end of the archive (two zero blocks). No call may follow.
  Status Finish();

  uint64_t offset() const { return offset_; }  // bytes of tar written so far
  uint64_t members() const { return members_; }

 private:
  Status Header(std::string_view path, bool directory, uint64_t size);
  Status Emit(std::span<const std::byte> bytes);
  Status Fail(Status s);

  WriteFn write_;
  BoundaryFn boundary_;
  std::string name_;
  Status error_;
  bool in_file_ = false;
  bool finished_ = false;
  std::string file_path_;
  uint64_t file_size_ = 0;
  uint64_t file_written_ = 0;
  uint64_t offset_ = 0;
  uint64_t members_ = 0;
};

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_TAR_WRITER_H_
