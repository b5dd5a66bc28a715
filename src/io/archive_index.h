// The index of a tar archive: its members by path, built by walking the archive's headers
// (format/tar.h) through any random-access Source (a plain .tar, or the decompressed view of a
// seekable .tar.zst), without reading member data.
//
// Paths are normalized with format::CheckMemberPath ("./unet//config.json" -> "unet/config.json");
// an archive holding a path it refuses (absolute, "..") is refused whole. A root folder entry
// ("./") is skipped. Duplicate paths: the later member wins, as tar extracts them. Folders are
// implied by member paths (an archive need not hold folder entries).
//
// Thread-safety: a built index is immutable; every const method may be called concurrently.
#ifndef FLASHLOAD_IO_ARCHIVE_INDEX_H_
#define FLASHLOAD_IO_ARCHIVE_INDEX_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/source.h"
#include "flashload/status.h"
#include "format/tar.h"

namespace flashload {

// Limits against crafted archives.
struct ArchiveIndexLimits {
  uint64_t max_members = 1'000'000;
  uint64_t max_total_size = uint64_t{1} << 44;  // of all members' data: 16 TiB
  format::TarLimits tar;
};

struct ArchiveMember {
  std::string path;  // normalized
  format::TarMemberKind kind = format::TarMemberKind::kFile;
  char type_flag = '0';
  std::string link_path;       // links: the target, as written
  uint64_t header_offset = 0;  // in the (decompressed) archive
  uint64_t data_offset = 0;
  uint64_t size = 0;
};

class ArchiveIndex {
 public:
  // Walks the headers of `archive` (its name used in messages). Errors: kDataLoss for a malformed
  // header or an archive that ends inside a header or a member's data (naming the member and byte
  // offsets), kResourceExhausted beyond the limits, kInvalidArgument for a path CheckMemberPath
  // refuses, and the read errors of `archive`.
  static Result<ArchiveIndex> Build(const Source& archive, const ArchiveIndexLimits& limits = {});

  // The member at a normalized path, or nullptr.
  const ArchiveMember* Find(std::string_view path) const;
  // Whether `path` is a folder: "" (the root), a folder entry, or a prefix of a member's path.
  bool IsFolder(std::string_view path) const;
  // The names directly inside folder `path` ("" for the root): files and folders, sorted; each
  // with whether it is a folder.
  std::vector<std::pair<std::string, bool>> List(std::string_view path) const;

  const std::map<std::string, ArchiveMember, std::less<>>& members() const { return members_; }

 private:
  std::map<std::string, ArchiveMember, std::less<>> members_;  // not folders
  std::set<std::string, std::less<>> folders_;                 // without the root
};

}  // namespace flashload

#endif  // FLASHLOAD_IO_ARCHIVE_INDEX_H_
