#include "flashload/loader.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "engine/device_reads.h"
#include "engine/engine.h"
#include "engine/strategy.h"
#include "io/archive_source.h"
#include "io/cufile.h"
#include "io/registry.h"
#include "load/open_model.h"
#include "load/stream_load.h"
#include "plan/plan.h"
#include "sink/cpu_copy_engine.h"
#include "sink/cuda_copy_engine.h"
#include "sink/device_sink.h"
#include "sink/host_memory.h"
#include "sink/host_sink.h"

namespace flashload {

namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr uint64_t kPrefixBytes = 64 << 10;  // first read: length prefix and, usually, the header

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : size(n) {
    data = static_cast<std::byte*>(
        std::aligned_alloc(4096, std::max<size_t>((n + 4095) & ~size_t{4095}, 4096)));
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data;
  size_t size;
};

// Reads [offset, offset + length) through `source`, honouring its alignment. Returns the bytes read
// (fewer only at EOF).
Result<std::vector<std::byte>> ReadRange(const Source& source, uint64_t offset, uint64_t length) {
  const SourceCaps caps = source.caps();
  const uint64_t a = caps.direct_io ? std::max<uint32_t>(caps.alignment, 1) : 1;
  const uint64_t begin = offset / a * a;
  const uint64_t end = (offset + length + a - 1) / a * a;
  AlignedBuffer buf(end - begin);
  if (buf.data == nullptr) {
    return ResourceExhaustedError(
        fmt::format("{}: cannot allocate {} bytes to read its header", source.name(), end - begin));
  }
  FL_ASSIGN_OR_RETURN(size_t n, source.ReadAt(begin, {buf.data, static_cast<size_t>(end - begin)}));
  if (n <= offset - begin) return std::vector<std::byte>();
  const size_t avail = std::min<uint64_t>(n - (offset - begin), length);
  return std::vector<std::byte>(buf.data + (offset - begin), buf.data + (offset - begin) + avail);
}

}  // namespace

Result<Header> ReadHeaderFrom(const Source& source, const ParseOptions& options) {
  const uint64_t size = source.size();
  FL_ASSIGN_OR_RETURN(std::vector<std::byte> prefix,
                      ReadRange(source, 0, std::min<uint64_t>(size, kPrefixBytes)));
  FL_ASSIGN_OR_RETURN(uint64_t n, ParseHeaderLength(prefix, size, source.name(), options));
  std::vector<std::byte> json_bytes;
  std::string_view json;
  if (8 + n <= prefix.size()) {
    json = std::string_view(reinterpret_cast<const char*>(prefix.data()) + 8, n);
  } else {
    FL_ASSIGN_OR_RETURN(json_bytes, ReadRange(source, 8, n));
    if (json_bytes.size() != n) {
      return DataLossError(
          fmt::format("{}: file shrank while reading its {}-byte header", source.name(), n));
    }
    json = std::string_view(reinterpret_cast<const char*>(json_bytes.data()), n);
  }
  return ParseHeaderJson(json, n, size, source.name(), options);
}

uint64_t ReleaseCachedMemory() {
  const uint64_t bytes = sink::PinnedCacheBytes();
  sink::TrimPinnedCache();
  return bytes + sink::TrimHostMemoryCache();
}

Result<Device> ParseDevice(std::string_view text) {
  if (text == "cpu") return Device{};
  if (text == "cuda") return Device{DeviceType::kCuda, 0};
  if (text.starts_with("cuda:") && text.size() > 5 && text.size() <= 9) {
    int index = 0;
    for (char c : text.substr(5)) {
      if (c < '0' || c > '9') {
        index = -1;
        break;
      }
      index = index * 10 + (c - '0');
    }
    if (index >= 0) return Device{DeviceType::kCuda, index};
  }
  return InvalidArgumentError(
      fmt::format("unknown device '{}' (expected cpu, cuda or cuda:N, e.g. cuda:0)", text));
}

std::string DeviceString(Device device) {
  return device.type == DeviceType::kCpu ? "cpu" : fmt::format("cuda:{}", device.index);
}

Result<Header> ReadHeader(const std::string& path, const ParseOptions& options,
                          const RemoteOpenOptions& remote) {
  OpenOptions open;
  open.local.backend = LocalBackend::kThreadPool;
  open.local.threads = 1;
  open.remote = remote;
  open.remote.connections = 1;
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(path, open));
  return ReadHeaderFrom(*source, options);
}

Result<ModelLayout> ResolveModelAt(const std::string& path_or_uri, const ResolveOptions& options,
                                   const RemoteOpenOptions& remote) {
  OpenOptions open;
  open.remote = remote;
  // A .tar or .tar.zst (local or remote) or a tar: URI: the model inside the archive.
  if (IsArchiveMemberUri(path_or_uri) || LooksLikeArchive(path_or_uri)) {
    return ResolveArchiveModel(path_or_uri, options, open);
  }
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ModelStore> remote_store, OpenModelStore(path_or_uri, open));
  if (remote_store) return ResolveModel(*remote_store, path_or_uri, options);
  std::string path = path_or_uri;
  if (Result<std::string> local = FileUriPath(path_or_uri); local.ok()) path = *local;
  return ResolveModel(LocalModelStore(), path, options);
}

namespace {

// Everything decided before the first data byte is read: layout, headers, the plan, and per file
// its source and strategy (files[i] reads plan.files[i]).
struct PreparedLoad {
  LoadedModel model;
  plan::LoadPlan plan;
  std::vector<engine::FileRead> files;
};

// Opens one file of a load through the caller's opener, or OpenSource.
Result<std::unique_ptr<Source>> OpenFileSource(const LoadOptions& options, const std::string& uri,
                                               const LocalOpenOptions& local) {
  OpenOptions open;
  open.local = local;
  open.remote = options.remote;
  return options.opener ? options.opener(uri, open) : OpenSource(uri, open);
}

// Opens `file` with the strategy chosen for it: ranged requests for a remote object, the local
// strategy otherwise (and buffered reads when O_DIRECT is refused after all).
Result<engine::FileRead> OpenFile(const std::string& file, const LoadOptions& options) {
  engine::FileRead f;
  if (!RemoteScheme(file).empty()) {
    FL_RETURN_IF_ERROR(engine::CheckRemoteStrategy(file, options));
    FL_ASSIGN_OR_RETURN(f.source, OpenFileSource(options, file, {}));
    FL_ASSIGN_OR_RETURN(f.strategy, engine::ChooseRemoteStrategy(file, f.source->caps(), options));
    return f;
  }
  f.strategy = engine::ChooseStrategy(file, options);
  Result<std::unique_ptr<Source>> src = OpenFileSource(options, file, f.strategy.open);
  if (!src.ok() && f.strategy.open.direct && src.status().code() != StatusCode::kNotFound) {
    // O_DIRECT refused after all (file system, alignment): read through the page cache instead.
    LoadOptions buffered = options;
    buffered.strategy = Strategy::kBuffered;
    const double resident = f.strategy.resident_fraction;
    const std::string reason = fmt::format("{}; O_DIRECT failed ({}), buffered instead",
                                           f.strategy.reason, src.status().message());
    f.strategy = engine::ChooseStrategy(file, buffered);
    f.strategy.resident_fraction = resident;
    f.strategy.reason = reason;
    src = OpenFileSource(options, file, f.strategy.open);
  }
  FL_ASSIGN_OR_RETURN(f.source, std::move(src));
  return f;
}

}  // namespace

Status load_internal::CheckWeightMaps(const LoadedModel& model) {
  for (const auto& [component, weight_map] : model.layout.weight_maps) {
    std::map<std::string, std::vector<std::string>> shard_tensors;
    for (const ModelFile& f : model.layout.files) {
      if (f.component != component) continue;
      std::vector<std::string>& names = shard_tensors[f.path];
      for (const TensorInfo& t : model.headers.at(f.path).tensors) names.push_back(t.name);
    }
    const std::string index =
        component.empty() ? model.layout.root : model.layout.root + "/" + component;
    FL_RETURN_IF_ERROR(CheckWeightMap(index, weight_map, shard_tensors));
  }
  return Status::Ok();
}

Result<load_internal::OpenedModel> load_internal::OpenModel(const std::string& path,
                                                            const LoadOptions& options) {
  OpenedModel m;
  ResolveOptions resolve;
  resolve.variant = options.variant;
  FL_ASSIGN_OR_RETURN(m.model.layout, ResolveModelAt(path, resolve, options.remote));
  ParseOptions parse;
  parse.header_limit = options.header_limit;
  for (const ModelFile& file : m.model.layout.files) {
    FL_ASSIGN_OR_RETURN(engine::FileRead f, OpenFile(file.path, options));
    FL_ASSIGN_OR_RETURN(Header h, ReadHeaderFrom(*f.source, parse));
    m.model.headers.emplace(file.path, std::move(h));
    m.files.push_back(std::move(f));
  }
  FL_RETURN_IF_ERROR(CheckWeightMaps(m.model));
  return m;
}

namespace {

// Whether a load that failed with `failure` names a plain zstd .tar.zst (no seek table), which
// the random-access path refuses with kUnimplemented and LoadStreamedArchive() reads front to
// back. Only such refusals pay for the probe; when it cannot tell, the refusal stands.
bool IsStreamedArchive(const std::string& path, const LoadOptions& options, const Status& failure) {
  if (failure.code() != StatusCode::kUnimplemented) return false;
  if (!IsArchiveMemberUri(path) && !LooksLikeArchive(path)) return false;
  OpenOptions open;
  open.remote = options.remote;
  Result<bool> plain = IsPlainZstdArchive(path, open, options.opener);
  return plain.ok() && *plain;
}

// Resolves the layout, opens every file with its strategy, reads and checks the headers through
// the same sources, and builds the plan with each file's chunks cut to its strategy.
Result<PreparedLoad> PrepareLoad(const std::string& path, const LoadOptions& requested) {
  // Zero-copy views exist only of host memory holding the stored bytes as they are.
  LoadOptions options = requested;
  const bool staged = options.device.type == DeviceType::kCuda || !options.dtype.empty();
  if (staged && options.strategy == Strategy::kMapped) {
    return InvalidArgumentError(
        "strategy 'mapped' returns views of the file in host memory; it cannot be combined with "
        "a CUDA device or a dtype conversion");
  }
  if (staged) options.zero_copy_hot = false;
  PreparedLoad p;
  FL_ASSIGN_OR_RETURN(load_internal::OpenedModel opened, load_internal::OpenModel(path, options));
  p.model = std::move(opened.model);
  p.files = std::move(opened.files);
  plan::PlanOptions po;
  po.selection = options.selection.get();
  FL_ASSIGN_OR_RETURN(p.plan, plan::BuildPlan(p.model.layout, p.model.headers, po));
  for (uint32_t i = 0; i < p.files.size(); ++i) {
    engine::FileStrategy& s = p.files[i].strategy;
    plan::FilePlan& fp = p.plan.files[i];
    if (fp.selective) {
      const uint64_t gap = engine::MergeGapBytes(fp.path, s, p.files[i].source->caps());
      plan::MergeRanges(fp, i, gap, po.alignment, s.chunk_bytes);
    } else {
      plan::RechunkFile(fp, i, s.chunk_bytes);
    }
    if (s.strategy == Strategy::kMapped && fp.selective) {
      // A mapping would hand out views of the whole file; a partial load reads its ranges.
      s.strategy = Strategy::kBuffered;
      s.reason += "; a partial load reads its ranges instead of mapping the file";
    } else if (s.strategy == Strategy::kMapped) {
      p.plan.files[i].mapped = true;
      p.plan.files[i].chunks.clear();
    }
  }
  return p;
}

}  // namespace

Result<std::string> DescribeLoadPlan(const std::string& path, const LoadOptions& options) {
  Result<PreparedLoad> prepared = PrepareLoad(path, options);
  if (!prepared.ok() && IsStreamedArchive(path, options, prepared.status())) {
    return fmt::format(
        "{}: a plain zstd archive (no seek table): loaded as a {}; which files and bytes it "
        "holds is known only once it has been read, so there is no plan to print (repack it "
        "with `flashload pack` for a seekable archive with a plan)\n",
        RedactUrl(path), kStreamStrategy);
  }
  if (!prepared.ok()) return prepared.status();
  const PreparedLoad& p = *prepared;
  std::string out = plan::DescribePlan(p.plan);
  for (size_t i = 0; i < p.plan.files.size(); ++i) {
    const engine::FileRead& f = p.files[i];
    out +=
        fmt::format("{}: {} — {}\n", RedactUrl(p.plan.files[i].path),
                    engine::DescribeStrategy(f.strategy, f.source->backend()), f.strategy.reason);
  }
  return out;
}

namespace {

// The copy engine of a staged load: the GPU, or host worker threads for a converting CPU load.
Result<std::shared_ptr<sink::CopyEngine>> OpenCopyEngine(const LoadOptions& options) {
  if (options.device.type == DeviceType::kCuda) {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<sink::CopyEngine> engine,
                        sink::OpenCudaCopyEngine(options.device.index));
    return std::shared_ptr<sink::CopyEngine>(std::move(engine));
  }
  sink::CpuCopyEngineOptions cpu;
  cpu.streams = std::clamp(std::thread::hardware_concurrency(), 2u, 8u);
  cpu.device_is_host = true;
  cpu.verify_staging = false;  // a test check; the pipeline's ordering is what guarantees it
  return std::shared_ptr<sink::CopyEngine>(std::make_shared<sink::CpuCopyEngine>(cpu));
}

// Where the bytes land: host arenas (reads in place), or a device sink that stages reads in pinned
// memory, converts and copies them (GPU loads, dtype conversion). Lives until the tensors are
// handed over.
struct Output {
  ConvertSpec spec;
  std::shared_ptr<sink::CopyEngine> copy_engine;  // null for host loads
  sink::HostSink host;
  std::unique_ptr<sink::DeviceSink> device;
  std::shared_ptr<CuFileBuffers> gds_buffers;  // GPUDirect Storage destinations, when any
  double copy_engine_seconds = 0;
  double allocation_seconds = 0;

  sink::Sink& sink() { return device ? static_cast<sink::Sink&>(*device) : host; }
};

// Device and conversion problems are reported before any file is opened: the conversion spec and
// the copy engine come first.
Result<std::unique_ptr<Output>> OpenOutput(const LoadOptions& options) {
  auto out = std::make_unique<Output>();
  const auto start = Clock::now();
  FL_ASSIGN_OR_RETURN(out->spec, ParseConvertSpec(options.dtype));
  if (options.device.type == DeviceType::kCuda || !out->spec.empty()) {
    FL_ASSIGN_OR_RETURN(out->copy_engine, OpenCopyEngine(options));
    out->copy_engine_seconds = SecondsSince(start);
  }
  return out;
}

// Prepares the sink for the plan: GPUDirect Storage per file (GPU loads), the model's memory and
// the staging, and the staged files' queue depths within the staging slots.
Status PrepareOutput(const LoadOptions& options, PreparedLoad& p, Output& out) {
  if (out.copy_engine) {
    sink::DeviceSinkOptions dso;
    dso.convert = out.spec;
    dso.memory_budget = options.memory_budget;
    dso.min_slots = std::max<uint32_t>(options.parallel_files, 2);
    out.device = std::make_unique<sink::DeviceSink>(out.copy_engine, dso);
  }
  if (options.device.type == DeviceType::kCuda) {
    engine::DeviceReadOptions dro;
    dro.mode = options.gpu_direct;
    dro.convert = out.spec;
    dro.chunk_bytes = engine::DeviceReadChunkBytes(options.memory_budget);
    FL_ASSIGN_OR_RETURN(
        engine::DeviceReadChoice choice,
        engine::SetUpDeviceReads(CuFileDriver::Shared, out.copy_engine, dro, p.plan, p.files));
    out.gds_buffers = std::move(choice.buffers);
  }
  const auto prepare_start = Clock::now();
  FL_RETURN_IF_ERROR(out.sink().Prepare(p.plan));
  if (!out.device) return Status::Ok();
  // Staged loads allocate the model's memory and the pinned staging here: part of the set-up.
  out.allocation_seconds = SecondsSince(prepare_start);
  if (out.gds_buffers) {
    auto [base, bytes] = out.device->scratch_buffer();
    if (Status reg = out.gds_buffers->Add(base, bytes); !reg.ok()) {
      // Reads still work, through cuFile's own bounce buffers: say so in the report.
      for (size_t i = 0; i < p.files.size(); ++i) {
        if (p.plan.files[i].device_reads)
          p.files[i].device_reads += fmt::format(" ({})", reg.message());
      }
    }
  }
  for (engine::FileRead& f : p.files) {
    f.strategy.queue_depth = engine::StagedQueueDepth(
        f.strategy.queue_depth, out.device->slot_count(), options.parallel_files);
  }
  return Status::Ok();
}

// Runs the plan into the sink and hands the tensors over; on failure the sink frees everything.
// The sources are closed (every read reaped) before the arenas or registered buffers can go.
Status Run(const LoadOptions& options, PreparedLoad& p, Output& out, engine::EngineStats& stats,
           std::vector<std::string>& backends) {
  engine::EngineOptions eo;
  eo.memory_budget = options.memory_budget;
  eo.parallel_files = options.parallel_files;
  eo.progress = options.progress;
  eo.cancel = options.cancel;
  std::vector<engine::FileInput> inputs;
  for (engine::FileRead& f : p.files) {
    inputs.push_back({f.source.get(), f.strategy.queue_depth});
    backends.emplace_back(f.source->backend());
  }
  Status run = engine::RunPlan(p.plan, inputs, out.sink(), eo, &stats);
  for (engine::FileRead& f : p.files) f.source.reset();
  if (out.gds_buffers) out.gds_buffers->Clear();  // deregistered before the scratch is freed
  if (!run.ok()) {
    out.sink().Abort();
    return run;
  }
  FL_ASSIGN_OR_RETURN(p.model.tensors, out.sink().Finish());
  return Status::Ok();
}

// What happened, per file and in total.
void Report(const LoadOptions& options, const PreparedLoad& p, const Output& out,
            const engine::EngineStats& stats, const std::vector<std::string>& backends,
            LoadReport& report) {
  for (size_t i = 0; i < p.plan.files.size(); ++i) {
    const plan::FilePlan& f = p.plan.files[i];
    const engine::FileRead& fr = p.files[i];
    FileReport r;
    r.path = RedactUrl(f.path);
    r.component = f.component;
    r.strategy = engine::DescribeStrategy(fr.strategy, backends[i]);
    r.reason = fr.strategy.reason;
    r.resident_fraction = fr.strategy.resident_fraction;
    r.bytes = f.read_bytes();
    r.selected_bytes = f.data_bytes();
    r.ranges = static_cast<uint32_t>(f.ranges.size());
    r.tensors = static_cast<uint32_t>(f.tensors.size());
    for (const plan::PlannedTensor& t : f.tensors) {
      if (t.segments.size() < 2) continue;
      ++r.strided_parts;
      const uint64_t first = t.segments.front().offset;
      const uint64_t last = t.segments.back().offset + t.segments.back().bytes;
      auto holds = [&](const plan::ReadRange& range) {
        return range.begin <= first && last <= range.end;
      };
      if (std::any_of(f.ranges.begin(), f.ranges.end(), holds)) {
        ++r.strided_parts_covered;
        r.strided_covered_bytes += last - first;
      }
    }
    r.seconds = stats.files[i].seconds;
    r.output_bytes = r.selected_bytes;
    r.gpu_direct_storage = fr.device_reads;
    if (out.device) {
      const sink::FileConversion& fc = out.device->stats().files[i];
      r.tensors_converted = fc.tensors_converted;
      r.bytes_converted = fc.bytes_converted;
      r.output_bytes = fc.output_bytes;
    }
    report.tensors_converted += r.tensors_converted;
    report.bytes_converted += r.bytes_converted;
    report.output_bytes += r.output_bytes;
    report.bytes += r.bytes;
    report.selected_bytes += r.selected_bytes;
    report.files.push_back(std::move(r));
  }
  report.device = DeviceString(options.device);
  report.copy_engine_seconds = out.copy_engine_seconds;
  report.allocation_seconds = out.allocation_seconds;
  if (out.device) {
    report.copy_engine = out.copy_engine->name();
    report.staging_bytes = out.device->stats().pinned_bytes;
    if (options.device.type == DeviceType::kCuda) {
      report.peak_device_bytes = out.copy_engine->peak_device_bytes();
    }
  } else {
    const sink::HostMemoryStats& ms = out.host.memory_stats();
    report.page_size =
        ms.fresh_bytes > 0 ? ms.page_size.reason : "no fresh memory (reused or mapped)";
    report.memory_reused_bytes = ms.reused_bytes;
    report.memory_populated_ahead = ms.populated_ahead;
    report.memory_populated_on_demand = ms.populated_on_demand;
  }
}

}  // namespace

// prepare (layout, sources, headers, plan) -> choose the sink -> run -> report.
Result<LoadedModel> Load(const std::string& path, const LoadOptions& options) {
  const auto start = Clock::now();
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Output> out, OpenOutput(options));
  Result<PreparedLoad> prepared = PrepareLoad(path, options);
  if (!prepared.ok() && IsStreamedArchive(path, options, prepared.status())) {
    out.reset();
    return LoadStreamedArchive(path, options);
  }
  if (!prepared.ok()) return prepared.status();
  PreparedLoad& p = *prepared;
  p.model.report.header_seconds = SecondsSince(start) - out->copy_engine_seconds;
  FL_RETURN_IF_ERROR(PrepareOutput(options, p, *out));
  engine::EngineStats stats;
  std::vector<std::string> backends;
  FL_RETURN_IF_ERROR(Run(options, p, *out, stats, backends));
  Report(options, p, *out, stats, backends, p.model.report);
  p.model.report.seconds = SecondsSince(start);
  if (options.progress) {
    const auto n = static_cast<uint32_t>(p.plan.files.size());
    options.progress(Progress{p.model.report.bytes, p.model.report.bytes, n, n});
  }
  return std::move(p.model);
}

}  // namespace flashload
