#include "format/zip_dir.h"

#include <algorithm>

#include "format/json_text.h"

namespace flashload {
namespace {

using format_internal::Quote;

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kEndSize = 22;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;

uint64_t Le(std::span<const std::byte> s, uint64_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

Status Bad(std::string_view file, uint64_t at, std::string_view what) {
  return DataLossError("zip " + std::string(file) + ": " + std::string(what) + " at byte " +
                       std::to_string(at) +
                       "; the file is truncated or not a zip written by torch.save");
}

}  // namespace

bool LooksLikeZip(std::span<const std::byte> file) {
  if (file.size() >= 4 && Le(file, 0, 4) == kLocalSig) return true;
  return file.size() >= 4 && Le(file, 0, 4) == kEndSig;
}

Result<std::vector<ZipEntry>> ParseZipDirectory(std::span<const std::byte> file,
                                                std::string_view name) {
  const uint64_t size = file.size();
  if (size < kEndSize) return Bad(name, 0, "no end of central directory record (file too short)");
  // The end record sits in the last 22 + 65535 bytes (its comment is at most 65535 bytes).
  uint64_t end = UINT64_MAX;
  const uint64_t lowest = size > kEndSize + 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t at = size - kEndSize + 1; at-- > lowest;) {
    if (Le(file, at, 4) == kEndSig && at + kEndSize + Le(file, at + 20, 2) == size) {
      end = at;
      break;
    }
  }
  if (end == UINT64_MAX) return Bad(name, size, "no end of central directory record");
  uint64_t count = Le(file, end + 10, 2);
  uint64_t cd_size = Le(file, end + 12, 4);
  uint64_t cd_offset = Le(file, end + 16, 4);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    if (end < kZip64LocatorSize || Le(file, end - kZip64LocatorSize, 4) != kZip64LocatorSig)
      return Bad(name, end, "ZIP64 sizes without a ZIP64 end locator");
    const uint64_t z64 = Le(file, end - kZip64LocatorSize + 8, 8);
    if (z64 > size || size - z64 < kZip64EndSize || Le(file, z64, 4) != kZip64EndSig)
      return Bad(name, z64, "no ZIP64 end of central directory record");
    count = Le(file, z64 + 32, 8);
    cd_size = Le(file, z64 + 40, 8);
    cd_offset = Le(file, z64 + 48, 8);
  }
  if (cd_offset > size || cd_size > size - cd_offset)
    return Bad(
        name, cd_offset,
        "central directory of " + std::to_string(cd_size) + " bytes past the end of the file");
  if (count > kMaxZipEntries || count > cd_size / kCentralSize)
    return Bad(name, end,
               std::to_string(count) + " entries announced, more than the directory can hold");

  std::vector<ZipEntry> entries;
  entries.reserve(count);
  uint64_t at = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - at < kCentralSize || Le(file, at, 4) != kCentralSig)
      return Bad(name, at, "central directory entry " + std::to_string(i) + " is missing");
    ZipEntry e;
    e.flags = static_cast<uint16_t>(Le(file, at + 8, 2));
    e.method = static_cast<uint16_t>(Le(file, at + 10, 2));
    e.crc32 = static_cast<uint32_t>(Le(file, at + 16, 4));
    e.compressed_size = Le(file, at + 20, 4);
    e.size = Le(file, at + 24, 4);
    const uint64_t name_len = Le(file, at + 28, 2);
    const uint64_t extra_len = Le(file, at + 30, 2);
    const uint64_t comment_len = Le(file, at + 32, 2);
    e.header_offset = Le(file, at + 42, 4);
    if (cd_end - at - kCentralSize < name_len + extra_len + comment_len)
      return Bad(name, at,
                 "central directory entry " + std::to_string(i) + " runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(file.data() + at + kCentralSize), name_len);
    // ZIP64 extra field: the 64-bit values of the fields that hold 0xffffffff, in this order.
    uint64_t x = at + kCentralSize + name_len;
    const uint64_t x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint64_t id = Le(file, x, 2);
      const uint64_t len = Le(file, x + 2, 2);
      if (x_end - x - 4 < len)
        return Bad(name, x, "extra field of " + Quote(e.name) + " runs past its entry");
      if (id == 0x0001) {
        uint64_t f = x + 4;
        const uint64_t f_end = f + len;
        for (uint64_t* field : {&e.size, &e.compressed_size, &e.header_offset}) {
          if (*field != 0xffffffff) continue;
          if (f_end - f < 8)
            return Bad(name, f, "ZIP64 extra field of " + Quote(e.name) + " is short");
          *field = Le(file, f, 8);
          f += 8;
        }
      }
      x += 4 + len;
    }
    at += kCentralSize + name_len + extra_len + comment_len;

    const uint64_t h = e.header_offset;
    if (h > size || size - h < kLocalSize || Le(file, h, 4) != kLocalSig)
      return Bad(name, h, "no local header for entry " + Quote(e.name));
    const uint64_t data = h + kLocalSize + Le(file, h + 26, 2) + Le(file, h + 28, 2);
    if (data > size || size - data < e.compressed_size)
      return Bad(name, data,
                 "data of entry " + Quote(e.name) + " (" + std::to_string(e.compressed_size) +
                     " bytes) runs past the end of the file");
    if (e.method == 0 && e.size != e.compressed_size)
      return Bad(name, h,
                 "stored entry " + Quote(e.name) + " with different sizes (" +
                     std::to_string(e.size) + " and " + std::to_string(e.compressed_size) + ")");
    e.data_offset = data;
    entries.push_back(std::move(e));
  }
  return entries;
}

Result<const ZipEntry*> FindStoredEntry(const std::vector<ZipEntry>& entries,
                                        std::string_view entry_name, std::string_view file_name) {
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const ZipEntry& e) { return e.name == entry_name; });
  if (it == entries.end())
    return NotFoundError("zip " + std::string(file_name) + " has no entry " + Quote(entry_name) +
                         "; the checkpoint is incomplete (re-save it with torch.save)");
  if ((it->flags & 1) != 0)
    return UnimplementedError("zip " + std::string(file_name) + ": entry " + Quote(entry_name) +
                              " at byte " + std::to_string(it->header_offset) +
                              " is encrypted; decrypt it first");
  if (it->method != 0)
    return UnimplementedError("zip " + std::string(file_name) + ": entry " + Quote(entry_name) +
                              " at byte " + std::to_string(it->header_offset) +
                              " is compressed (method " + std::to_string(it->method) +
                              "); torch.save stores entries uncompressed: re-save it with "
                              "torch.save, or re-zip it with `zip -0`");
  return &*it;
}

}  // namespace flashload
