// The tar format (POSIX ustar and pax, with the GNU long-name extension read): parsing the 512-byte
// header blocks of an archive into members, and writing the headers of a deterministic archive.
// Pure functions of bytes: the reading of an archive (ranged reads, decompression) is io's
// (src/io/archive_source.*), the packing of a folder is the store's (src/store/pack.*).
//
// Layout of an archive: a sequence of members, each a 512-byte header block, then for pax ('x')
// and GNU long-name ('L', 'K') records a payload that describes the next member, then the member's
// data padded to a multiple of 512 bytes; the archive ends with two zero blocks (a reader stops at
// the first zero block).
//
// Trust: nothing in a header is trusted. Sizes are checked for overflow and against the limits
// given; names are returned as written (checking them against a target folder is the caller's
// job: see CheckMemberPath()).
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_FORMAT_TAR_H_
#define FLASHLOAD_FORMAT_TAR_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "flashload/status.h"

namespace flashload::format {

inline constexpr uint64_t kTarBlock = 512;

enum class TarMemberKind {
  kFile,       // '0' or '\0' (and '7', contiguous file)
  kDirectory,  // '5'
  kSymlink,    // '2'
  kHardlink,   // '1'
  kOther,      // character or block device, FIFO, or an unknown type
};

// One member of an archive, as its header (and any pax / GNU long-name records before it) says.
struct TarMember {
  std::string path;       // as written; pax "path" or GNU 'L' wins over the ustar name + prefix
  std::string link_path;  // symlinks and hard links: the target, as written
  TarMemberKind kind = TarMemberKind::kFile;
  char type_flag = '0';  // the raw type flag, for error messages
  uint64_t size = 0;     // bytes of data (pax "size" wins over the header's field)
  uint32_t mode = 0;
  uint64_t header_offset = 0;  // of the member's first header block (its pax/long-name records
                               // included), in the uncompressed archive
  uint64_t data_offset = 0;    // of the member's data, in the uncompressed archive
};

// What one step of parsing found at an offset.
struct TarStep {
  enum class Kind {
    kMember,     // `member` is filled; the next header is at `next_offset`
    kExtension,  // a pax ('x', 'g') or GNU long-name ('L', 'K') header: read its payload
                 // (`payload_size` bytes right after the block), hand it to
                 // ApplyTarExtension(), then call ParseTarHeader again at `next_offset`
    kEnd,        // a zero block: the end of the archive
  };
  Kind kind = Kind::kEnd;
  TarMember member;
  uint64_t next_offset = 0;
  uint64_t payload_size = 0;  // kExtension: bytes of payload right after the header block
  char extension_type = 0;    // kExtension: 'x', 'g', 'L' or 'K'
};

// Limits against crafted archives.
struct TarLimits {
  uint64_t max_member_size = uint64_t{1} << 40;     // 1 TiB
  uint64_t max_extension_size = uint64_t{1} << 20;  // pax / long-name payloads
};

// Extension records seen before a member, applied to it when its header is parsed.
struct TarPending {
  std::string pax_records;    // the raw payload of a pax 'x' header ("<len> key=value\n" ...)
  std::string gnu_long_name;  // payload of an 'L' header (NUL-terminated name)
  std::string gnu_long_link;  // payload of a 'K' header
  // Offset of the first extension header of the member, set by ApplyTarExtension() (becomes the
  // member's header_offset); UINT64_MAX when none.
  uint64_t first_header_offset = UINT64_MAX;
  bool empty() const {
    return pax_records.empty() && gnu_long_name.empty() && gnu_long_link.empty();
  }
};

// Parses the header block at `offset` (`block` holds exactly its 512 bytes) of an archive called
// `archive_name` (for messages). `pending` holds the payloads of the extension headers read just
// before it, and is cleared when a member consumes them.
// Errors (kDataLoss, naming the archive and the byte offset): a bad checksum, a size or number
// field that is not octal or base-256, a size beyond the limits, a malformed pax record. Global
// pax headers ('g') come back as kExtension and are ignored by ApplyTarExtension(), not errors.
// Links, devices and FIFOs carry no data: their `size` is 0 whatever the header says. A kMember
// step's member has its pending extensions applied and `pending` is cleared.
Result<TarStep> ParseTarHeader(std::span<const uint8_t> block, uint64_t offset,
                               std::string_view archive_name, TarPending& pending,
                               const TarLimits& limits = {});

// Records the payload of an extension header (`step` as ParseTarHeader returned it, `payload`
// its `step.payload_size` bytes) in `pending`, for the member that follows: a pax 'x' payload is
// checked (kDataLoss for a malformed record, naming the archive and the header's byte offset) and
// appended; 'L' and 'K' payloads replace the long name or link; a global pax header ('g') is
// ignored.
Status ApplyTarExtension(const TarStep& step, std::string_view payload, uint64_t header_offset,
                         std::string_view archive_name, TarPending& pending);

// What a member is, for messages: "a regular file", "a folder", "a symbolic link", "a hard link",
// "a character device", "a block device", "a FIFO", or "a member of an unknown type" (the raw
// type flag tells devices and FIFOs apart).
std::string_view TarMemberKindText(TarMemberKind kind, char type_flag);

// Checks a member path before it is used as a path inside a folder: kInvalidArgument naming the
// archive and member when it is empty, absolute, has a ".." segment, a NUL or backslash, or a
// Windows drive prefix. Returns the normalized relative path ("./a//b" -> "a/b").
Result<std::string> CheckMemberPath(std::string_view path, std::string_view archive_name);

// ---- Writing ------------------------------------------------------------------------------------

// A member to write: regular files and folders only. Deterministic archives use mode 0644 for
// files and 0755 for folders, uid/gid 0, empty owner names, mtime 0 (the caller's choice).
struct TarEntry {
  std::string path;  // relative, '/'-separated; folders end without '/'
  bool directory = false;
  uint64_t size = 0;
  uint32_t mode = 0644;
  uint64_t mtime = 0;
};

// The header block(s) of `entry`: one ustar block, preceded by a pax 'x' header (and its padded
// payload) when the path does not fit the ustar name/prefix fields or the size does not fit 11
// octal digits. The member's data and its padding (TarPadding(size)) follow. kInvalidArgument for
// an empty path or one CheckMemberPath() refuses.
Result<std::string> BuildTarHeader(const TarEntry& entry);
// Zero bytes that pad `size` bytes of data to a whole block.
uint64_t TarPadding(uint64_t size);
// The end of an archive: two zero blocks.
std::string TarEnd();

}  // namespace flashload::format

#endif  // FLASHLOAD_FORMAT_TAR_H_
