#include "engine/device_reads.h"

#include <fmt/format.h>

#include "io/registry.h"
#include "sink/host_sink.h"

namespace flashload::engine {

namespace {

// Why `f` cannot be read directly because of a converted tensor, or "".
Result<std::string> CutElementReason(const plan::FilePlan& f, const ConvertSpec& spec) {
  if (spec.empty()) return std::string();
  for (const plan::PlannedTensor& pt : f.tensors) {
    const TensorInfo& t = f.info(pt);
    FL_ASSIGN_OR_RETURN(Dtype to,
                        TargetDtype(sink::QualifiedTensorName(f.component, t.name), t.dtype, spec));
    if (to == t.dtype || pt.segments.empty()) continue;
    // Every run of a part starts a whole number of elements after the tensor's first byte.
    const uint64_t begin = f.header.data_offset() + t.data_begin;
    const uint64_t size = DtypeBits(t.dtype) / 8;
    if (size > 1 && begin % size != 0) {
      return fmt::format(
          "pinned staging: tensor '{}' is converted and starts at byte offset {}, not a multiple "
          "of its {}-byte elements",
          t.name, begin, size);
    }
  }
  return std::string();
}

}  // namespace

Result<DeviceReadChoice> SetUpDeviceReads(const CuFileDriverFn& open_driver,
                                          std::shared_ptr<sink::CopyEngine> copy_engine,
                                          const DeviceReadOptions& options, plan::LoadPlan& plan,
                                          std::span<FileRead> files) {
  DeviceReadChoice choice;
  const size_t n = plan.files.size();
  if (files.size() != n) {
    return InternalError(fmt::format("{} files to read for {} in the plan", files.size(), n));
  }
  std::shared_ptr<CuFileDriver> driver;
  for (size_t i = 0; i < n; ++i) {
    plan::FilePlan& f = plan.files[i];
    std::string& reason = files[i].device_reads;
    if (options.mode == GpuDirect::kOff) {
      reason = "pinned staging: GPUDirect Storage turned off";
      continue;
    }
    const FileStrategy& s = files[i].strategy;
    if (!RemoteScheme(f.path).empty()) {
      reason = "pinned staging: not a local file";
      continue;
    }
    if (s.strategy == Strategy::kNetwork) {
      reason = fmt::format("pinned staging: network file system ({})", s.reason);
      continue;
    }
    if (options.mode == GpuDirect::kAuto && !s.open.direct) {
      reason = fmt::format(
          "pinned staging: {}, and staging from memory beats reading storage again "
          "(--gds on reads it directly anyway)",
          s.reason);
      continue;
    }
    FL_ASSIGN_OR_RETURN(std::string cut, CutElementReason(f, options.convert));
    if (!cut.empty()) {
      reason = std::move(cut);
      continue;
    }
    if (!driver && open_driver) driver = open_driver();
    if (driver == nullptr || !driver->direct()) {
      reason = driver == nullptr ? "pinned staging: no cuFile driver" : driver->reason();
      continue;
    }
    if (!choice.buffers) choice.buffers = driver->NewBuffers();
    CuFileSourceOptions so;
    so.threads = options.threads;
    so.preferred_chunk = options.chunk_bytes;
    so.buffers = choice.buffers;
    Result<std::unique_ptr<Source>> src = driver->OpenSource(
        f.path, [copy_engine] { return copy_engine->BindThread(); }, so);
    if (!src.ok()) {
      if (src.status().code() != StatusCode::kFailedPrecondition) return src.status();
      reason = std::string(src.status().message());
      continue;
    }
    files[i].source = *std::move(src);
    f.device_reads = true;
    plan::RechunkFile(f, static_cast<uint32_t>(i), options.chunk_bytes);
    files[i].strategy.queue_depth = options.threads;
    files[i].strategy.chunk_bytes = options.chunk_bytes;
    files[i].strategy.reason += "; read with GPUDirect Storage";
    reason = driver->reason();
    ++choice.direct_files;
  }
  if (choice.direct_files == 0) choice.buffers.reset();
  return choice;
}

}  // namespace flashload::engine

namespace flashload {

Result<GpuDirect> ParseGpuDirect(std::string_view text) {
  if (text == "auto") return GpuDirect::kAuto;
  if (text == "on") return GpuDirect::kOn;
  if (text == "off") return GpuDirect::kOff;
  return InvalidArgumentError(
      fmt::format("unknown GPUDirect Storage mode '{}' (expected auto, on or off)", text));
}

}  // namespace flashload
