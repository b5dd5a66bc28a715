// libFuzzer target for the safetensors header parser: any input either fails cleanly or yields a
// header whose tensors are sorted, contiguous from 0, sized by dtype x shape and end at the file
// end.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "flashload/header.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  for (bool reject_duplicates : {true, false}) {
    flashload::ParseOptions options;
    options.reject_duplicate_names = reject_duplicates;
    flashload::Result<flashload::Header> header =
        flashload::ParseHeaderFromBytes(file, "fuzz.safetensors", options);
    if (!header.ok()) {
      Check(!header.status().message().empty());
      continue;
    }
    const flashload::Header& h = *header;
    Check(h.file_size == size);
    Check(h.data_offset() <= size);
    uint64_t next = 0;
    for (const flashload::TensorInfo& t : h.tensors) {
      Check(t.data_begin == next);
      Check(t.data_end >= t.data_begin);
      Check(t.data_end <= h.data_size());
      const uint64_t bits = t.element_count() * flashload::DtypeBits(t.dtype);
      Check(bits % 8 == 0 && bits / 8 == t.byte_size());
      Check(h.Find(t.name) == &t);
      next = t.data_end;
    }
    Check(next == h.data_size());
    // What the writer's serializer emits for this header parses back to the same tensors.
    const std::string json = flashload::HeaderToJson(h);
    flashload::Result<flashload::Header> again =
        flashload::ParseHeaderJson(json, json.size(), 8 + json.size() + h.data_size(), "again");
    Check(again.ok() && again->tensors.size() == h.tensors.size());
  }
  return 0;
}
