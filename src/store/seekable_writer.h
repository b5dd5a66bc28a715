// Writing the zstd seekable format (src/format/zstd_seekable.h): a stream of independent zstd
// frames, each compressed with libzstd on its own, followed by the seek table.
//
// Frames: the writer gathers the bytes given to Write() into the current frame and closes it when
// it holds `frame_bytes` decompressed bytes, or when EndFrame() is called (an empty frame is never
// written). Each closed frame is compressed independently (one ZSTD_compress2() call with the
// level, the content size and, with `zstd_checksums`, zstd's own content checksum), on up to
// `threads` worker threads; frames are handed to the sink strictly in order. Finish() closes the
// last frame and appends the seek table (BuildSeekTable), with the low 32 bits of each frame's
// XXH64 when `seek_checksums` is set. Ordinary decoders (`zstd -d`) decompress the frames in order
// and skip the table.
//
// Errors are sticky: after a failed call (a sink error, a compression error) every later call
// returns the same Status, and nothing more reaches the sink. The writer never retries a sink.
//
// Memory: at most 2 x threads frames are in flight (each its input and a compressBound() output
// buffer), so memory is bounded by about 4 x threads x frame_bytes whatever the stream's size.
//
// Thread-safety: a writer is used by one thread at a time (thread-compatible); the sink is called
// only on that thread, from within Write(), EndFrame() and Finish(). Destroying a writer that was
// not finished stops its workers and drops the frames in flight (the sink's bytes are then an
// incomplete stream: the caller removes them).
#ifndef FLASHLOAD_STORE_SEEKABLE_WRITER_H_
#define FLASHLOAD_STORE_SEEKABLE_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "flashload/status.h"

namespace flashload::store {

// Receives the bytes of the compressed stream, in order. Must consume all of them or return an
// error (which the writer returns from the call that produced the bytes).
using ByteSink = std::function<Status(std::span<const std::byte> bytes)>;

// A ByteSink appending to the file descriptor `fd` (borrowed: it must stay open while the sink is
// used) from its current position, retrying EINTR and partial writes. Errors come from
// ErrnoToStatus() naming `name` and the byte offset of the failed write.
ByteSink FdByteSink(int fd, std::string name);

struct SeekableWriterOptions {
  int level = 3;                             // zstd level (ZSTD_c_compressionLevel)
  uint64_t frame_bytes = uint64_t{4} << 20;  // decompressed bytes per frame, 1 KiB .. 1 GiB
  uint32_t threads = 0;                      // compressing threads; 0: min(cores, 8)
  bool seek_checksums = true;                // XXH64-low-32 per frame in the seek table
  bool zstd_checksums = true;                // zstd's content checksum in each frame
};

class SeekableZstdWriter {
 public:
  // A writer sending its stream to `sink`; `name` (the archive) appears in error messages.
  // kInvalidArgument for a level outside ZSTD_minCLevel()..ZSTD_maxCLevel() or frame_bytes outside
  // 1 KiB .. 1 GiB; kResourceExhausted when a zstd context cannot be created.
  static Result<std::unique_ptr<SeekableZstdWriter>> Create(ByteSink sink, std::string name,
                                                            const SeekableWriterOptions& options);
  ~SeekableZstdWriter();
  SeekableZstdWriter(const SeekableZstdWriter&) = delete;
  SeekableZstdWriter& operator=(const SeekableZstdWriter&) = delete;

  // Appends `bytes` to the decompressed stream (copied; the span is not kept).
  Status Write(std::span<const std::byte> bytes);
  // Closes the current frame so that the next byte written begins a new frame. A no-op when the
  // current frame is empty.
  Status EndFrame();
  // Closes the last frame, waits for every frame, and writes the seek table. After Finish() only
  // the accessors may be called; a second Finish() returns kFailedPrecondition.
  Status Finish();

  uint64_t decompressed_bytes() const;  // given to Write() so far
  uint64_t compressed_bytes() const;    // given to the sink so far (seek table included)
  uint64_t frames() const;              // frames given to the sink so far

 private:
  struct Impl;
  explicit SeekableZstdWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_SEEKABLE_WRITER_H_
