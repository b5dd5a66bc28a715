// libFuzzer target for the tar header parser: walks any input as an archive with ParseTarHeader
// and ApplyTarExtension, as the archive index does. Every input either fails cleanly (a non-empty
// message) or yields members whose data lies inside the input, at increasing block-aligned
// offsets; and every path CheckMemberPath accepts is relative, without '..', and stable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "format/tar.h"

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
  return 0;
}
