#include "plan/plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

#include "flashload/source.h"

namespace flashload::plan {

namespace {
uint64_t AlignDown(uint64_t v, uint64_t a) { return v & ~(a - 1); }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
}  // namespace

uint64_t PlannedTensor::bytes() const {
  uint64_t n = 0;
  for (const Segment& s : segments) n += s.bytes;
  return n;
}

uint64_t FilePlan::arena_size() const {
  if (mapped) return header.file_size - read_begin();
  return ranges.empty() ? 0 : ranges.back().arena_offset + ranges.back().size();
}

uint64_t FilePlan::data_bytes() const {
  uint64_t n = 0;
  for (const PlannedTensor& t : tensors) n += t.bytes();
  return n;
}

uint64_t FilePlan::read_bytes() const {
  uint64_t n = 0;
  for (const ReadRange& r : ranges) {
    const uint64_t b = std::max(r.begin, header.data_offset());
    const uint64_t e = std::min(r.end, header.file_size);
    if (e > b) n += e - b;
  }
  return n;
}

uint64_t FilePlan::bytes_to_read() const {
  uint64_t n = 0;
  for (const ReadRange& r : ranges) n += std::min(r.end, header.file_size) - r.begin;
  return n;
}

Result<uint64_t> FilePlan::ArenaOffset(uint64_t offset) const {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), offset,
                             [](uint64_t v, const ReadRange& r) { return v < r.end; });
  if (it == ranges.end() || offset < it->begin) {
    return InternalError(
        fmt::format("{}: byte offset {} is in no range the plan reads", path, offset));
  }
  return it->arena_offset + (offset - it->begin);
}

uint64_t LoadPlan::data_bytes() const {
  uint64_t n = 0;
  for (const FilePlan& f : files) n += f.data_bytes();
  return n;
}

uint64_t LoadPlan::read_bytes() const {
  uint64_t n = 0;
  for (const FilePlan& f : files) n += f.read_bytes();
  return n;
}

uint64_t LoadPlan::arena_bytes() const {
  uint64_t n = 0;
  for (const FilePlan& f : files) n += f.arena_size();
  return n;
}

size_t LoadPlan::tensor_count() const {
  size_t n = 0;
  for (const FilePlan& f : files) n += f.tensors.size();
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
  file.chunks.clear();
  for (const ReadRange& r : file.ranges) {
    for (Chunk c : SplitRange(file_index, r.begin, r.end, chunk_bytes)) {
      c.arena_offset += r.arena_offset;
      file.chunks.push_back(c);
    }
  }
}

void MergeRanges(FilePlan& file, uint32_t file_index, uint64_t merge_gap_bytes, uint32_t alignment,
                 uint64_t chunk_bytes) {
  const uint64_t a = alignment;
  file.ranges.clear();
  for (const PlannedTensor& t : file.tensors) {
    for (const Segment& s : t.segments) {
      if (s.bytes == 0) continue;
      const uint64_t begin = AlignDown(s.offset, a);
      const uint64_t end = AlignUp(s.offset + s.bytes, a);
      if (!file.ranges.empty() && begin <= file.ranges.back().end + merge_gap_bytes) {
        file.ranges.back().end = std::max(file.ranges.back().end, end);
        continue;
      }
      const uint64_t arena =
          file.ranges.empty() ? 0 : file.ranges.back().arena_offset + file.ranges.back().size();
      file.ranges.push_back(ReadRange{begin, end, arena});
    }
  }
  RechunkFile(file, file_index, chunk_bytes);
}

namespace {

// Checks the ranges kept along one dimension of `info`.
Status CheckDimRanges(const TensorInfo& info, size_t d, const std::vector<IndexRange>& ranges,
                      std::string_view file) {
  uint64_t prev_stop = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const IndexRange& r = ranges[i];
    if (r.start > r.stop || r.stop > info.shape[d]) {
      return InvalidArgumentError(fmt::format(
          "{}: tensor '{}' has shape [{}]: indices [{}, {}) of dimension {} are outside it", file,
          info.name, fmt::join(info.shape, ", "), r.start, r.stop, d));
    }
    if (i > 0 && r.start < prev_stop) {
      return InvalidArgumentError(fmt::format(
          "{}: tensor '{}': the ranges of dimension {} must be ascending and must not overlap "
          "([{}, {}) follows a range ending at {})",
          file, info.name, d, r.start, r.stop, prev_stop));
    }
    prev_stop = r.stop;
  }
  return Status::Ok();
}

}  // namespace

Result<PlannedTensor> PlanTensorPart(const TensorInfo& info, uint32_t index, uint64_t data_offset,
                                     const TensorPart& part, std::string_view file) {
  PlannedTensor t;
  t.index = index;
  const size_t rank = info.shape.size();
  if (part.dims.size() > rank && !part.whole()) {
    size_t last = part.dims.size();
    while (last > 0 && part.dims[last - 1].empty()) --last;
    if (last > rank) {
      return InvalidArgumentError(fmt::format(
          "{}: tensor '{}' has shape [{}] ({} dimensions): a part cannot select along dimension {}",
          file, info.name, fmt::join(info.shape, ", "), rank, last - 1));
    }
  }
  // The ranges kept along each dimension (all of it when the part names none).
  std::vector<std::vector<IndexRange>> dims(rank);
  int inner = -1;  // the innermost dimension not kept whole
  for (size_t d = 0; d < rank; ++d) {
    if (d < part.dims.size() && !part.dims[d].empty()) {
      FL_RETURN_IF_ERROR(CheckDimRanges(info, d, part.dims[d], file));
      dims[d] = part.dims[d];
    } else {
      dims[d] = {IndexRange{0, info.shape[d]}};
    }
    const bool kept_whole =
        dims[d].size() == 1 && dims[d][0].start == 0 && dims[d][0].stop == info.shape[d];
    if (!kept_whole) inner = static_cast<int>(d);
    uint64_t extent = 0;
    for (const IndexRange& r : dims[d]) extent += r.size();
    t.shape.push_back(extent);
  }
  const uint64_t begin = data_offset + info.data_begin;
  if (inner < 0) {
    if (info.byte_size() > 0) t.segments.push_back({begin, info.byte_size()});
    return t;
  }
  t.whole = false;
  const uint64_t bits = DtypeBits(info.dtype);
  // Elements per index of each dimension.
  std::vector<uint64_t> stride(rank, 1);
  for (size_t d = rank - 1; d > 0; --d) stride[d - 1] = stride[d] * info.shape[d];
  const auto k = static_cast<size_t>(inner);
  for (size_t d = 0; d < rank; ++d) {
    if (t.shape[d] == 0) return t;  // an empty part: nothing to read
  }
  // Odometer over the kept indices of dimensions [0, k): position within each dimension's ranges.
  std::vector<size_t> range_at(k, 0);
  std::vector<uint64_t> index_at(k);
  for (size_t d = 0; d < k; ++d) {
    // Skip empty leading ranges.
    while (dims[d][range_at[d]].size() == 0) ++range_at[d];
    index_at[d] = dims[d][range_at[d]].start;
  }
  constexpr size_t kMaxSegments = size_t{1} << 26;
  while (true) {
    uint64_t outer = 0;
    for (size_t d = 0; d < k; ++d) outer += index_at[d] * stride[d];
    for (const IndexRange& r : dims[k]) {
      if (r.size() == 0) continue;
      const uint64_t offset_bits = (outer + r.start * stride[k]) * bits;
      const uint64_t run_bits = r.size() * stride[k] * bits;
      if (offset_bits % 8 != 0 || run_bits % 8 != 0) {
        // Only sub-byte dtypes (F4, F6) can cut a byte.
        return InvalidArgumentError(fmt::format(
            "{}: tensor '{}' ({}, shape [{}]): indices [{}, {}) of dimension {} do not start and "
            "end on whole bytes; load the tensor whole",
            file, info.name, DtypeName(info.dtype), fmt::join(info.shape, ", "), r.start, r.stop,
            k));
      }
      const uint64_t offset = begin + offset_bits / 8;
      const uint64_t bytes = run_bits / 8;
      if (!t.segments.empty() && t.segments.back().offset + t.segments.back().bytes == offset) {
        t.segments.back().bytes += bytes;
      } else {
        if (t.segments.size() >= kMaxSegments) {
          return InvalidArgumentError(fmt::format(
              "{}: tensor '{}': the part is more than {} separate runs of bytes; load the tensor "
              "whole and slice it in memory",
              file, info.name, kMaxSegments));
        }
        t.segments.push_back({offset, bytes});
      }
    }
    // Next outer index, last dimension fastest.
    size_t d = k;
    while (d > 0) {
      --d;
      if (++index_at[d] < dims[d][range_at[d]].stop) break;
      do {
        ++range_at[d];
      } while (range_at[d] < dims[d].size() && dims[d][range_at[d]].size() == 0);
      if (range_at[d] < dims[d].size()) {
        index_at[d] = dims[d][range_at[d]].start;
        break;
      }
      range_at[d] = 0;
      while (dims[d][range_at[d]].size() == 0) ++range_at[d];
      index_at[d] = dims[d][range_at[d]].start;
      if (d == 0) return t;
    }
    if (k == 0) return t;
  }
}

Status PlanFile(FilePlan& fp, uint32_t file_index, const PlanOptions& options) {
  const TensorSelection* selection = options.selection;
  fp.selective = selection != nullptr;
  fp.tensors.clear();
  const std::vector<TensorInfo>& infos = fp.header.tensors;
  for (size_t i = 0; i < infos.size(); ++i) {
    const TensorInfo& info = infos[i];
    TensorPart whole;
    const TensorPart* part = &whole;
    if (selection != nullptr) {
      auto sel = selection->tensors.find(fp.component.empty() ? info.name
                                                              : fp.component + "/" + info.name);
      if (sel == selection->tensors.end()) continue;
      part = &sel->second;
    }
    FL_ASSIGN_OR_RETURN(PlannedTensor t,
                        PlanTensorPart(info, static_cast<uint32_t>(i), fp.header.data_offset(),
                                       *part, RedactUrl(fp.path)));
    fp.tensors.push_back(std::move(t));
  }
  MergeRanges(fp, file_index, options.merge_gap_bytes, options.alignment, options.chunk_bytes);
  return Status::Ok();
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
  const TensorSelection* selection = options.selection;
  size_t selected_found = 0;
  LoadPlan plan;
  plan.files.reserve(layout.files.size());
  for (const ModelFile& mf : layout.files) {
    auto it = headers.find(mf.path);
    if (it == headers.end()) return InternalError(fmt::format("no header read for {}", mf.path));
    FilePlan fp;
    fp.path = mf.path;
    fp.component = mf.component;
    fp.header = it->second;
    FL_RETURN_IF_ERROR(PlanFile(fp, static_cast<uint32_t>(plan.files.size()), options));
    if (selection != nullptr) selected_found += fp.tensors.size();
    plan.files.push_back(std::move(fp));
  }
  if (selection != nullptr && selected_found != selection->tensors.size()) {
    // Name the first selected tensor no file holds.
    std::set<std::string> found;
    for (const FilePlan& f : plan.files) {
      for (const PlannedTensor& t : f.tensors) {
        const std::string& n = f.info(t).name;
        found.insert(f.component.empty() ? n : f.component + "/" + n);
      }
    }
    for (const auto& [name, part] : selection->tensors) {
      if (!found.contains(name)) {
        return NotFoundError(fmt::format("tensor '{}' is not in the model {} ({} tensors)", name,
                                         RedactUrl(layout.root), found.size()));
      }
    }
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
    if (!f.selective) {
      out +=
          fmt::format("{}{}{}: {} tensors, data [{}, {}) ({} bytes), read [{}, {}) in {} chunks\n",
                      f.component, f.component.empty() ? "" : ": ", RedactUrl(f.path),
                      f.tensors.size(), f.header.data_offset(), f.header.file_size, f.data_bytes(),
                      f.read_begin(), f.ranges.empty() ? 0 : f.ranges.back().end, f.chunks.size());
      continue;
    }
    size_t parts = 0;
    for (const PlannedTensor& t : f.tensors) parts += t.whole ? 0 : 1;
    out += fmt::format(
        "{}{}{}: {} of {} tensors ({} parts), {} bytes of tensor data, read {} bytes in {} ranges "
        "and {} chunks\n",
        f.component, f.component.empty() ? "" : ": ", RedactUrl(f.path), f.tensors.size(),
        f.header.tensors.size(), parts, f.data_bytes(), f.read_bytes(), f.ranges.size(),
        f.chunks.size());
  }
  out += fmt::format(
      "total: {} files, {} tensors, {} data bytes, {} bytes read, {} bytes of host memory\n",
      plan.files.size(), plan.tensor_count(), plan.data_bytes(), plan.read_bytes(),
      plan.arena_bytes());
  return out;
}

}  // namespace flashload::plan
