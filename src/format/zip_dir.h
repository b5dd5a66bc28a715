// The directory of a zip file, read from its bytes: enough to find the entries of a PyTorch
// checkpoint (torch.save writes a zip of stored, uncompressed entries, with ZIP64 records when the
// file or an entry passes 4 GiB).
//
// Pure: a function of the bytes of the whole file (callers map or read it); nothing is decompressed
// and no CRC is checked. Thread-safety: pure function; the result is a value.
#ifndef FLASHLOAD_FORMAT_ZIP_DIR_H_
#define FLASHLOAD_FORMAT_ZIP_DIR_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload {

struct ZipEntry {
  std::string name;              // as stored, '/'-separated
  uint16_t method = 0;           // 0 = stored; anything else is compressed
  uint64_t size = 0;             // uncompressed size in bytes
  uint64_t compressed_size = 0;  // bytes stored in the file
  uint64_t header_offset = 0;    // offset of the local file header
  uint64_t data_offset = 0;      // offset of the entry's first data byte in the file
  uint32_t crc32 = 0;            // as recorded (not checked)
  uint16_t flags = 0;            // general purpose flags; bit 0: encrypted
};

inline constexpr uint64_t kMaxZipEntries = 1u << 22;

// True when `file` starts with a local file header ("PK\3\4") or is an empty zip.
bool LooksLikeZip(std::span<const std::byte> file);

// Every entry of the zip `file` (`name` in messages), in central-directory order, each with its
// data offset resolved through its local header and checked to lie inside the file. ZIP64 end
// records and extra fields are read. Errors: kDataLoss naming the file, the entry and the byte
// offset for a missing or inconsistent end record, central directory or local header, an entry
// whose data runs past the end of the file, or more than kMaxZipEntries entries. Compressed or
// encrypted entries are listed as they are (callers decide; see FindStoredEntry).
Result<std::vector<ZipEntry>> ParseZipDirectory(std::span<const std::byte> file,
                                                std::string_view name);

// The entry named `entry_name`, which must be stored uncompressed and unencrypted. Errors:
// kNotFound naming the entry and file; kUnimplemented naming the method for a compressed entry
// (torch.save never compresses; re-save it with torch.save, or unzip and re-zip with `zip -0`).
Result<const ZipEntry*> FindStoredEntry(const std::vector<ZipEntry>& entries,
                                        std::string_view entry_name, std::string_view file_name);

}  // namespace flashload

#endif  // FLASHLOAD_FORMAT_ZIP_DIR_H_
