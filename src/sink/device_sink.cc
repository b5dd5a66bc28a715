#include "sink/device_sink.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "sink/host_sink.h"

namespace flashload::sink {

namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

DeviceSink::DeviceSink(std::shared_ptr<CopyEngine> engine, DeviceSinkOptions options)
    : engine_(std::move(engine)), options_(std::move(options)) {}

DeviceSink::~DeviceSink() {
  // Nothing may still read staging memory when it is freed.
  if (ring_) Abort();
}

std::byte* DeviceSink::Out(const Placement& p) const {
  return static_cast<std::byte*>(allocation_.get()) + p.out_offset;
}

void DeviceSink::Reset() {
  ring_.reset();
  allocation_.reset();
  std::lock_guard lock(mu_);
  held_.clear();
  pending_.clear();
}

Status DeviceSink::Prepare(const plan::LoadPlan& plan) {
  Reset();
  plan_ = &plan;
  placements_.assign(plan.files.size(), {});
  outputs_.assign(plan.files.size(), {});
  stats_ = DeviceSinkStats();
  stats_.files.resize(plan.files.size());
  uint64_t total = 0;
  uint64_t max_chunk = 0;
  uint64_t chunks = 0;
  bool any_converted = false;
  bool any_device_reads = false;
  for (size_t i = 0; i < plan.files.size(); ++i) {
    const plan::FilePlan& f = plan.files[i];
    if (f.device_reads) {
      if (engine_->device_is_host()) {
        return InternalError(fmt::format(
            "{}: device reads asked of a load whose destination is host memory", f.path));
      }
      any_device_reads = true;
    }
    for (const plan::Chunk& c : f.chunks) max_chunk = std::max(max_chunk, c.length);
    chunks += f.chunks.size();
    FileConversion& fc = stats_.files[i];
    for (size_t k = 0; k < f.tensors.size(); ++k) {
      const plan::PlannedTensor& pt = f.tensors[k];
      const TensorInfo& t = f.info(pt);
      Result<Dtype> to =
          TargetDtype(QualifiedTensorName(f.component, t.name), t.dtype, options_.convert);
      if (!to.ok()) return to.status().WithContext(f.path);
      const uint64_t s = DtypeBits(t.dtype);
      const bool converted = *to != t.dtype;
      Output o;
      o.planned = static_cast<uint32_t>(k);
      o.dtype = *to;
      o.offset = AlignUp(total, kDeviceTensorAlignment);
      uint64_t at = o.offset;
      for (const plan::Segment& seg : pt.segments) {
        Placement p;
        p.tensor = pt.index;
        p.id = static_cast<uint32_t>(placements_[i].size());
        p.file_begin = seg.offset;
        p.file_end = seg.offset + seg.bytes;
        p.from = t.dtype;
        p.to = *to;
        p.out_bytes = converted ? seg.bytes * 8 / s * (DtypeBits(p.to) / 8) : seg.bytes;
        p.out_offset = at;
        at += p.out_bytes;
        if (converted && f.device_reads && p.file_begin % (s / 8) != 0) {
          // Chunks of device reads start at multiples of 4096: only elements cut by them could
          // need the host-side assembly below, and device reads keep no host copy.
          return InternalError(fmt::format(
              "{}: tensor '{}' starts at byte offset {}, not a multiple of its element size; its "
              "conversion cannot be read straight into device memory",
              f.path, t.name, p.file_begin));
        }
        placements_[i].push_back(p);
      }
      o.bytes = at - o.offset;
      total = at;
      if (converted) {
        any_converted = true;
        ++fc.tensors_converted;
        fc.bytes_converted += pt.bytes();
      }
      fc.output_bytes += o.bytes;
      outputs_[i].push_back(o);
    }
  }
  Result<std::shared_ptr<void>> alloc = engine_->AllocateDevice(std::max<uint64_t>(total, 1));
  if (!alloc.ok()) {
    return alloc.status().WithContext(
        fmt::format("allocating {} bytes on {} for the model's tensors", total, engine_->name()));
  }
  allocation_ = *std::move(alloc);
  stats_.device_bytes = total;
  if (max_chunk > 0) {
    // No more slots than chunks: a small model needs no full budget of pinned memory.
    const uint64_t by_budget = std::min(options_.memory_budget / max_chunk, chunks);
    const uint32_t slots = static_cast<uint32_t>(
        std::clamp<uint64_t>(by_budget, std::max<uint32_t>(options_.min_slots, 1),
                             std::max(options_.max_slots, options_.min_slots)));
    Result<std::unique_ptr<StagingRing>> ring =
        StagingRing::Create(*engine_, max_chunk, slots,
                            (any_converted && !engine_->device_is_host()) || any_device_reads);
    if (!ring.ok()) {
      allocation_.reset();
      return ring.status();
    }
    ring_ = *std::move(ring);
    stats_.pinned_bytes = ring_->pinned_bytes();
    stats_.scratch_bytes = ring_->scratch_bytes();
    stats_.slots = ring_->slot_count();
  }
  return Status();
}

Result<std::span<std::byte>> DeviceSink::Acquire(const plan::Chunk& chunk) {
  if (!ring_ || chunk.length > ring_->slot_bytes()) {
    return InternalError(fmt::format("chunk [{}, +{}) larger than the staging slots of {} bytes",
                                     chunk.offset, chunk.length, ring_ ? ring_->slot_bytes() : 0));
  }
  FL_ASSIGN_OR_RETURN(StagingSlot * slot, ring_->Acquire());
  {
    std::lock_guard lock(mu_);
    if (!held_.emplace(std::make_pair(chunk.file, chunk.offset), slot).second) {
      ring_->Release(slot);
      return InternalError(
          fmt::format("chunk at byte offset {} acquired twice without a commit", chunk.offset));
    }
  }
  // Device reads (GPUDirect Storage) land in the slot's device scratch.
  std::byte* dst = plan_->files.at(chunk.file).device_reads ? slot->scratch : slot->host;
  return std::span<std::byte>(dst, chunk.length);
}

Status DeviceSink::Commit(const plan::Chunk& chunk) {
  StagingSlot* slot = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = held_.find(std::make_pair(chunk.file, chunk.offset));
    if (it == held_.end()) {
      return InternalError(
          fmt::format("commit of chunk at byte offset {} that was never acquired", chunk.offset));
    }
    slot = it->second;
    held_.erase(it);
  }
  Status st = EnqueueChunk(chunk, *slot);
  // Whatever was enqueued reads the slot: it is recycled only behind its event, even on failure.
  Status submitted = ring_->Submit(slot);
  FL_RETURN_IF_ERROR(st);
  return submitted;
}

Status DeviceSink::EnqueueChunk(const plan::Chunk& chunk, StagingSlot& slot) {
  const plan::FilePlan& f = plan_->files.at(chunk.file);
  const std::vector<Placement>& ps = placements_[chunk.file];
  const uint64_t begin = chunk.offset;
  const uint64_t end = std::min(chunk.offset + chunk.length, f.header.file_size);
  CopyEngine& e = *engine_;
  const uint32_t stream = slot.stream;
  // Where the chunk's bytes are: pinned host memory, or device scratch for device reads.
  const bool on_device = f.device_reads;
  std::byte* const staged = on_device ? slot.scratch : slot.host;
  uint64_t patch_used = 0;
  auto it = std::upper_bound(ps.begin(), ps.end(), begin,
                             [](uint64_t off, const Placement& p) { return off < p.file_end; });
  for (; it != ps.end() && it->file_begin < end; ++it) {
    const Placement& p = *it;
    const uint64_t lo = std::max(begin, p.file_begin);
    const uint64_t hi = std::min(end, p.file_end);
    if (hi <= lo) continue;
    const std::byte* src = staged + (lo - begin);
    auto where = [&] {
      return fmt::format("{}: tensor '{}' bytes [{}, {}) of the file", f.path,
                         f.header.tensors[p.tensor].name, lo, hi);
    };
    if (!p.converted()) {
      Status st = on_device ? e.CopyOnDevice(stream, Out(p) + (lo - p.file_begin), src, hi - lo)
                            : e.CopyToDevice(stream, Out(p) + (lo - p.file_begin), src, hi - lo);
      if (!st.ok()) return st.WithContext(where());
      continue;
    }
    const uint64_t s = DtypeBits(p.from) / 8;
    const uint64_t os = DtypeBits(p.to) / 8;
    const uint64_t rel_lo = lo - p.file_begin;
    const uint64_t rel_hi = hi - p.file_begin;
    const uint64_t k0 = (rel_lo + s - 1) / s;  // first whole element
    const uint64_t k1 = rel_hi / s;            // one past the last whole element
    if (k1 > k0) {
      const uint64_t in_chunk = p.file_begin + k0 * s - begin;
      const uint64_t n = k1 - k0;
      Status st;
      if (on_device) {
        st = e.Convert(stream, p.from, p.to, slot.scratch + in_chunk, Out(p) + k0 * os, n);
      } else if (e.device_is_host() || slot.scratch == nullptr) {
        st = e.Convert(stream, p.from, p.to, slot.host + in_chunk, Out(p) + k0 * os, n);
      } else {
        st = e.CopyToDevice(stream, slot.scratch + in_chunk, slot.host + in_chunk, n * s);
        if (st.ok()) {
          st = e.Convert(stream, p.from, p.to, slot.scratch + in_chunk, Out(p) + k0 * os, n);
        }
      }
      if (!st.ok()) return st.WithContext(where());
    }
    // Pieces of elements cut by the chunk's edges (never for device reads, see Prepare).
    if (on_device && (rel_lo % s != 0 || rel_hi % s != 0)) {
      return InternalError(fmt::format("{}: a device read cut an element of tensor '{}'", f.path,
                                       f.header.tensors[p.tensor].name));
    }
    uint64_t head_element = UINT64_MAX;
    if (rel_lo % s != 0) {
      head_element = rel_lo / s;
      const uint64_t piece_end = std::min(rel_hi, (head_element + 1) * s);
      FL_RETURN_IF_ERROR(AddPiece(chunk.file, p, head_element, rel_lo - head_element * s, src,
                                  piece_end - rel_lo, slot, patch_used));
    }
    if (rel_hi % s != 0 && rel_hi / s != head_element) {
      const uint64_t element = rel_hi / s;
      const uint64_t piece_begin = std::max(rel_lo, element * s);
      FL_RETURN_IF_ERROR(AddPiece(chunk.file, p, element, piece_begin - element * s,
                                  staged + (p.file_begin + piece_begin - begin),
                                  rel_hi - piece_begin, slot, patch_used));
    }
  }
  return Status();
}

Status DeviceSink::AddPiece(uint32_t file, const Placement& p, uint64_t element, uint64_t within,
                            const std::byte* src, uint64_t n, StagingSlot& slot,
                            uint64_t& patch_used) {
  const uint64_t s = DtypeBits(p.from) / 8;
  const uint64_t os = DtypeBits(p.to) / 8;
  std::byte whole[8];
  {
    std::lock_guard lock(mu_);
    PendingElement& pe = pending_[{{file, p.id}, element}];
    std::memcpy(pe.bytes + within, src, n);
    pe.have += static_cast<uint32_t>(n);
    if (pe.have < s) return Status();  // the rest comes with another chunk
    std::memcpy(whole, pe.bytes, s);
    pending_.erase({{file, p.id}, element});
  }
  if (patch_used + os > StagingRing::kPatchBytes) {
    return InternalError(
        fmt::format("more than {} bytes of cut elements in one chunk", StagingRing::kPatchBytes));
  }
  std::byte* patch = slot.patch + patch_used;
  patch_used += 8;
  FL_RETURN_IF_ERROR(ConvertElements(p.from, p.to, whole, patch, 1));
  Status st = engine_->CopyToDevice(slot.stream, Out(p) + element * os, patch, os);
  if (!st.ok()) {
    return st.WithContext(fmt::format("{}: tensor '{}' element {}", plan_->files[file].path,
                                      plan_->files[file].header.tensors[p.tensor].name, element));
  }
  return Status();
}

Result<TensorMap> DeviceSink::Finish() {
  Status st = ring_ ? ring_->Drain() : Status();
  Status synced = engine_->Synchronize();
  if (st.ok()) st = synced;
  if (st.ok()) {
    std::lock_guard lock(mu_);
    if (!pending_.empty()) {
      const auto& [key, pe] = *pending_.begin();
      const plan::FilePlan& f = plan_->files[key.first.first];
      st = InternalError(fmt::format(
          "{}: element {} of tensor '{}' was only partly loaded ({} bytes)", f.path, key.second,
          f.header.tensors[placements_[key.first.first][key.first.second].tensor].name, pe.have));
    }
  }
  if (!st.ok()) {
    Abort();
    return st;
  }
  TensorMap out;
  const Device device = engine_->device();
  for (size_t i = 0; i < plan_->files.size(); ++i) {
    const plan::FilePlan& f = plan_->files[i];
    for (const Output& o : outputs_[i]) {
      const plan::PlannedTensor& pt = f.tensors[o.planned];
      const TensorInfo& t = f.info(pt);
      std::string name = QualifiedTensorName(f.component, t.name);
      std::byte* data = static_cast<std::byte*>(allocation_.get()) + o.offset;
      Tensor tensor(name, o.dtype, pt.shape, device, data, o.bytes, allocation_);
      if (!out.emplace(name, std::move(tensor)).second) {
        Abort();
        return DataLossError(fmt::format(
            "tensor '{}' appears twice in the model ({} and another file)", name, f.path));
      }
    }
  }
  if (ring_) stats_.slot_reuses = ring_->reuses();
  Reset();
  return out;
}

void DeviceSink::Abort() {
  if (ring_) ring_->Cancel();
  engine_->Synchronize().IgnoreError();  // nothing may still use the memory freed below
  Reset();
}

}  // namespace flashload::sink
