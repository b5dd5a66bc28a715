// libFuzzer target for the tar header parser: walks any input as an archive with ParseTarHeader
// and ApplyTarExtension, as the archive index does. Every input either fails cleanly (a non-empty
// message) or yields members whose data lies inside the input, at increasing block-aligned
// offsets; and every path CheckMemberPath accepts is relative, without '..', and stable. The same
// input opened as an archive (src/io/archive_source.h: a tar, or a zstd seekable .tar.zst when it
// starts with a zstd magic) fails cleanly or gives members whose reads stay inside them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/tar.h"
#include "io/archive_source.h"
#include "io/memory_source.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckPath(const std::string& path) {
  flashload::Result<std::string> checked = flashload::format::CheckMemberPath(path, "fuzz.tar");
  if (!checked.ok()) {
    Check(!checked.status().message().empty());
    return;
  }
  const std::string& p = *checked;
  Check(!p.empty() && p.front() != '/' && p.back() != '/');
  Check(p.find("//") == std::string::npos && p.find('\\') == std::string::npos);
  Check(p != ".." && p.rfind("../", 0) != 0 && p.find("/../") == std::string::npos);
  flashload::Result<std::string> again = flashload::format::CheckMemberPath(p, "fuzz.tar");
  Check(again.ok() && *again == p);
}

// Opens the input as an archive and reads every member whole and across its end.
void CheckArchive(const uint8_t* data, size_t size) {
  flashload::ArchiveOptions options;
  options.limits.max_members = 1000;
  options.zstd.threads = 2;
  options.zstd.limits.max_frames = 1 << 12;
  options.zstd.limits.max_frame_decompressed = 1 << 20;
  flashload::Result<std::shared_ptr<flashload::Archive>> archive = flashload::OpenArchiveFromSource(
      flashload::NewMemorySourceView(std::span(reinterpret_cast<const std::byte*>(data), size)),
      "fuzz.tar", options);
  if (!archive.ok()) {
    Check(!archive.status().message().empty());
    return;
  }
  const flashload::Archive& a = **archive;
  for (const auto& [path, member] : a.index().members()) {
    Check(member.data_offset + member.size <= a.content().size());
    flashload::Result<std::unique_ptr<flashload::Source>> source = a.OpenMember(path);
    if (!source.ok()) {
      Check(member.kind != flashload::format::TarMemberKind::kFile);
      continue;
    }
    Check((*source)->size() == member.size);
    if (member.size > (1 << 20)) continue;
    std::vector<std::byte> buffer(member.size + 7);
    flashload::Result<size_t> got = (*source)->ReadAt(0, buffer);
    if (got.ok()) Check(*got == member.size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using flashload::format::kTarBlock;
  using flashload::format::TarStep;
  flashload::format::TarLimits limits;
  limits.max_extension_size = 1 << 16;
  flashload::format::TarPending pending;
  uint64_t offset = 0;
  uint64_t last_data_end = 0;
  while (offset + kTarBlock <= size) {
    flashload::Result<TarStep> step = flashload::format::ParseTarHeader(
        std::span(data + offset, kTarBlock), offset, "fuzz.tar", pending, limits);
    if (!step.ok()) {
      Check(!step.status().message().empty());
      break;
    }
    Check(step->next_offset > offset && step->next_offset % kTarBlock == 0);
    if (step->kind == TarStep::Kind::kEnd) break;
    if (step->kind == TarStep::Kind::kExtension) {
      Check(step->payload_size <= limits.max_extension_size);
      if (offset + kTarBlock + step->payload_size > size) break;
      const std::string_view payload(reinterpret_cast<const char*>(data) + offset + kTarBlock,
                                     step->payload_size);
      flashload::Status s =
          flashload::format::ApplyTarExtension(*step, payload, offset, "fuzz.tar", pending);
      if (!s.ok()) {
        Check(!s.message().empty());
        break;
      }
    } else {
      const flashload::format::TarMember& m = step->member;
      Check(pending.empty());
      Check(m.data_offset == offset + kTarBlock && m.header_offset <= offset);
      Check(m.header_offset >= last_data_end);
      Check(m.size <= limits.max_member_size);
      Check(step->next_offset >= m.data_offset + m.size);
      if (m.kind == flashload::format::TarMemberKind::kSymlink ||
          m.kind == flashload::format::TarMemberKind::kHardlink) {
        Check(m.size == 0);
      }
      CheckPath(m.path);
      last_data_end = m.data_offset + m.size;
    }
    offset = step->next_offset;
  }
  CheckArchive(data, size);
  return 0;
}
