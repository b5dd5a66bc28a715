// The zstd seekable format (zstd's contrib/seekable_format): a zstd stream of independent frames,
// followed by a seek table in a skippable frame, so that a reader can find, fetch and decompress
// any range of the content without decompressing what comes before it. Ordinary decoders
// (`zstd -d`) skip the seek table and decompress the frames in order.
//
// The seek table (all integers little-endian):
//   u32 0x184D2A5E                     skippable frame magic
//   u32 frame_size                     bytes after this field: 8 or 12 per entry + 9
//   entries, one per frame:            u32 compressed size, u32 decompressed size,
//                                      [u32 checksum: low 32 bits of XXH64 (seed 0) of the
//                                       decompressed frame, when the descriptor's bit 7 is set]
//   footer (9 bytes):                  u32 number of frames, u8 descriptor (bit 7: checksums;
//                                      bits 2-6 reserved, must be 0), u32 0x8F92EAB1
// Pure functions of bytes: the decompression (libzstd) is io's (src/io/archive_source.*) and the
// store's (src/store/pack.*).
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_FORMAT_ZSTD_SEEKABLE_H_
#define FLASHLOAD_FORMAT_ZSTD_SEEKABLE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload::format {

inline constexpr uint32_t kSeekableMagic = 0x8F92EAB1;
inline constexpr uint32_t kSeekTableSkippableMagic = 0x184D2A5E;
inline constexpr uint64_t kSeekTableFooterSize = 9;

// One frame of a seekable stream, with its place in the compressed and decompressed streams.
struct SeekFrame {
  uint64_t compressed_offset = 0;
  uint32_t compressed_size = 0;
  uint64_t decompressed_offset = 0;
  uint32_t decompressed_size = 0;
  std::optional<uint32_t> checksum;
};

struct SeekTable {
  std::vector<SeekFrame> frames;
  uint64_t compressed_size = 0;    // of all frames (the seek table not included)
  uint64_t decompressed_size = 0;  // of all frames
  uint64_t table_size = 0;         // of the skippable frame holding the table, header included
  // The frame holding decompressed byte `offset` (binary search); nullopt past the end.
  std::optional<size_t> FrameAt(uint64_t offset) const;
};

// Limits against crafted tables.
struct SeekTableLimits {
  uint64_t max_frames = uint64_t{1} << 24;
  uint32_t max_frame_decompressed = uint32_t{1} << 30;  // 1 GiB per frame
};

// The size of the whole seek table, from the last kSeekTableFooterSize bytes of a stream
// (`footer`); kNotFound (naming `name`) when the footer's magic is not kSeekableMagic: the stream
// is not seekable (a plain .zst). kDataLoss for reserved bits set or a frame count too large.
Result<uint64_t> SeekTableSizeFromFooter(std::span<const uint8_t> footer, std::string_view name,
                                         const SeekTableLimits& limits = {});

// Parses a whole seek table (`table`: the skippable frame, from its magic to the end of the
// stream) of a stream of `stream_size` bytes called `name`. Errors (kDataLoss, naming the stream,
// the entry and its byte offset): a bad magic or frame size, frames that do not fit before the
// table, a frame of zero compressed size, a decompressed size beyond the limits, totals that
// overflow.
Result<SeekTable> ParseSeekTable(std::span<const uint8_t> table, uint64_t stream_size,
                                 std::string_view name, const SeekTableLimits& limits = {});

// The bytes of the seek table (skippable frame) for frames of the given sizes, in order; with
// checksums when every frame has one (all or none: kInvalidArgument otherwise).
Result<std::string> BuildSeekTable(std::span<const SeekFrame> frames);

}  // namespace flashload::format

#endif  // FLASHLOAD_FORMAT_ZSTD_SEEKABLE_H_
