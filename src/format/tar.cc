#include "format/tar.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <vector>

namespace flashload::format {
namespace {

// Offsets and widths of the ustar header fields.
struct Field {
  size_t offset;
  size_t width;
};
constexpr Field kName{0, 100};
constexpr Field kMode{100, 8};
constexpr Field kUid{108, 8};
constexpr Field kGid{116, 8};
constexpr Field kSize{124, 12};
constexpr Field kMtime{136, 12};
constexpr Field kChecksum{148, 8};
constexpr size_t kTypeFlag = 156;
constexpr Field kLinkName{157, 100};
constexpr Field kMagic{257, 6};
constexpr Field kVersion{263, 2};
constexpr Field kDevMajor{329, 8};
constexpr Field kDevMinor{337, 8};
constexpr Field kPrefix{345, 155};

std::string_view FieldText(std::span<const uint8_t> block, Field f) {
  const char* p = reinterpret_cast<const char*>(block.data()) + f.offset;
  size_t n = 0;
  while (n < f.width && p[n] != '\0') ++n;
  return std::string_view(p, n);
}

// Callers keep `size` below 2^63 (the limits), so this cannot overflow.
uint64_t RoundUpToBlock(uint64_t size) { return (size + kTarBlock - 1) / kTarBlock * kTarBlock; }

constexpr uint64_t kMaxSaneSize = uint64_t{1} << 62;

// A numeric field: octal digits (leading spaces allowed, ended by a space or NUL) or, when the
// first byte has its high bit set, a big-endian base-256 number (GNU and star extension).
Result<uint64_t> ParseNumber(std::span<const uint8_t> block, Field f, std::string_view what,
                             uint64_t offset, std::string_view archive) {
  const uint8_t* p = block.data() + f.offset;
  auto bad = [&](std::string_view why) {
    return DataLossError(fmt::format(
        "{}: tar header at byte offset {}: the {} field {}; the archive is damaged or not a tar "
        "archive",
        archive, offset, what, why));
  };
  if (p[0] & 0x80) {
    if (p[0] == 0xff) return bad("is a negative base-256 number");
    uint64_t v = p[0] & 0x7f;
    for (size_t i = 1; i < f.width; ++i) {
      if (v > (std::numeric_limits<uint64_t>::max() >> 8)) return bad("overflows 64 bits");
      v = (v << 8) | p[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < f.width && p[i] == ' ') ++i;
  uint64_t v = 0;
  for (; i < f.width && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v > (std::numeric_limits<uint64_t>::max() >> 3)) return bad("overflows 64 bits");
    v = (v << 3) | static_cast<uint64_t>(p[i] - '0');
  }
  for (; i < f.width; ++i) {
    if (p[i] != ' ' && p[i] != '\0') return bad("is not an octal number");
  }
  // An empty field reads as 0 (old writers leave device numbers and the like blank).
  return v;
}

TarMemberKind KindOf(char type) {
  switch (type) {
    case '0':
    case '\0':
    case '7':
      return TarMemberKind::kFile;
    case '5':
      return TarMemberKind::kDirectory;
    case '2':
      return TarMemberKind::kSymlink;
    case '1':
      return TarMemberKind::kHardlink;
    default:
      return TarMemberKind::kOther;
  }
}

bool CarriesNoData(char type) {
  return type == '1' || type == '2' || type == '3' || type == '4' || type == '6';
}

std::string TypeFlagText(char type) {
  if (type >= 0x20 && type < 0x7f) return fmt::format("'{}'", type);
  return fmt::format("0x{:02x}", static_cast<unsigned>(static_cast<uint8_t>(type)));
}

// Calls `record(key, value)` for each "<len> key=value\n" record of a pax payload.
template <typename F>
Status ForEachPaxRecord(std::string_view payload, uint64_t offset, std::string_view archive,
                        F&& record) {
  size_t pos = 0;
  while (pos < payload.size()) {
    // Some writers pad the payload with NULs after the last record.
    if (payload[pos] == '\0') break;
    auto bad = [&](std::string_view why) {
      return DataLossError(fmt::format(
          "{}: pax extended header at byte offset {}: record at payload byte {} {}; the archive "
          "is damaged",
          archive, offset, pos, why));
    };
    const size_t space = payload.find(' ', pos);
    if (space == std::string_view::npos || space == pos) return bad("has no length");
    uint64_t len = 0;
    const char* first = payload.data() + pos;
    const char* last = payload.data() + space;
    auto [ptr, ec] = std::from_chars(first, last, len);
    if (ec != std::errc() || ptr != last) return bad("has a length that is not a number");
    if (len < space - pos + 3 || len > payload.size() - pos) {
      return bad(fmt::format("has length {} outside the payload", len));
    }
    const std::string_view rec = payload.substr(space + 1, pos + len - space - 1);
    if (rec.back() != '\n') return bad("does not end with a newline");
    const size_t eq = rec.find('=');
    if (eq == std::string_view::npos || eq == 0) return bad("has no key=value");
    FL_RETURN_IF_ERROR(record(rec.substr(0, eq), rec.substr(eq + 1, rec.size() - eq - 2)));
    pos += len;
  }
  return Status::Ok();
}

bool AllZero(std::span<const uint8_t> block) {
  return std::all_of(block.begin(), block.end(), [](uint8_t b) { return b == 0; });
}

std::string StripTrailingNuls(std::string s) {
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

}  // namespace

Result<TarStep> ParseTarHeader(std::span<const uint8_t> block, uint64_t offset,
                               std::string_view archive_name, TarPending& pending,
                               const TarLimits& limits) {
  if (block.size() != kTarBlock) {
    return InvalidArgumentError(
        fmt::format("{}: tar header at byte offset {}: given {} bytes, a header block is 512",
                    archive_name, offset, block.size()));
  }
  TarStep step;
  if (AllZero(block)) {
    step.kind = TarStep::Kind::kEnd;
    step.next_offset = offset + kTarBlock;
    return step;
  }
  FL_ASSIGN_OR_RETURN(const uint64_t stored_sum,
                      ParseNumber(block, kChecksum, "checksum", offset, archive_name));
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < kTarBlock; ++i) {
    const bool in_sum = i >= kChecksum.offset && i < kChecksum.offset + kChecksum.width;
    const uint8_t b = in_sum ? ' ' : block[i];
    unsigned_sum += b;
    signed_sum += static_cast<int8_t>(b);
  }
  if (stored_sum != unsigned_sum && static_cast<int64_t>(stored_sum) != signed_sum) {
    return DataLossError(fmt::format(
        "{}: tar header at byte offset {}: checksum {} does not match the header's bytes ({}); "
        "the archive is damaged or not a tar archive",
        archive_name, offset, stored_sum, unsigned_sum));
  }
  const char type = static_cast<char>(block[kTypeFlag]);
  FL_ASSIGN_OR_RETURN(uint64_t size, ParseNumber(block, kSize, "size", offset, archive_name));

  if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
    if (size > limits.max_extension_size || size > kMaxSaneSize) {
      return DataLossError(fmt::format(
          "{}: tar extension header {} at byte offset {}: payload of {} bytes is beyond the limit "
          "of {} bytes",
          archive_name, TypeFlagText(type), offset, size, limits.max_extension_size));
    }
    step.kind = TarStep::Kind::kExtension;
    step.extension_type = type;
    step.payload_size = size;
    if (offset > kMaxSaneSize) {
      return DataLossError(
          fmt::format("{}: tar header at byte offset {}: offset too large", archive_name, offset));
    }
    step.next_offset = offset + kTarBlock + RoundUpToBlock(size);
    return step;
  }

  TarMember& m = step.member;
  m.type_flag = type;
  m.kind = KindOf(type);
  FL_ASSIGN_OR_RETURN(const uint64_t mode, ParseNumber(block, kMode, "mode", offset, archive_name));
  m.mode = static_cast<uint32_t>(mode & 07777);

  const std::string_view magic = FieldText(block, kMagic);
  const bool posix = magic == "ustar" && block[kVersion.offset] == '0';
  std::string path(FieldText(block, kName));
  if (posix) {
    const std::string_view prefix = FieldText(block, kPrefix);
    if (!prefix.empty()) path = fmt::format("{}/{}", prefix, path);
  }
  m.link_path = std::string(FieldText(block, kLinkName));
  if (!pending.gnu_long_name.empty()) path = StripTrailingNuls(std::move(pending.gnu_long_name));
  if (!pending.gnu_long_link.empty()) {
    m.link_path = StripTrailingNuls(std::move(pending.gnu_long_link));
  }
  if (!pending.pax_records.empty()) {
    FL_RETURN_IF_ERROR(ForEachPaxRecord(
        pending.pax_records, offset, archive_name,
        [&](std::string_view key, std::string_view value) -> Status {
          if (key == "path") {
            path = std::string(value);
          } else if (key == "linkpath") {
            m.link_path = std::string(value);
          } else if (key == "size") {
            uint64_t v = 0;
            auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
            if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
              return DataLossError(fmt::format(
                  "{}: pax size '{}' of the member at byte offset {} is not a number; the archive "
                  "is damaged",
                  archive_name, value, offset));
            }
            size = v;
          }
          return Status::Ok();
        }));
  }
  m.header_offset =
      pending.first_header_offset != UINT64_MAX ? pending.first_header_offset : offset;
  pending = TarPending{};
  m.path = std::move(path);
  if (CarriesNoData(type)) size = 0;
  if (size > limits.max_member_size || size > kMaxSaneSize) {
    return DataLossError(fmt::format(
        "{}: member '{}' (header at byte offset {}) has size {}, beyond the limit of {} bytes; "
        "the archive is damaged or crafted",
        archive_name, m.path, offset, size, limits.max_member_size));
  }
  m.size = size;
  m.data_offset = offset + kTarBlock;
  if (offset > kMaxSaneSize || RoundUpToBlock(size) > kMaxSaneSize) {
    return DataLossError(
        fmt::format("{}: member '{}' at byte offset {}: offset plus size overflows", archive_name,
                    m.path, offset));
  }
  step.kind = TarStep::Kind::kMember;
  step.next_offset = m.data_offset + RoundUpToBlock(size);
  return step;
}

Status ApplyTarExtension(const TarStep& step, std::string_view payload, uint64_t header_offset,
                         std::string_view archive_name, TarPending& pending) {
  if (step.kind != TarStep::Kind::kExtension || payload.size() != step.payload_size) {
    return InvalidArgumentError(fmt::format(
        "{}: tar extension at byte offset {}: not an extension step, or a payload of {} bytes "
        "where the header says {}",
        archive_name, header_offset, payload.size(), step.payload_size));
  }
  switch (step.extension_type) {
    case 'g':
      return Status::Ok();
    case 'x':
      // Checked now, so the error names the extension header rather than the member.
      FL_RETURN_IF_ERROR(
          ForEachPaxRecord(payload, header_offset, archive_name,
                           [](std::string_view, std::string_view) { return Status::Ok(); }));
      pending.pax_records.append(payload);
      break;
    case 'L':
      pending.gnu_long_name = std::string(payload);
      break;
    case 'K':
      pending.gnu_long_link = std::string(payload);
      break;
    default:
      return InvalidArgumentError(
          fmt::format("{}: tar extension at byte offset {}: unknown extension type {}",
                      archive_name, header_offset, TypeFlagText(step.extension_type)));
  }
  if (pending.first_header_offset == UINT64_MAX) pending.first_header_offset = header_offset;
  return Status::Ok();
}

Result<std::string> CheckMemberPath(std::string_view path, std::string_view archive_name) {
  auto refuse = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "{}: member path '{}' {}; refusing to use it as a path inside a folder (repack the "
        "archive with relative paths)",
        archive_name, path, why));
  };
  if (path.empty()) return refuse("is empty");
  if (path.find('\0') != std::string_view::npos) return refuse("holds a NUL byte");
  if (path.find('\\') != std::string_view::npos) return refuse("holds a backslash");
  if (path.front() == '/') return refuse("is absolute");
  if (path.size() >= 2 && path[1] == ':' &&
      ((path[0] >= 'a' && path[0] <= 'z') || (path[0] >= 'A' && path[0] <= 'Z'))) {
    return refuse("starts with a drive letter");
  }
  std::string out;
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find('/', begin);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view seg = path.substr(begin, end - begin);
    if (seg == "..") return refuse("has a '..' segment");
    if (!seg.empty() && seg != ".") {
      if (!out.empty()) out.push_back('/');
      out.append(seg);
    }
    begin = end + 1;
  }
  if (out.empty()) return refuse("names no file (only '.' and '/')");
  return out;
}

std::string_view TarMemberKindText(TarMemberKind kind, char type_flag) {
  switch (kind) {
    case TarMemberKind::kFile:
      return "a regular file";
    case TarMemberKind::kDirectory:
      return "a folder";
    case TarMemberKind::kSymlink:
      return "a symbolic link";
    case TarMemberKind::kHardlink:
      return "a hard link";
    case TarMemberKind::kOther:
      break;
  }
  switch (type_flag) {
    case '3':
      return "a character device";
    case '4':
      return "a block device";
    case '6':
      return "a FIFO";
    default:
      return "a member of an unknown type";
  }
}

namespace {

void PutText(std::string& block, Field f, std::string_view text) {
  if (text.empty()) return;  // an empty view's data() may be null, which memcpy must not get
  std::memcpy(block.data() + f.offset, text.data(), std::min(text.size(), f.width));
}

// Octal, zero-padded to width - 1 digits, NUL-terminated. The caller checks that it fits.
void PutOctal(std::string& block, Field f, uint64_t v) {
  const std::string s = fmt::format("{:0{}o}", v, f.width - 1);
  PutText(block, f, s);
}

bool FitsOctal(uint64_t v, Field f) {
  const unsigned bits = 3 * static_cast<unsigned>(f.width - 1);
  return bits >= 64 || v < (uint64_t{1} << bits);
}

void PutBase256(std::string& block, Field f, uint64_t v) {
  for (size_t i = 0; i < f.width; ++i) {
    block[f.offset + f.width - 1 - i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  block[f.offset] = static_cast<char>(0x80);
}

void PutNumber(std::string& block, Field f, uint64_t v) {
  if (FitsOctal(v, f)) {
    PutOctal(block, f, v);
  } else {
    PutBase256(block, f, v);
  }
}

std::string PaxRecord(std::string_view key, std::string_view value) {
  const size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return fmt::format("{} {}={}\n", len, key, value);
}

void FinishBlock(std::string& block) {
  std::memset(block.data() + kChecksum.offset, ' ', kChecksum.width);
  uint64_t sum = 0;
  for (char c : block) sum += static_cast<uint8_t>(c);
  const std::string s = fmt::format("{:06o}", sum);
  std::memcpy(block.data() + kChecksum.offset, s.data(), 6);
  block[kChecksum.offset + 6] = '\0';
  block[kChecksum.offset + 7] = ' ';
}

std::string UstarBlock(std::string_view name, std::string_view prefix, char type, uint32_t mode,
                       uint64_t size, uint64_t mtime) {
  std::string block(kTarBlock, '\0');
  PutText(block, kName, name);
  PutOctal(block, kMode, mode & 07777);
  PutOctal(block, kUid, 0);
  PutOctal(block, kGid, 0);
  PutNumber(block, kSize, size);
  PutNumber(block, kMtime, mtime);
  block[kTypeFlag] = type;
  PutText(block, kMagic, std::string_view("ustar\0", 6));
  PutText(block, kVersion, "00");
  PutOctal(block, kDevMajor, 0);
  PutOctal(block, kDevMinor, 0);
  PutText(block, kPrefix, prefix);
  FinishBlock(block);
  return block;
}

// Splits `path` into a ustar prefix and name (prefix/name), or returns false when it cannot.
bool SplitUstar(std::string_view path, std::string_view& prefix, std::string_view& name) {
  if (path.size() <= kName.width) {
    prefix = {};
    name = path;
    return true;
  }
  // The name part is what follows the chosen '/', which must leave at most 100 bytes after it
  // and at most 155 before it.
  for (size_t slash = path.find('/'); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    if (slash > kPrefix.width) return false;
    const size_t rest = path.size() - slash - 1;
    if (rest > 0 && rest <= kName.width) {
      prefix = path.substr(0, slash);
      name = path.substr(slash + 1);
      return true;
    }
  }
  return false;
}

}  // namespace

Result<std::string> BuildTarHeader(const TarEntry& entry) {
  FL_ASSIGN_OR_RETURN(const std::string path, CheckMemberPath(entry.path, "tar entry"));
  if (entry.directory && entry.size != 0) {
    return InvalidArgumentError(
        fmt::format("tar entry '{}': a folder has size {}, must be 0", entry.path, entry.size));
  }
  // Folders are written with a trailing '/', as tar and bsdtar write them.
  const std::string stored = entry.directory ? path + "/" : path;
  const char type = entry.directory ? '5' : '0';
  std::string_view prefix, name;
  const bool fits_name = SplitUstar(stored, prefix, name);
  const bool fits_size = FitsOctal(entry.size, kSize);
  if (fits_name && fits_size) {
    return UstarBlock(name, prefix, type, entry.mode, entry.size, entry.mtime);
  }
  std::string records;
  if (!fits_name) records += PaxRecord("path", stored);
  if (!fits_size) records += PaxRecord("size", std::to_string(entry.size));
  // The pax header's own name, as POSIX suggests: "<dir>/PaxHeaders/<base>", cut to fit.
  const size_t base_begin = path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1;
  std::string pax_name = "PaxHeaders/" + path.substr(base_begin);
  if (pax_name.size() > kName.width) pax_name.resize(kName.width);
  std::string out = UstarBlock(pax_name, {}, 'x', 0644, records.size(), entry.mtime);
  out += records;
  out.append(TarPadding(records.size()), '\0');
  // Readers that ignore pax still see a (cut) name and, through base-256, the right size.
  std::string_view fallback_name =
      fits_name ? name : std::string_view(stored).substr(0, kName.width);
  std::string_view fallback_prefix = fits_name ? prefix : std::string_view();
  out += UstarBlock(fallback_name, fallback_prefix, type, entry.mode, entry.size, entry.mtime);
  return out;
}

uint64_t TarPadding(uint64_t size) { return RoundUpToBlock(size) - size; }

std::string TarEnd() { return std::string(2 * kTarBlock, '\0'); }

}  // namespace flashload::format
