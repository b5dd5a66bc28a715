// ZstdStreamReader: the decompressed bytes of a plain zstd stream (one or more frames, no seek
// table: what `zstd`, `tar -I zstd` or `tar --zstd` write), read front to back.
//
// The compressed bytes come from any Source (a local file, an HTTP or S3 object), read in large
// sequential requests with a few in flight through the Source's batch interface
// (Submit()/Reap()), so the storage or the network works while the calling thread decompresses.
// Decompressed bytes go straight into the caller's buffer (ZSTD_decompressStream); the reader
// itself holds only its read buffers (`read_bytes` × (`reads_in_flight` + 1)) and libzstd's window
// (at most 2^window_log_max bytes).
//
// Integrity: libzstd checks each frame's content checksum (when the frame has one) as the frame
// ends, so bytes handed out before a frame's end are verified only when the stream is read past
// that end: a caller that must not trust unverified bytes reads the stream to its end (Skip()
// with UINT64_MAX) before using them.
//
// Thread-safety: one thread at a time (a reader is a cursor). Ownership: owns the compressed
// source. Lifetime: the destructor cancels and reaps every read in flight before freeing buffers.
// Errors: read errors keep their code (a kUnavailable stays retryable) with the compressed byte
// offset added; bytes that do not decode are kDataLoss, and a stream that ends inside a frame is
// kDataLoss ("truncated"), both naming the stream and the compressed and decompressed byte
// offsets; a frame that needs a window above the limit is kResourceExhausted naming the stream
// and the window it asks for. After an error the reader is unusable: every later call returns
// the same error.
#ifndef FLASHLOAD_IO_ZSTD_STREAM_READER_H_
#define FLASHLOAD_IO_ZSTD_STREAM_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "flashload/source.h"
#include "flashload/status.h"

struct ZSTD_DCtx_s;

namespace flashload {

struct ZstdStreamOptions {
  // Largest window a frame may ask for, as a power of two: 27 (128 MiB) covers every level of
  // `zstd` up to --ultra -22 without --long=28+.
  uint32_t window_log_max = 27;
  // Bytes per read of the compressed source, and reads kept in flight ahead of the decompression.
  uint64_t read_bytes = 8ull << 20;
  uint32_t reads_in_flight = 2;
};

class ZstdStreamReader {
 public:
  // Starts reading `compressed` from its first byte. kInvalidArgument for options out of range
  // (window_log_max outside libzstd's bounds, read_bytes 0 or above 1 GiB, reads_in_flight 0 or
  // above 16); kResourceExhausted when the buffers cannot be allocated.
  static Result<std::unique_ptr<ZstdStreamReader>> Open(std::unique_ptr<Source> compressed,
                                                        const ZstdStreamOptions& options = {});
  ~ZstdStreamReader();
  ZstdStreamReader(const ZstdStreamReader&) = delete;
  ZstdStreamReader& operator=(const ZstdStreamReader&) = delete;

  // Decompresses the next dst.size() bytes into `dst`. Returns the bytes placed: fewer than
  // dst.size() only at the end of the stream (after its last complete frame).
  Result<size_t> Read(std::span<std::byte> dst);
  // Decompresses and drops the next `n` bytes; returns how many (fewer only at the end of the
  // stream). Skip(UINT64_MAX) reads to the end, verifying every frame.
  Result<uint64_t> Skip(uint64_t n);

  // Decompressed bytes handed out (read or skipped) so far: the offset of the next byte.
  uint64_t position() const { return position_; }
  // Compressed bytes the decoder has consumed so far.
  uint64_t compressed_position() const { return input_offset_ + input_.pos; }
  // The compressed source (its name() and size() for messages and progress).
  const Source& source() const { return *source_; }

 private:
  struct Input {
    const std::byte* data = nullptr;
    size_t size = 0;
    size_t pos = 0;
  };
  struct Slot {
    std::byte* buffer = nullptr;  // aligned to 4096 (direct-I/O sources)
    uint64_t offset = 0;          // of the read in the compressed stream
    uint64_t length = 0;          // bytes wanted (before alignment)
    bool in_flight = false;
    bool done = false;
    ReadResult result;
  };

  ZstdStreamReader(std::unique_ptr<Source> source, const ZstdStreamOptions& options);
  Status Start();
  // Queues the next read of the stream into `slot`, if any bytes are left to read.
  Status SubmitNext(size_t slot);
  // Makes the next read's bytes the decoder's input; sets input_done_ at the end of the stream.
  Status NextInput();
  Status Fail(Status status);
  void CancelAndReap();

  const std::unique_ptr<Source> source_;
  const ZstdStreamOptions options_;
  uint32_t alignment_ = 1;
  uint64_t read_bytes_ = 0;  // options_.read_bytes, a multiple of alignment_
  ZSTD_DCtx_s* dctx_ = nullptr;
  std::vector<Slot> slots_;
  size_t next_slot_ = 0;           // the slot whose bytes the decoder takes next
  size_t next_submit_slot_ = 0;    // the slot the next read is queued into
  int current_slot_ = -1;          // the slot the decoder is consuming (-1: none)
  uint64_t next_read_offset_ = 0;  // of the next read to submit
  uint64_t input_offset_ = 0;      // compressed offset of input_.data[0]
  Input input_;
  bool input_done_ = false;
  bool frame_open_ =
      true;  // (an empty source is not a stream: it must hold a frame)  // the decoder is inside a frame (or holds output to flush)
  uint64_t position_ = 0;
  Status error_;
  std::vector<std::byte> scratch_;  // Skip()'s destination
};

}  // namespace flashload

#endif  // FLASHLOAD_IO_ZSTD_STREAM_READER_H_
