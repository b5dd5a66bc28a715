#include "io/read_text.h"

#include <fmt/format.h>

namespace flashload {

Result<std::string> ReadTextFile(std::string_view name, uint64_t size,
                                 const PositionalRead& read_at, uint64_t limit) {
  if (size > limit) {
    return ResourceExhaustedError(
        fmt::format("{}: {} bytes, more than the {} bytes a text file of a model (an index, "
                    "model_index.json) may have; is it the right file?",
                    name, size, limit));
  }
  std::string text(size, '\0');
  auto dst = std::as_writable_bytes(std::span<char>(text.data(), text.size()));
  uint64_t done = 0;
  while (done < size) {
    FL_ASSIGN_OR_RETURN(size_t n, read_at(done, dst.subspan(done)));
    if (n == 0) {
      return DataLossError(fmt::format(
          "{}: unexpected end of file at byte offset {} of {} bytes (the file shrank while it "
          "was read)",
          name, done, size));
    }
    done += n;
  }
  return text;
}

Result<std::string> ReadTextFile(const Source& source, uint64_t limit) {
  return ReadTextFile(
      source.name(), source.size(),
      [&source](uint64_t offset, std::span<std::byte> dst) { return source.ReadAt(offset, dst); },
      limit);
}

}  // namespace flashload
