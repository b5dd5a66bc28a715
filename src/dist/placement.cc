#include "dist/placement.h"

#include <fmt/format.h>

#include <algorithm>

#include "sink/host_arena.h"

namespace flashload::dist {

namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Result<TensorMap> PlaceShards(std::span<const HostShard> shards,
                              const std::shared_ptr<void>& host_owner, const ConvertSpec& spec,
                              const std::shared_ptr<sink::CopyEngine>& engine) {
  struct Planned {
    Dtype to;
    uint64_t out_bytes;
    uint64_t offset;
  };
  std::vector<Planned> planned;
  planned.reserve(shards.size());
  uint64_t total = 0;
  for (const HostShard& s : shards) {
    FL_ASSIGN_OR_RETURN(Dtype to, TargetDtype(s.name, s.dtype, spec));
    const uint64_t elements = s.bytes * 8 / DtypeBits(s.dtype);
    const uint64_t out_bytes = to == s.dtype ? s.bytes : elements * DtypeBits(to) / 8;
    const bool placed = engine != nullptr || to != s.dtype;
    const uint64_t offset = placed ? AlignUp(total, 256) : 0;
    if (placed) total = offset + out_bytes;
    planned.push_back({to, out_bytes, offset});
  }
  std::shared_ptr<void> memory;
  std::byte* base = nullptr;
  if (engine) {
    Result<std::shared_ptr<void>> alloc = engine->AllocateDevice(std::max<uint64_t>(total, 1));
    if (!alloc.ok()) {
      return alloc.status().WithContext(
          fmt::format("allocating {} bytes on {} for the rank's shards", total, engine->name()));
    }
    memory = *std::move(alloc);
  } else if (total > 0) {
    FL_ASSIGN_OR_RETURN(std::shared_ptr<sink::HostArena> arena, sink::HostArena::Allocate(total));
    memory = arena;
    base = arena->data();
  }
  if (engine) base = static_cast<std::byte*>(memory.get());
  std::vector<std::vector<std::byte>> converted_for_copy;  // alive until the copies are done
  TensorMap out;
  for (size_t i = 0; i < shards.size(); ++i) {
    const HostShard& s = shards[i];
    const Planned& p = planned[i];
    const uint64_t elements = s.bytes * 8 / DtypeBits(s.dtype);
    const std::byte* src = s.data;
    if (p.to != s.dtype) {
      std::byte* dst = base + p.offset;
      if (engine && !engine->device_is_host()) {
        converted_for_copy.emplace_back(p.out_bytes);
        dst = converted_for_copy.back().data();
      }
      Status st = ConvertElements(s.dtype, p.to, s.data, dst, elements);
      if (!st.ok()) return st.WithContext(fmt::format("tensor '{}'", s.name));
      src = dst;
    }
    if (engine) {
      if (src != base + p.offset && p.out_bytes > 0) {
        Status st = engine->CopyToDevice(0, base + p.offset, src, p.out_bytes);
        if (!st.ok()) {
          engine->Synchronize().IgnoreError();
          return st.WithContext(fmt::format("copying tensor '{}' ({} bytes) to {}", s.name,
                                            p.out_bytes, engine->name()));
        }
      }
      out.emplace(s.name, Tensor(s.name, p.to, s.shape, engine->device(), base + p.offset,
                                 p.out_bytes, memory));
    } else if (p.to != s.dtype) {
      out.emplace(s.name,
                  Tensor(s.name, p.to, s.shape, Device{}, base + p.offset, p.out_bytes, memory));
    } else {
      out.emplace(s.name, Tensor(s.name, s.dtype, s.shape, Device{}, const_cast<std::byte*>(s.data),
                                 s.bytes, host_owner));
    }
  }
  if (engine) FL_RETURN_IF_ERROR(engine->Synchronize());
  return out;
}

}  // namespace flashload::dist
