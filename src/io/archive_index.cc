#include "io/archive_index.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace flashload {
namespace {

void AddParents(std::string_view path, std::set<std::string, std::less<>>& folders) {
  for (size_t slash = path.find('/'); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    folders.emplace(path.substr(0, slash));
  }
}

}  // namespace

Result<ArchiveIndex> ArchiveIndex::Build(const Source& archive, const ArchiveIndexLimits& limits) {
  ArchiveIndex index;
  const std::string& name = archive.name();
  const uint64_t size = archive.size();
  format::TarPending pending;
  uint64_t offset = 0;
  uint64_t members = 0;
  uint64_t total = 0;
  std::array<uint8_t, format::kTarBlock> block;
  while (true) {
    if (offset == size && pending.empty()) break;  // no end blocks: tolerated, as tar does
    if (size - offset < format::kTarBlock) {
      return DataLossError(fmt::format(
          "{}: the archive ends at byte offset {} inside a tar header (at byte offset {}); it is "
          "truncated: fetch or pack it again",
          name, size, offset));
    }
    FL_RETURN_IF_ERROR(ReadExact(archive, offset, std::as_writable_bytes(std::span(block))));
    FL_ASSIGN_OR_RETURN(format::TarStep step,
                        format::ParseTarHeader(block, offset, name, pending, limits.tar));
    if (step.kind == format::TarStep::Kind::kEnd) break;
    if (step.next_offset > size) {
      return DataLossError(fmt::format(
          "{}: the {} at byte offset {} ends at byte offset {}, past the end of the archive ({} "
          "bytes); it is truncated: fetch or pack it again",
          name,
          step.kind == format::TarStep::Kind::kMember
              ? fmt::format("data of member '{}'", step.member.path)
              : std::string("tar extension header"),
          offset, step.next_offset, size));
    }
    if (step.kind == format::TarStep::Kind::kExtension) {
      std::string payload(step.payload_size, '\0');
      FL_RETURN_IF_ERROR(ReadExact(archive, offset + format::kTarBlock,
                                   std::as_writable_bytes(std::span(payload))));
      FL_RETURN_IF_ERROR(format::ApplyTarExtension(step, payload, offset, name, pending));
      offset = step.next_offset;
      continue;
    }
    format::TarMember& m = step.member;
    offset = step.next_offset;
    if (++members > limits.max_members) {
      return ResourceExhaustedError(fmt::format(
          "{}: more than {} members (at byte offset {}); the archive is too large or crafted", name,
          limits.max_members, m.header_offset));
    }
    total += m.size;
    if (total > limits.max_total_size) {
      return ResourceExhaustedError(fmt::format(
          "{}: members hold more than {} bytes (at member '{}', byte offset {}); the archive is "
          "too large or crafted",
          name, limits.max_total_size, m.path, m.header_offset));
    }
    if (m.kind == format::TarMemberKind::kDirectory) {
      std::string_view p = m.path;
      while (p.starts_with("./")) p.remove_prefix(2);
      if (p.empty() || p == "." || p == "/") continue;  // the root folder
    }
    Result<std::string> path = format::CheckMemberPath(m.path, name);
    if (!path.ok()) {
      return path.status().WithContext(fmt::format("member at byte offset {}", m.header_offset));
    }
    AddParents(*path, index.folders_);
    if (m.kind == format::TarMemberKind::kDirectory) {
      index.members_.erase(*path);
      index.folders_.insert(*path);
      continue;
    }
    ArchiveMember& out = index.members_[*path];  // the later member of a path wins
    out.path = *path;
    out.kind = m.kind;
    out.type_flag = m.type_flag;
    out.link_path = std::move(m.link_path);
    out.header_offset = m.header_offset;
    out.data_offset = m.data_offset;
    out.size = m.size;
    index.folders_.erase(*path);
  }
  return index;
}

const ArchiveMember* ArchiveIndex::Find(std::string_view path) const {
  auto it = members_.find(path);
  return it == members_.end() ? nullptr : &it->second;
}

bool ArchiveIndex::IsFolder(std::string_view path) const {
  return path.empty() || folders_.contains(path);
}

std::vector<std::pair<std::string, bool>> ArchiveIndex::List(std::string_view path) const {
  std::vector<std::pair<std::string, bool>> out;
  const std::string prefix = path.empty() ? std::string() : std::string(path) + "/";
  auto direct_child = [&](const std::string& p) -> std::string_view {
    if (!p.starts_with(prefix) || p.size() == prefix.size()) return {};
    const std::string_view rest = std::string_view(p).substr(prefix.size());
    return rest.find('/') == std::string_view::npos ? rest : std::string_view();
  };
  for (auto it = folders_.lower_bound(prefix); it != folders_.end() && it->starts_with(prefix);
       ++it) {
    if (std::string_view c = direct_child(*it); !c.empty()) out.emplace_back(std::string(c), true);
  }
  for (auto it = members_.lower_bound(prefix);
       it != members_.end() && it->first.starts_with(prefix); ++it) {
    if (std::string_view c = direct_child(it->first); !c.empty()) {
      out.emplace_back(std::string(c), false);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace flashload
