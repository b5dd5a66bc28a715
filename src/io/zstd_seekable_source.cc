// Design of the decompressing source.
//
// Reads: ReadAt() walks the frames its range covers (SeekTable::FrameAt). A frame the read wants
// whole is decompressed straight into the caller's buffer (unless cached): the strategy's chunks
// are multiples of the frame size and the packer starts a frame at every member's data, so most
// frames go this way, with no buffer and no copy. A frame wanted in part comes from the cache, or
// from a fetch already under way in another thread (a shared_future in pending_, so two reads that
// share a frame never fetch or decompress it twice), or is fetched by this thread into a new
// cache entry. Fetching a frame is one ReadExact() of its compressed bytes (into a per-thread
// buffer) from the compressed source, a check that they are exactly one zstd frame, one
// ZSTD_decompressDCtx() of exactly the size the table gives, and its XXH64 checksum when the table
// has one.
// Decompression runs on the reading thread: the batch interface's workers (a ReadPool, started on
// the first batch), or the member sources' workers above (src/io/archive_source.cc), so there are
// as many frames in flight, fetched and decompressed at once, as reads.
// Cache: the last `cache_capacity_` frames used, least recently used evicted first; readers hold
// a shared_ptr to the frame they copy from, so eviction never frees bytes being read. Failed
// fetches are not cached: a later read tries again (a kUnavailable stays retryable).
// Cancellation: the pool completes queued reads with kCancelled; a read already fetching finishes.
#include "io/zstd_seekable_source.h"

#include <fmt/format.h>
#include <zstd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace flashload {
namespace {

struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One decompression context per thread, reused across frames.
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  return dctx.get();
}

uint32_t ThreadsFor(const Source& compressed, const SeekableZstdOptions& options) {
  if (options.threads > 0) return options.threads;
  return std::clamp<uint32_t>(compressed.caps().max_in_flight, 4, 32);
}

// The smallest multiple of the largest frame that is at least defaults::kChunkBytes / 2.
uint64_t PreferredChunk(const format::SeekTable& table) {
  uint64_t largest = 1;
  for (const format::SeekFrame& f : table.frames) {
    largest = std::max<uint64_t>(largest, f.decompressed_size);
  }
  const uint64_t want = defaults::kChunkBytes / 2;
  return std::max<uint64_t>(1, (want + largest - 1) / largest) * largest;
}

std::string FrameWhere(const std::string& name, size_t index, const format::SeekFrame& f) {
  return fmt::format(
      "{}: zstd frame {} (compressed byte offset {}, {} bytes; decompressed byte offset {}, {} "
      "bytes)",
      name, index, f.compressed_offset, f.compressed_size, f.decompressed_offset,
      f.decompressed_size);
}

}  // namespace

SeekableZstdSource::SeekableZstdSource(std::shared_ptr<const Source> compressed,
                                       format::SeekTable table, const SeekableZstdOptions& options)
    : compressed_(std::move(compressed)),
      table_(std::move(table)),
      options_(options),
      threads_(ThreadsFor(*compressed_, options)),
      cache_capacity_(options.cached_frames > 0 ? options.cached_frames : 2 * threads_ + 4),
      preferred_chunk_(PreferredChunk(table_)),
      backend_(fmt::format("zstd-seekable({})", compressed_->backend())) {}

SeekableZstdSource::~SeekableZstdSource() { pool_.reset(); }

SourceCaps SeekableZstdSource::caps() const {
  SourceCaps c;
  c.max_in_flight = threads_;
  c.preferred_chunk = preferred_chunk_;
  return c;
}

io_internal::ReadPool& SeekableZstdSource::pool() {
  std::call_once(pool_once_, [this] {
    pool_ = std::make_unique<io_internal::ReadPool>(
        threads_,
        [this](const ReadRequest& r, uint32_t) {
          return ReadAt(r.offset, std::span(r.dst, r.length));
        },
        name());
  });
  return *pool_;
}

Status SeekableZstdSource::FetchAndDecompress(size_t index, char* out) const {
  const format::SeekFrame& f = table_.frames[index];
  // One buffer per thread for compressed bytes, grown as needed: no allocation (and no fresh pages
  // to fault in) per frame.
  thread_local std::unique_ptr<char[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < f.compressed_size) {
    buffer.reset(new char[f.compressed_size]);
    capacity = f.compressed_size;
  }
  char* compressed = buffer.get();
  Status fetched =
      ReadExact(*compressed_, f.compressed_offset,
                std::span(reinterpret_cast<std::byte*>(compressed), f.compressed_size));
  if (!fetched.ok()) {
    return Status(fetched.code(), fmt::format("{}: fetching it: {}", FrameWhere(name(), index, f),
                                              fetched.message()));
  }
  auto damaged = [&](std::string_view what) {
    return DataLossError(
        fmt::format("{}: {}; the archive is damaged: fetch it again, or pack it again",
                    FrameWhere(name(), index, f), what));
  };
  const size_t frame_size = ZSTD_findFrameCompressedSize(compressed, f.compressed_size);
  if (ZSTD_isError(frame_size)) {
    return damaged(fmt::format("not a zstd frame ({})", ZSTD_getErrorName(frame_size)));
  }
  if (frame_size != f.compressed_size) {
    return damaged(fmt::format("the frame holds {} bytes, the seek table says {}", frame_size,
                               f.compressed_size));
  }
  const size_t n =
      ZSTD_decompressDCtx(ThreadDCtx(), out, f.decompressed_size, compressed, f.compressed_size);
  if (ZSTD_isError(n)) return damaged(fmt::format("zstd: {}", ZSTD_getErrorName(n)));
  if (n != f.decompressed_size) {
    return damaged(
        fmt::format("decompresses to {} bytes, the seek table says {}", n, f.decompressed_size));
  }
  if (f.checksum && options_.verify_checksums) {
    const uint32_t sum = static_cast<uint32_t>(XXH64(out, n, 0));
    if (sum != *f.checksum) {
      return damaged(
          fmt::format("checksum 0x{:08x} of the decompressed bytes, the seek table says 0x{:08x}",
                      sum, *f.checksum));
    }
  }
  frames_decompressed_.fetch_add(1);
  return Status::Ok();
}

void SeekableZstdSource::PinSmallFrames(uint32_t max_frame_bytes, uint64_t max_total_bytes,
                                        uint32_t threads) {
  std::vector<size_t> wanted;
  uint64_t total = 0;
  for (size_t i = 0; i < table_.frames.size(); ++i) {
    const uint32_t n = table_.frames[i].decompressed_size;
    if (n == 0 || n > max_frame_bytes) continue;
    if (total + n > max_total_bytes) break;
    total += n;
    wanted.push_back(i);
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < wanted.size(); k = next++) {
      const size_t i = wanted[k];
      std::shared_ptr<char[]> bytes(new char[table_.frames[i].decompressed_size]);
      if (!FetchAndDecompress(i, bytes.get()).ok()) continue;
      std::lock_guard lock(mu_);
      pinned_.emplace(i, FrameBytes(std::move(bytes)));
    }
  };
  std::vector<std::thread> workers;
  const size_t n = std::min<size_t>(std::max<uint32_t>(threads, 1), wanted.size());
  for (size_t t = 1; t < n; ++t) workers.emplace_back(work);
  work();
  for (std::thread& t : workers) t.join();
}

size_t SeekableZstdSource::pinned_frames() const {
  std::lock_guard lock(mu_);
  return pinned_.size();
}

SeekableZstdSource::FrameBytes SeekableZstdSource::Cached(size_t index) const {
  std::lock_guard lock(mu_);
  if (auto it = pinned_.find(index); it != pinned_.end()) return it->second;
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (it->first == index) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front().second;
    }
  }
  return nullptr;
}

Result<SeekableZstdSource::FrameBytes> SeekableZstdSource::Frame(size_t index,
                                                                 const ReadOptions& options) const {
  std::unique_lock lock(mu_);
  if (auto it = pinned_.find(index); it != pinned_.end()) return it->second;
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (it->first == index) {
      cache_.splice(cache_.begin(), cache_, it);
      return cache_.front().second;
    }
  }
  if (auto it = pending_.find(index); it != pending_.end()) {
    std::shared_future<Result<FrameBytes>> wait = it->second;
    lock.unlock();
    return wait.get();
  }
  std::promise<Result<FrameBytes>> promise;
  pending_.emplace(index, promise.get_future().share());
  lock.unlock();
  // Not zero-filled: decompression writes every byte.
  std::shared_ptr<char[]> bytes(new char[table_.frames[index].decompressed_size]);
  Status s = FetchAndDecompress(index, bytes.get());
  Result<FrameBytes> frame =
      s.ok() ? Result<FrameBytes>(FrameBytes(std::move(bytes))) : Result<FrameBytes>(std::move(s));
  lock.lock();
  pending_.erase(index);
  if (frame.ok()) {
    cache_.emplace_front(index, *frame);
    while (cache_.size() > cache_capacity_) cache_.pop_back();
  }
  lock.unlock();
  promise.set_value(frame);
  return frame;
}

Result<size_t> SeekableZstdSource::ReadAt(uint64_t offset, std::span<std::byte> dst,
                                          const ReadOptions& options) const {
  if (offset >= size() || dst.empty()) return size_t{0};
  const uint64_t end = offset + std::min<uint64_t>(dst.size(), size() - offset);
  std::optional<size_t> index = table_.FrameAt(offset);
  uint64_t pos = offset;
  while (pos < end) {
    if (!index || *index >= table_.frames.size()) {
      return InternalError(
          fmt::format("{}: no frame holds decompressed byte offset {}", name(), pos));
    }
    const format::SeekFrame& f = table_.frames[*index];
    if (f.decompressed_size == 0) {
      ++*index;
      continue;
    }
    const uint64_t within = pos - f.decompressed_offset;
    const uint64_t n = std::min<uint64_t>(end - pos, f.decompressed_size - within);
    char* out = reinterpret_cast<char*>(dst.data() + (pos - offset));
    if (n == f.decompressed_size) {
      // The read wants the whole frame: decompress straight into it (no buffer, no copy), unless
      // it is cached. Aligned reads (the strategy's chunks are multiples of the frame size) share
      // no frame, so caching it would only evict frames other reads share.
      if (FrameBytes cached = Cached(*index)) {
        std::memcpy(out, cached.get(), n);
      } else {
        FL_RETURN_IF_ERROR(FetchAndDecompress(*index, out));
      }
    } else {
      FL_ASSIGN_OR_RETURN(FrameBytes frame, Frame(*index, options));
      std::memcpy(out, frame.get() + within, n);
    }
    pos += n;
    ++*index;
  }
  return static_cast<size_t>(end - offset);
}

Result<std::unique_ptr<SeekableZstdSource>> OpenSeekableZstd(
    std::shared_ptr<const Source> compressed, const SeekableZstdOptions& options) {
  const uint64_t size = compressed->size();
  if (size < format::kSeekTableFooterSize) {
    return NotFoundError(fmt::format(
        "{}: {} bytes, too short for a zstd seek table: it is not in the zstd seekable format",
        compressed->name(), size));
  }
  uint8_t footer[format::kSeekTableFooterSize];
  FL_RETURN_IF_ERROR(
      ReadExact(*compressed, size - sizeof(footer), std::as_writable_bytes(std::span(footer))));
  FL_ASSIGN_OR_RETURN(const uint64_t table_size,
                      format::SeekTableSizeFromFooter(footer, compressed->name(), options.limits));
  if (table_size > size) {
    return DataLossError(fmt::format(
        "{}: the seek table's footer announces {} bytes of table, the stream has {}; the archive "
        "is truncated or damaged",
        compressed->name(), table_size, size));
  }
  std::vector<uint8_t> table_bytes(table_size);
  FL_RETURN_IF_ERROR(
      ReadExact(*compressed, size - table_size, std::as_writable_bytes(std::span(table_bytes))));
  FL_ASSIGN_OR_RETURN(
      format::SeekTable table,
      format::ParseSeekTable(table_bytes, size, compressed->name(), options.limits));
  // A frame's compressed bytes are fetched whole: bound them by what zstd can produce for its
  // decompressed size, so a crafted table cannot make a read allocate more than the limits allow.
  for (size_t i = 0; i < table.frames.size(); ++i) {
    const format::SeekFrame& f = table.frames[i];
    if (f.compressed_size > ZSTD_compressBound(f.decompressed_size) + 1024) {
      return DataLossError(fmt::format(
          "{}: seek table entry {}: {} compressed bytes for {} decompressed, more than zstd ever "
          "writes; the archive is damaged",
          compressed->name(), i, f.compressed_size, f.decompressed_size));
    }
  }
  return std::make_unique<SeekableZstdSource>(std::move(compressed), std::move(table), options);
}

}  // namespace flashload
