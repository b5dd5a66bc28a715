// libFuzzer target for the zstd seek table parser: any input, read as a whole stream, either
// fails cleanly or yields frames that tile the compressed bytes before the table and the
// decompressed stream, which FrameAt() maps back correctly; BuildSeekTable() of the parsed frames
// gives back the same table bytes (but for the descriptor's unused bits).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "format/zstd_seekable.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flashload::format;
  if (size < kSeekTableFooterSize) return 0;
  SeekTableLimits limits;
  limits.max_frames = 1 << 16;
  const std::span<const uint8_t> stream(data, size);
  flashload::Result<uint64_t> table_size =
      SeekTableSizeFromFooter(stream.subspan(size - kSeekTableFooterSize), "fuzz.zst", limits);
  if (!table_size.ok()) {
    Check(!table_size.status().message().empty());
    return 0;
  }
  if (*table_size > size) return 0;
  flashload::Result<SeekTable> table =
      ParseSeekTable(stream.subspan(size - *table_size), size, "fuzz.zst", limits);
  if (!table.ok()) {
    Check(!table.status().message().empty());
    return 0;
  }
  Check(table->table_size == *table_size);
  Check(table->compressed_size + table->table_size == size);
  uint64_t c = 0, d = 0;
  for (size_t i = 0; i < table->frames.size(); ++i) {
    const SeekFrame& f = table->frames[i];
    Check(f.compressed_offset == c && f.decompressed_offset == d && f.compressed_size > 0);
    Check(f.decompressed_size <= limits.max_frame_decompressed);
    if (f.decompressed_size > 0) {
      Check(table->FrameAt(d) == i);
      Check(table->FrameAt(d + f.decompressed_size - 1) == i);
    }
    c += f.compressed_size;
    d += f.decompressed_size;
  }
  Check(c == table->compressed_size && d == table->decompressed_size);
  Check(!table->FrameAt(d).has_value());
  flashload::Result<std::string> rebuilt = BuildSeekTable(table->frames);
  Check(rebuilt.ok() && rebuilt->size() == table->table_size);
  // Equal but for the descriptor's unused bits 0-1, which a writer may set, and its checksum flag
  // when there are no frames (nothing to have a checksum).
  const char* table_bytes = reinterpret_cast<const char*>(data) + size - *table_size;
  const size_t descriptor = *table_size - 5;
  const char mask = table->frames.empty() ? 0x7C : static_cast<char>(0xFC);
  for (size_t i = 0; i < rebuilt->size(); ++i) {
    Check(i == descriptor ? ((*rebuilt)[i] & mask) == (table_bytes[i] & mask)
                          : (*rebuilt)[i] == table_bytes[i]);
  }
  return 0;
}
