#include "plan/plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "flashload/source.h"

namespace flashload::plan {

namespace {
uint64_t AlignDown(uint64_t v, uint64_t a) { return v & ~(a - 1); }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
}  // namespace

uint64_t LoadPlan::data_bytes() const {
  uint64_t n = 0;
  for (const FilePlan& f : files) n += f.data_bytes();
  return n;
}

uint64_t LoadPlan::arena_bytes() const {
  uint64_t n = 0;
  for (const FilePlan& f : files) n += f.arena_size();
  return n;
}

size_t LoadPlan::tensor_count() const {
  size_t n = 0;
  for (const FilePlan& f : files) n += f.header.tensors.size();
  return n;
}

std::vector<Chunk> SplitRange(uint32_t file, uint64_t begin, uint64_t end, uint64_t chunk_bytes) {
  std::vector<Chunk> chunks;
  if (end <= begin || chunk_bytes == 0) return chunks;
  chunks.reserve((end - begin + chunk_bytes - 1) / chunk_bytes);
  for (uint64_t off = begin; off < end; off += chunk_bytes) {
    const uint64_t len = std::min(chunk_bytes, end - off);
    chunks.push_back(Chunk{file, off, len, off - begin});
  }
  return chunks;
}

void RechunkFile(FilePlan& file, uint32_t file_index, uint64_t chunk_bytes) {
  file.chunks = SplitRange(file_index, file.read_begin, file.read_end, chunk_bytes);
}

Result<LoadPlan> BuildPlan(const ModelLayout& layout, const std::map<std::string, Header>& headers,
                           const PlanOptions& options) {
  const uint64_t a = options.alignment;
  if (a == 0 || (a & (a - 1)) != 0) {
    return InvalidArgumentError(fmt::format("plan alignment {} is not a power of two", a));
  }
  if (options.chunk_bytes == 0 || options.chunk_bytes % a != 0) {
    return InvalidArgumentError(fmt::format(
        "chunk size {} is not a positive multiple of the alignment {}", options.chunk_bytes, a));
  }
  LoadPlan plan;
  plan.files.reserve(layout.files.size());
  for (const ModelFile& mf : layout.files) {
    auto it = headers.find(mf.path);
    if (it == headers.end()) return InternalError(fmt::format("no header read for {}", mf.path));
    FilePlan fp;
    fp.path = mf.path;
    fp.component = mf.component;
    fp.header = it->second;
    if (fp.header.data_size() == 0) {
      fp.read_begin = fp.read_end = 0;
    } else {
      fp.read_begin = AlignDown(fp.header.data_offset(), a);
      fp.read_end = AlignUp(fp.header.file_size, a);
    }
    RechunkFile(fp, static_cast<uint32_t>(plan.files.size()), options.chunk_bytes);
    plan.files.push_back(std::move(fp));
  }
  return plan;
}

const TensorInfo* TensorAtFileOffset(const FilePlan& file, uint64_t offset) {
  const Header& h = file.header;
  if (offset < h.data_offset()) return nullptr;
  const uint64_t rel = offset - h.data_offset();
  auto it = std::upper_bound(h.tensors.begin(), h.tensors.end(), rel,
                             [](uint64_t v, const TensorInfo& t) { return v < t.data_begin; });
  // Empty tensors share their begin with the next one; step back to the one whose range holds rel.
  while (it != h.tensors.begin()) {
    --it;
    if (rel >= it->data_begin && rel < it->data_end) return &*it;
    if (it->data_end <= rel) break;
  }
  return nullptr;
}

std::string DescribePlan(const LoadPlan& plan) {
  std::string out;
  for (const FilePlan& f : plan.files) {
    out += fmt::format("{}{}{}: {} tensors, data [{}, {}) ({} bytes), read [{}, {}) in {} chunks\n",
                       f.component, f.component.empty() ? "" : ": ", RedactUrl(f.path),
                       f.header.tensors.size(), f.header.data_offset(), f.header.file_size,
                       f.data_bytes(), f.read_begin, f.read_end, f.chunks.size());
  }
  out += fmt::format("total: {} files, {} tensors, {} data bytes, {} bytes of host memory\n",
                     plan.files.size(), plan.tensor_count(), plan.data_bytes(), plan.arena_bytes());
  return out;
}

}  // namespace flashload::plan
