#include "io/memory_source.h"

#include <algorithm>
#include <cstring>

#include "io/local_file.h"

namespace flashload {
namespace {

class MemorySource final : public Source {
 public:
  MemorySource(std::vector<std::byte> owned, std::span<const std::byte> view,
               MemorySourceOptions options)
      : owned_(std::move(owned)),
        bytes_(owned_.empty() ? view : std::span<const std::byte>(owned_)),
        options_(std::move(options)) {}

  const std::string& name() const override { return options_.name; }
  uint64_t size() const override { return bytes_.size(); }
  SourceCaps caps() const override { return options_.caps; }
  std::string_view backend() const override { return "memory"; }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    if (offset >= bytes_.size()) return size_t{0};
    const size_t n = std::min<uint64_t>(dst.size(), bytes_.size() - offset);
    if (n > 0) std::memcpy(dst.data(), bytes_.data() + offset, n);
    return n;
  }

 private:
  const std::vector<std::byte> owned_;
  const std::span<const std::byte> bytes_;
  const MemorySourceOptions options_;
};

}  // namespace

std::unique_ptr<Source> NewMemorySource(std::vector<std::byte> bytes, MemorySourceOptions options) {
  return std::make_unique<MemorySource>(std::move(bytes), std::span<const std::byte>(),
                                        std::move(options));
}

std::unique_ptr<Source> NewMemorySourceView(std::span<const std::byte> bytes,
                                            MemorySourceOptions options) {
  return std::make_unique<MemorySource>(std::vector<std::byte>(), bytes, std::move(options));
}

}  // namespace flashload
