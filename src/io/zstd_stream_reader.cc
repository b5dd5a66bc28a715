#include "io/zstd_stream_reader.h"

#include <fmt/format.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstdlib>

namespace flashload {
namespace {

constexpr uint64_t kBufferAlignment = 4096;
constexpr uint64_t kMaxReadBytes = uint64_t{1} << 30;
constexpr uint32_t kMaxReadsInFlight = 16;
constexpr size_t kScratchBytes = 1 << 20;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Result<std::unique_ptr<ZstdStreamReader>> ZstdStreamReader::Open(std::unique_ptr<Source> compressed,
                                                                 const ZstdStreamOptions& options) {
  const ZSTD_bounds window = ZSTD_dParam_getBounds(ZSTD_d_windowLogMax);
  if (static_cast<int>(options.window_log_max) < window.lowerBound ||
      static_cast<int>(options.window_log_max) > window.upperBound) {
    return InvalidArgumentError(fmt::format("{}: zstd window log limit {} outside [{}, {}]",
                                            compressed->name(), options.window_log_max,
                                            window.lowerBound, window.upperBound));
  }
  if (options.read_bytes == 0 || options.read_bytes > kMaxReadBytes ||
      options.reads_in_flight == 0 || options.reads_in_flight > kMaxReadsInFlight) {
    return InvalidArgumentError(
        fmt::format("{}: read size {} and reads in flight {} must be in [1, {}] and [1, {}]",
                    compressed->name(), options.read_bytes, options.reads_in_flight, kMaxReadBytes,
                    kMaxReadsInFlight));
  }
  std::unique_ptr<ZstdStreamReader> reader(new ZstdStreamReader(std::move(compressed), options));
  FL_RETURN_IF_ERROR(reader->Start());
  return reader;
}

ZstdStreamReader::ZstdStreamReader(std::unique_ptr<Source> source, const ZstdStreamOptions& options)
    : source_(std::move(source)), options_(options) {}

ZstdStreamReader::~ZstdStreamReader() {
  CancelAndReap();
  for (Slot& s : slots_) std::free(s.buffer);
  ZSTD_freeDCtx(dctx_);
}

Status ZstdStreamReader::Start() {
  const SourceCaps caps = source_->caps();
  if (caps.direct_io) alignment_ = std::max<uint32_t>(caps.alignment, 1);
  read_bytes_ = AlignUp(options_.read_bytes, alignment_);  // reads start on aligned offsets
  dctx_ = ZSTD_createDCtx();
  if (dctx_ == nullptr) {
    return ResourceExhaustedError(
        fmt::format("{}: cannot allocate a zstd decompression context", source_->name()));
  }
  const size_t set =
      ZSTD_DCtx_setParameter(dctx_, ZSTD_d_windowLogMax, static_cast<int>(options_.window_log_max));
  if (ZSTD_isError(set)) {
    return InternalError(fmt::format("{}: zstd window log limit {}: {}", source_->name(),
                                     options_.window_log_max, ZSTD_getErrorName(set)));
  }
  const uint64_t buffer_bytes = std::max(
      AlignUp(read_bytes_, std::max<uint64_t>(alignment_, kBufferAlignment)), kBufferAlignment);
  slots_.resize(options_.reads_in_flight + 1);
  for (Slot& s : slots_) {
    s.buffer = static_cast<std::byte*>(std::aligned_alloc(kBufferAlignment, buffer_bytes));
    if (s.buffer == nullptr) {
      return ResourceExhaustedError(fmt::format("{}: cannot allocate {} read buffers of {} bytes",
                                                source_->name(), slots_.size(), buffer_bytes));
    }
  }
  // One slot more than the reads in flight: the decoder consumes one while the others fill.
  for (size_t i = 0; i < options_.reads_in_flight; ++i) {
    FL_RETURN_IF_ERROR(Fail(SubmitNext(i)));
    next_submit_slot_ = (i + 1) % slots_.size();
  }
  return Status::Ok();
}

Status ZstdStreamReader::SubmitNext(size_t slot) {
  Slot& s = slots_[slot];
  const uint64_t size = source_->size();
  if (next_read_offset_ >= size) return Status::Ok();
  s.offset = next_read_offset_;
  s.length = std::min(read_bytes_, size - s.offset);
  s.done = false;
  s.result = ReadResult{};
  ReadRequest r;
  r.offset = s.offset;
  r.length = alignment_ > 1 ? AlignUp(s.length, alignment_) : s.length;
  r.dst = s.buffer;
  r.tag = slot;
  FL_RETURN_IF_ERROR(source_->Submit(std::span(&r, 1)));
  s.in_flight = true;
  next_read_offset_ += s.length;
  return Status::Ok();
}

Status ZstdStreamReader::NextInput() {
  // The slot the decoder just finished is free again. Reads are queued into the slots in ring
  // order, so the decoder takes them in the order of the stream.
  current_slot_ = -1;
  while (!slots_[next_submit_slot_].in_flight && next_read_offset_ < source_->size()) {
    FL_RETURN_IF_ERROR(SubmitNext(next_submit_slot_));
    next_submit_slot_ = (next_submit_slot_ + 1) % slots_.size();
  }
  Slot& s = slots_[next_slot_];
  if (!s.in_flight) {  // nothing more was queued: every byte has been read
    input_done_ = true;
    input_ = Input{};
    input_offset_ = source_->size();
    return Status::Ok();
  }
  while (!s.done) {
    ReadResult results[kMaxReadsInFlight + 1];
    FL_ASSIGN_OR_RETURN(const size_t n,
                        source_->Reap(std::span(results, slots_.size()), Deadline::Infinite()));
    for (size_t i = 0; i < n; ++i) {
      Slot& done = slots_.at(results[i].tag);
      done.done = true;
      done.result = std::move(results[i]);
    }
  }
  s.in_flight = false;
  if (!s.result.status.ok()) {
    return s.result.status.WithContext(
        fmt::format("reading the zstd stream at compressed byte offset {}", s.offset));
  }
  if (s.result.bytes < s.length) {
    return DataLossError(fmt::format(
        "{}: the source returned {} bytes at compressed byte offset {} where {} were expected "
        "before its end ({} bytes); it changed or was truncated while being read: load it again",
        source_->name(), s.result.bytes, s.offset, s.length, source_->size()));
  }
  current_slot_ = static_cast<int>(next_slot_);
  next_slot_ = (next_slot_ + 1) % slots_.size();
  input_ = Input{s.buffer, static_cast<size_t>(s.length), 0};
  input_offset_ = s.offset;
  return Status::Ok();
}

Status ZstdStreamReader::Fail(Status status) {
  if (!status.ok() && error_.ok()) error_ = status;
  return status;
}

void ZstdStreamReader::CancelAndReap() {
  bool any = false;
  for (const Slot& s : slots_) any |= s.in_flight && !s.done;
  if (!any) return;
  source_->Cancel();
  while (true) {
    bool waiting = false;
    for (const Slot& s : slots_) waiting |= s.in_flight && !s.done;
    if (!waiting) break;
    ReadResult results[kMaxReadsInFlight + 1];
    Result<size_t> n = source_->Reap(std::span(results, slots_.size()), Deadline::Infinite());
    if (!n.ok()) break;  // the source's destructor waits for what is left
    for (size_t i = 0; i < *n; ++i) slots_.at(results[i].tag).done = true;
  }
}

Result<size_t> ZstdStreamReader::Read(std::span<std::byte> dst) {
  FL_RETURN_IF_ERROR(error_);
  ZSTD_outBuffer out{dst.data(), dst.size(), 0};
  while (out.pos < out.size) {
    if (input_.pos == input_.size && !input_done_) FL_RETURN_IF_ERROR(Fail(NextInput()));
    // Every byte read and the last frame complete and flushed: the end of the stream.
    if (input_done_ && input_.pos == input_.size && !frame_open_) break;
    ZSTD_inBuffer in{input_.data, input_.size, input_.pos};
    const size_t before = out.pos;
    const size_t ret = ZSTD_decompressStream(dctx_, &out, &in);
    input_.pos = in.pos;
    if (ZSTD_isError(ret)) {
      const uint64_t at = compressed_position();
      const uint64_t decompressed = position_ + out.pos;
      if (ZSTD_getErrorCode(ret) == ZSTD_error_frameParameter_windowTooLarge) {
        return Fail(ResourceExhaustedError(fmt::format(
            "{}: a zstd frame near compressed byte offset {} (decompressed byte offset {}) needs "
            "a window larger than 2^{} bytes (it was compressed with --long or --ultra); "
            "flashload streams windows up to 2^{}: decompress it with `zstd -d --long=31` and "
            "load the .tar, or repack it with `flashload pack`",
            source_->name(), at, decompressed, options_.window_log_max, options_.window_log_max)));
      }
      return Fail(DataLossError(fmt::format(
          "{}: the zstd stream does not decode near compressed byte offset {} (decompressed byte "
          "offset {}): {}; the archive is damaged: fetch or pack it again",
          source_->name(), at, decompressed, ZSTD_getErrorName(ret))));
    }
    frame_open_ = ret != 0;
    if (input_done_ && out.pos == before && input_.pos == input_.size) {
      if (frame_open_) {
        return Fail(DataLossError(fmt::format(
            "{}: the zstd stream ends inside a frame at compressed byte offset {} (decompressed "
            "byte offset {}); the archive is truncated: fetch or pack it again",
            source_->name(), source_->size(), position_ + out.pos)));
      }
      break;  // the end of the stream, after a complete frame
    }
  }
  position_ += out.pos;
  return out.pos;
}

Result<uint64_t> ZstdStreamReader::Skip(uint64_t n) {
  FL_RETURN_IF_ERROR(error_);
  if (scratch_.empty() && n > 0) scratch_.resize(kScratchBytes);
  uint64_t skipped = 0;
  while (skipped < n) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(n - skipped, scratch_.size()));
    FL_ASSIGN_OR_RETURN(const size_t got, Read(std::span(scratch_.data(), want)));
    skipped += got;
    if (got < want) break;
  }
  return skipped;
}

}  // namespace flashload
