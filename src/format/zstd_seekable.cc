#include "format/zstd_seekable.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace flashload::format {
namespace {

uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void AppendLe32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

constexpr uint8_t kChecksumFlag = 0x80;
constexpr uint8_t kReservedBits = 0x7c;
constexpr uint64_t kSkippableHeaderSize = 8;

struct Footer {
  uint32_t frames;
  bool checksums;
  uint64_t table_size;
};

Result<Footer> ParseFooter(std::span<const uint8_t> footer, std::string_view name,
                           const SeekTableLimits& limits) {
  if (footer.size() != kSeekTableFooterSize) {
    return InvalidArgumentError(fmt::format("{}: seek table footer: given {} bytes, it is {}", name,
                                            footer.size(), kSeekTableFooterSize));
  }
  if (LoadLe32(footer.data() + 5) != kSeekableMagic) {
    return NotFoundError(fmt::format(
        "{}: no zstd seek table at the end of the stream (the last 4 bytes are not 0x{:08X}): it "
        "is not in the zstd seekable format",
        name, kSeekableMagic));
  }
  const uint8_t descriptor = footer[4];
  if (descriptor & kReservedBits) {
    return DataLossError(
        fmt::format("{}: seek table footer: descriptor 0x{:02x} has reserved bits set; the stream "
                    "is damaged or "
                    "written by a newer format version",
                    name, descriptor));
  }
  Footer f;
  f.frames = LoadLe32(footer.data());
  f.checksums = descriptor & kChecksumFlag;
  if (f.frames > limits.max_frames) {
    return DataLossError(
        fmt::format("{}: seek table footer: {} frames, beyond the limit of {}; the stream is "
                    "damaged or crafted",
                    name, f.frames, limits.max_frames));
  }
  const uint64_t entry = f.checksums ? 12 : 8;
  f.table_size = kSkippableHeaderSize + uint64_t{f.frames} * entry + kSeekTableFooterSize;
  return f;
}

}  // namespace

std::optional<size_t> SeekTable::FrameAt(uint64_t offset) const {
  if (offset >= decompressed_size || frames.empty()) return std::nullopt;
  auto it = std::upper_bound(
      frames.begin(), frames.end(), offset,
      [](uint64_t off, const SeekFrame& f) { return off < f.decompressed_offset; });
  if (it == frames.begin()) return std::nullopt;
  return static_cast<size_t>(std::distance(frames.begin(), it) - 1);
}

Result<uint64_t> SeekTableSizeFromFooter(std::span<const uint8_t> footer, std::string_view name,
                                         const SeekTableLimits& limits) {
  FL_ASSIGN_OR_RETURN(const Footer f, ParseFooter(footer, name, limits));
  return f.table_size;
}

Result<SeekTable> ParseSeekTable(std::span<const uint8_t> table, uint64_t stream_size,
                                 std::string_view name, const SeekTableLimits& limits) {
  if (table.size() < kSkippableHeaderSize + kSeekTableFooterSize) {
    return DataLossError(
        fmt::format("{}: seek table of {} bytes is shorter than its {} fixed bytes", name,
                    table.size(), kSkippableHeaderSize + kSeekTableFooterSize));
  }
  if (table.size() > stream_size) {
    return DataLossError(fmt::format("{}: seek table of {} bytes is larger than the stream ({})",
                                     name, table.size(), stream_size));
  }
  const uint64_t table_offset = stream_size - table.size();
  FL_ASSIGN_OR_RETURN(
      const Footer f,
      ParseFooter(table.subspan(table.size() - kSeekTableFooterSize), name, limits));
  if (f.table_size != table.size()) {
    return DataLossError(fmt::format(
        "{}: seek table at byte offset {}: {} frames make a table of {} bytes, given {}", name,
        table_offset, f.frames, f.table_size, table.size()));
  }
  if (LoadLe32(table.data()) != kSeekTableSkippableMagic) {
    return DataLossError(fmt::format(
        "{}: seek table at byte offset {}: magic 0x{:08X} is not the skippable frame magic "
        "0x{:08X}; the stream is damaged",
        name, table_offset, LoadLe32(table.data()), kSeekTableSkippableMagic));
  }
  const uint32_t frame_size = LoadLe32(table.data() + 4);
  if (frame_size != table.size() - kSkippableHeaderSize) {
    return DataLossError(fmt::format(
        "{}: seek table at byte offset {}: skippable frame size {} does not match the {} bytes "
        "that follow it; the stream is damaged",
        name, table_offset, frame_size, table.size() - kSkippableHeaderSize));
  }
  SeekTable out;
  out.table_size = table.size();
  out.frames.reserve(f.frames);
  const size_t entry_size = f.checksums ? 12 : 8;
  uint64_t c_off = 0;
  uint64_t d_off = 0;
  for (uint32_t i = 0; i < f.frames; ++i) {
    const size_t at = kSkippableHeaderSize + i * entry_size;
    const uint8_t* p = table.data() + at;
    SeekFrame frame;
    frame.compressed_offset = c_off;
    frame.compressed_size = LoadLe32(p);
    frame.decompressed_offset = d_off;
    frame.decompressed_size = LoadLe32(p + 4);
    if (f.checksums) frame.checksum = LoadLe32(p + 8);
    auto bad = [&](std::string_view why) {
      return DataLossError(fmt::format(
          "{}: seek table entry {} (byte offset {} of the stream) {}; the stream is damaged", name,
          i, table_offset + at, why));
    };
    if (frame.compressed_size == 0) return bad("has a compressed size of 0");
    if (frame.decompressed_size > limits.max_frame_decompressed) {
      return bad(fmt::format("has a decompressed size of {}, beyond the limit of {}",
                             frame.decompressed_size, limits.max_frame_decompressed));
    }
    c_off += frame.compressed_size;  // at most 2^24 * 2^32: no overflow
    d_off += frame.decompressed_size;
    if (c_off > table_offset) {
      return bad(fmt::format("ends at compressed byte {}, past the seek table at {}", c_off,
                             table_offset));
    }
    out.frames.push_back(frame);
  }
  if (c_off != table_offset) {
    return DataLossError(fmt::format(
        "{}: the seek table's {} frames cover {} compressed bytes, but the table starts at byte "
        "offset {}; the stream is damaged or not one seekable stream",
        name, f.frames, c_off, table_offset));
  }
  out.compressed_size = c_off;
  out.decompressed_size = d_off;
  return out;
}

Result<std::string> BuildSeekTable(std::span<const SeekFrame> frames) {
  if (frames.size() > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError(
        fmt::format("seek table: {} frames, at most 2^32 - 1", frames.size()));
  }
  const size_t with = std::count_if(frames.begin(), frames.end(),
                                    [](const SeekFrame& f) { return f.checksum.has_value(); });
  if (with != 0 && with != frames.size()) {
    return InvalidArgumentError(fmt::format(
        "seek table: {} of {} frames have a checksum; give all or none", with, frames.size()));
  }
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].compressed_size == 0) {
      return InvalidArgumentError(
          fmt::format("seek table: frame {} has a compressed size of 0", i));
    }
  }
  const bool checksums = !frames.empty() && with == frames.size();
  const uint64_t body = uint64_t{frames.size()} * (checksums ? 12 : 8) + kSeekTableFooterSize;
  if (body > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError(
        fmt::format("seek table: {} frames do not fit one skippable frame", frames.size()));
  }
  std::string out;
  out.reserve(kSkippableHeaderSize + body);
  AppendLe32(out, kSeekTableSkippableMagic);
  AppendLe32(out, static_cast<uint32_t>(body));
  for (const SeekFrame& f : frames) {
    AppendLe32(out, f.compressed_size);
    AppendLe32(out, f.decompressed_size);
    if (checksums) AppendLe32(out, *f.checksum);
  }
  AppendLe32(out, static_cast<uint32_t>(frames.size()));
  out.push_back(static_cast<char>(checksums ? kChecksumFlag : 0));
  AppendLe32(out, kSeekableMagic);
  return out;
}

}  // namespace flashload::format
