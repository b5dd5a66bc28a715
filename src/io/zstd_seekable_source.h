// A Source whose bytes are the decompressed content of a zstd seekable stream
// (format/zstd_seekable.h) held in another Source of any backend (a local file, an HTTP or S3
// object): reads map to frames through the seek table, each frame is fetched with one ranged read
// of its compressed bytes, decompressed, checked against its checksum when the table has one, and
// kept in a small cache of recently decompressed frames.
//
// Thread-safety: all methods, from any thread (the Source contract). Concurrent reads that need
// the same frame share one fetch and one decompression.
// Ownership: the compressed source is shared (several archives' views may hold it); it must
// follow the Source contract and its ReadAt() must be thread-safe.
// Errors: a failed fetch comes back with its own code (a kUnavailable stays retryable) and the
// frame named; a frame that does not decompress, decompresses to another size than the table
// says, or fails its checksum is kDataLoss naming the stream, the frame index and its compressed
// and decompressed byte offsets.
#ifndef FLASHLOAD_IO_ZSTD_SEEKABLE_SOURCE_H_
#define FLASHLOAD_IO_ZSTD_SEEKABLE_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "flashload/source.h"
#include "format/zstd_seekable.h"
#include "io/read_pool.h"

namespace flashload {

struct SeekableZstdOptions {
  // Workers of the batch interface, and the reads worth keeping in flight (0: the compressed
  // source's max_in_flight, at least 4, at most 32).
  uint32_t threads = 0;
  // Decompressed frames kept after use (0: 2 × threads + 4: each read in flight may leave the
  // frames at both its ends for its neighbours). Frames in use by a read are kept anyway.
  uint32_t cached_frames = 0;
  bool verify_checksums = true;
  // Against crafted tables: a frame may decompress to at most 256 MiB (the packer writes a few
  // MiB), so a read never allocates more than that per frame.
  format::SeekTableLimits limits = {.max_frames = uint64_t{1} << 24,
                                    .max_frame_decompressed = uint32_t{256} << 20};
};

class SeekableZstdSource final : public io_internal::PooledSource {
 public:
  // Use OpenSeekableZstd().
  SeekableZstdSource(std::shared_ptr<const Source> compressed, format::SeekTable table,
                     const SeekableZstdOptions& options);
  ~SeekableZstdSource() override;

  const std::string& name() const override { return compressed_->name(); }
  uint64_t size() const override { return table_.decompressed_size; }
  // max_in_flight: the workers; preferred_chunk: the smallest multiple of the largest frame that
  // is at least defaults::kChunkBytes / 2 (a read then decompresses few frames it does not use
  // whole).
  SourceCaps caps() const override;
  std::string_view backend() const override { return backend_; }
  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options = {}) const override;

  const format::SeekTable& table() const { return table_; }

  // Fetches every frame of at most `max_frame_bytes` decompressed (tar headers, small members such
  // as configs and indexes), `threads` at a time, up to `max_total_bytes` in all, and keeps them
  // for the life of the source: walking an archive's headers and reading its small files then costs
  // no request each, which matters on a remote archive. Best effort: a frame that fails is not
  // kept and is fetched again (and its error reported) when read. Blocks until done.
  void PinSmallFrames(uint32_t max_frame_bytes, uint64_t max_total_bytes, uint32_t threads);
  // Frames kept by PinSmallFrames().
  size_t pinned_frames() const;
  // Frames decompressed since the open (a frame evicted and needed again counts twice).
  uint64_t frames_decompressed() const { return frames_decompressed_.load(); }

 protected:
  io_internal::ReadPool& pool() override;

 private:
  // A decompressed frame (table_.frames[i].decompressed_size bytes).
  using FrameBytes = std::shared_ptr<const char[]>;
  // The frame from the cache, from another reader's fetch, or fetched now and cached.
  Result<FrameBytes> Frame(size_t index, const ReadOptions& options) const;
  // The cached frame, or nullptr.
  FrameBytes Cached(size_t index) const;
  // Fetches frame `index` and decompresses it into `out` (its decompressed size), checked.
  Status FetchAndDecompress(size_t index, char* out) const;

  const std::shared_ptr<const Source> compressed_;
  const format::SeekTable table_;
  const SeekableZstdOptions options_;
  const uint32_t threads_;
  const size_t cache_capacity_;
  const uint64_t preferred_chunk_;
  std::string backend_;
  mutable std::atomic<uint64_t> frames_decompressed_{0};
  mutable std::mutex mu_;
  // Most recently used first; guarded by mu_.
  mutable std::list<std::pair<size_t, FrameBytes>> cache_;
  // Frames PinSmallFrames() keeps; guarded by mu_.
  mutable std::map<size_t, FrameBytes> pinned_;
  // Frames being fetched by one reader, which others wait for; guarded by mu_.
  mutable std::map<size_t, std::shared_future<Result<FrameBytes>>> pending_;
  std::once_flag pool_once_;
  std::unique_ptr<io_internal::ReadPool> pool_;  // last: its workers use the members above
};

// Reads the footer and seek table at the end of `compressed` and returns the decompressing view.
// Errors: kNotFound when the stream has no seek table (not in the seekable format: a plain .zst);
// kDataLoss for a malformed table, naming the stream; the compressed source's read errors.
Result<std::unique_ptr<SeekableZstdSource>> OpenSeekableZstd(
    std::shared_ptr<const Source> compressed, const SeekableZstdOptions& options = {});

}  // namespace flashload

#endif  // FLASHLOAD_IO_ZSTD_SEEKABLE_SOURCE_H_
