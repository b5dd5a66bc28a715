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
#include "io/cufile.h"
#include "io/registry.h"
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
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ModelStore> remote_store, OpenModelStore(path_or_uri, open));
  if (remote_store) return ResolveModel(*remote_store, path_or_uri, options);
  std::string path = path_or_uri;
  if (Result<std::string> local = FileUriPath(path_or_uri); local.ok()) path = *local;
  return ResolveModel(LocalModelStore(), path, options);
}

namespace {

// Everything decided before the first data byte is read: layout, sources, headers, strategies,
// plan.
struct PreparedLoad {
  LoadedModel model;
  std::vector<std::unique_ptr<Source>> sources;
  std::vector<engine::FileStrategy> strategies;
  std::vector<uint32_t> queue_depths;
  plan::LoadPlan plan;
};

// Opens one file of a load through the caller's opener, or OpenSource.
Result<std::unique_ptr<Source>> OpenFileSource(const LoadOptions& options, const std::string& uri,
                                               const LocalOpenOptions& local) {
  OpenOptions open;
  open.local = local;
  open.remote = options.remote;
  return options.opener ? options.opener(uri, open) : OpenSource(uri, open);
}

// A remote object (http(s)://, s3://): many ranged GETs in flight, sized from the source's caps.
Result<std::unique_ptr<Source>> OpenRemote(const std::string& uri, const LoadOptions& options,
                                           engine::FileStrategy& strategy) {
  if (options.strategy != Strategy::kAuto && options.strategy != Strategy::kNetwork) {
    return InvalidArgumentError(fmt::format(
        "{}: strategy '{}' applies to local files; remote objects are read with ranged requests "
        "(use auto or network)",
        uri, StrategyName(options.strategy)));
  }
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenFileSource(options, uri, {}));
  const SourceCaps caps = source->caps();
  strategy = engine::FileStrategy();
  strategy.strategy = Strategy::kNetwork;
  strategy.resident_fraction = -1;
  strategy.queue_depth =
      options.queue_depth > 0 ? options.queue_depth : std::max<uint32_t>(caps.max_in_flight, 1);
  strategy.chunk_bytes = options.chunk_bytes > 0 ? options.chunk_bytes : caps.preferred_chunk;
  if (options.chunk_bytes == 0) {
    // Every connection busy within the memory budget, with room for two files at once: ranges no
    // larger than budget / (2 × requests in flight), a power of two, at least 1 MiB. (Larger ranges
    // would leave connections idle while the budget is spent.)
    uint64_t fit = 1ull << 20;
    while (fit * 2 <= options.memory_budget / (2ull * strategy.queue_depth)) fit *= 2;
    strategy.chunk_bytes = std::min(strategy.chunk_bytes, fit);
  }
  strategy.reason = fmt::format("remote object: {} requests of {} MiB in flight",
                                strategy.queue_depth, strategy.chunk_bytes >> 20);
  return source;
}

Result<std::unique_ptr<Source>> OpenWithStrategy(const std::string& file,
                                                 const LoadOptions& options,
                                                 engine::FileStrategy& strategy) {
  if (!RemoteScheme(file).empty()) return OpenRemote(file, options, strategy);
  strategy = engine::ChooseStrategy(file, options);
  Result<std::unique_ptr<Source>> src = OpenFileSource(options, file, strategy.open);
  if (src.ok() || !strategy.open.direct || src.status().code() == StatusCode::kNotFound) return src;
  // O_DIRECT refused after all (file system, alignment): read through the page cache instead.
  LoadOptions buffered = options;
  buffered.strategy = Strategy::kBuffered;
  const double resident = strategy.resident_fraction;
  const std::string reason = fmt::format("{}; O_DIRECT failed ({}), buffered instead",
                                         strategy.reason, src.status().message());
  strategy = engine::ChooseStrategy(file, buffered);
  strategy.resident_fraction = resident;
  strategy.reason = reason;
  return OpenFileSource(options, file, strategy.open);
}

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
  LoadedModel& model = p.model;
  ResolveOptions resolve;
  resolve.variant = options.variant;
  FL_ASSIGN_OR_RETURN(model.layout, ResolveModelAt(path, resolve, options.remote));

  // Open every file with its strategy and read its header through the same source.
  ParseOptions parse;
  parse.header_limit = options.header_limit;
  const size_t n = model.layout.files.size();
  p.sources.resize(n);
  p.strategies.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& file = model.layout.files[i].path;
    FL_ASSIGN_OR_RETURN(p.sources[i], OpenWithStrategy(file, options, p.strategies[i]));
    FL_ASSIGN_OR_RETURN(Header h, ReadHeaderFrom(*p.sources[i], parse));
    model.headers.emplace(file, std::move(h));
  }
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

  plan::PlanOptions plan_options;
  FL_ASSIGN_OR_RETURN(p.plan, plan::BuildPlan(model.layout, model.headers, plan_options));
  p.queue_depths.resize(n);
  for (size_t i = 0; i < n; ++i) {
    plan::RechunkFile(p.plan.files[i], static_cast<uint32_t>(i), p.strategies[i].chunk_bytes);
    if (p.strategies[i].strategy == Strategy::kMapped) {
      p.plan.files[i].mapped = true;
      p.plan.files[i].chunks.clear();
    }
    p.queue_depths[i] = p.strategies[i].queue_depth;
  }
  return p;
}

}  // namespace

Result<std::string> DescribeLoadPlan(const std::string& path, const LoadOptions& options) {
  FL_ASSIGN_OR_RETURN(PreparedLoad p, PrepareLoad(path, options));
  std::string out = plan::DescribePlan(p.plan);
  for (size_t i = 0; i < p.plan.files.size(); ++i) {
    out += fmt::format("{}: {} — {}\n", RedactUrl(p.plan.files[i].path),
                       engine::DescribeStrategy(p.strategies[i], p.sources[i]->backend()),
                       p.strategies[i].reason);
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

}  // namespace

Result<LoadedModel> Load(const std::string& path, const LoadOptions& options) {
  const auto start = Clock::now();
  // Device and conversion problems are reported before any file is opened.
  FL_ASSIGN_OR_RETURN(ConvertSpec spec, ParseConvertSpec(options.dtype));
  std::shared_ptr<sink::CopyEngine> copy_engine;
  double copy_engine_seconds = 0;
  double allocation_seconds = 0;
  if (options.device.type == DeviceType::kCuda || !spec.empty()) {
    FL_ASSIGN_OR_RETURN(copy_engine, OpenCopyEngine(options));
    copy_engine_seconds = SecondsSince(start);
  }
  FL_ASSIGN_OR_RETURN(PreparedLoad p, PrepareLoad(path, options));
  LoadedModel& model = p.model;
  model.report.header_seconds = SecondsSince(start) - copy_engine_seconds;
  const size_t n = p.plan.files.size();
  plan::LoadPlan& plan = p.plan;
  std::vector<std::unique_ptr<Source>>& sources = p.sources;
  std::vector<engine::FileStrategy>& strategies = p.strategies;

  sink::HostSink host_sink;
  std::unique_ptr<sink::DeviceSink> device_sink;
  if (copy_engine) {
    sink::DeviceSinkOptions dso;
    dso.convert = spec;
    dso.memory_budget = options.memory_budget;
    dso.min_slots = std::max<uint32_t>(options.parallel_files, 2);
    device_sink = std::make_unique<sink::DeviceSink>(copy_engine, dso);
  }
  sink::Sink& sink = device_sink ? static_cast<sink::Sink&>(*device_sink) : host_sink;
  // GPU loads: GPUDirect Storage per file (engine/device_reads.h), into registered scratch.
  std::vector<std::string> gds_reasons(n);
  std::shared_ptr<CuFileBuffers> gds_buffers;
  if (options.device.type == DeviceType::kCuda) {
    engine::DeviceReadOptions dro;
    dro.mode = options.gpu_direct;
    dro.convert = spec;
    // Device scratch is slots x chunk: keep it within the budget (at least 4 slots' worth).
    dro.chunk_bytes =
        std::clamp<uint64_t>(options.memory_budget / 4 / 4096 * 4096, 64ull << 10, 16ull << 20);
    FL_ASSIGN_OR_RETURN(engine::DeviceReadChoice choice,
                        engine::SetUpDeviceReads(CuFileDriver::Shared, copy_engine, dro, plan,
                                                 sources, strategies, p.queue_depths));
    gds_reasons = std::move(choice.reasons);
    gds_buffers = std::move(choice.buffers);
  }
  const auto prepare_start = Clock::now();
  FL_RETURN_IF_ERROR(sink.Prepare(plan));
  // Staged loads allocate the model's memory and the pinned staging here: part of the set-up.
  if (device_sink) allocation_seconds = SecondsSince(prepare_start);
  if (gds_buffers) {
    auto [base, bytes] = device_sink->scratch_buffer();
    if (Status reg = gds_buffers->Add(base, bytes); !reg.ok()) {
      // Reads still work, through cuFile's own bounce buffers: say so in the report.
      for (size_t i = 0; i < n; ++i) {
        if (plan.files[i].device_reads) gds_reasons[i] += fmt::format(" ({})", reg.message());
      }
    }
  }
  if (device_sink) {
    // Every chunk in flight holds a staging slot: keep them within the slots (no driver may wait
    // for a slot that only its own unread chunks hold).
    const uint32_t share = std::max<uint32_t>(
        device_sink->slot_count() / std::max<uint32_t>(options.parallel_files, 1), 1);
    for (uint32_t& qd : p.queue_depths) qd = std::min(qd > 0 ? qd : 8u, share);
  }
  engine::EngineOptions eo;
  eo.memory_budget = options.memory_budget;
  eo.parallel_files = options.parallel_files;
  eo.progress = options.progress;
  eo.cancel = options.cancel;
  engine::EngineStats stats;
  Status run = engine::RunPlan(plan, sources, sink, eo, p.queue_depths, &stats);
  std::vector<std::string> backends;
  for (auto& s : sources) backends.emplace_back(s->backend());
  sources.clear();  // waits for anything still in flight before the arenas can go
  if (gds_buffers) gds_buffers->Clear();  // deregistered before the scratch is freed
  if (!run.ok()) {
    sink.Abort();
    return run;
  }
  FL_ASSIGN_OR_RETURN(model.tensors, sink.Finish());

  for (size_t i = 0; i < n; ++i) {
    const plan::FilePlan& f = plan.files[i];
    FileReport r;
    r.path = RedactUrl(f.path);
    r.component = f.component;
    r.strategy = engine::DescribeStrategy(strategies[i], backends[i]);
    r.reason = strategies[i].reason;
    r.resident_fraction = strategies[i].resident_fraction;
    r.bytes = f.data_bytes();
    r.tensors = static_cast<uint32_t>(f.header.tensors.size());
    r.seconds = stats.files[i].seconds;
    r.output_bytes = r.bytes;
    r.gpu_direct_storage = gds_reasons[i];
    if (device_sink) {
      const sink::FileConversion& fc = device_sink->stats().files[i];
      r.tensors_converted = fc.tensors_converted;
      r.bytes_converted = fc.bytes_converted;
      r.output_bytes = fc.output_bytes;
    }
    model.report.tensors_converted += r.tensors_converted;
    model.report.bytes_converted += r.bytes_converted;
    model.report.output_bytes += r.output_bytes;
    model.report.bytes += r.bytes;
    model.report.files.push_back(std::move(r));
  }
  if (!device_sink) {
    const sink::HostMemoryStats& ms = host_sink.memory_stats();
    model.report.page_size =
        ms.fresh_bytes > 0 ? ms.page_size.reason : "no fresh memory (reused or mapped)";
    model.report.memory_reused_bytes = ms.reused_bytes;
    model.report.memory_populated_ahead = ms.populated_ahead;
    model.report.memory_populated_on_demand = ms.populated_on_demand;
  }
  model.report.device = DeviceString(options.device);
  model.report.copy_engine_seconds = copy_engine_seconds;
  model.report.allocation_seconds = allocation_seconds;
  if (device_sink) {
    model.report.copy_engine = copy_engine->name();
    model.report.staging_bytes = device_sink->stats().pinned_bytes;
    if (options.device.type == DeviceType::kCuda) {
      model.report.peak_device_bytes = copy_engine->peak_device_bytes();
    }
  }
  model.report.seconds = SecondsSince(start);
  if (options.progress) {
    options.progress(Progress{model.report.bytes, model.report.bytes, static_cast<uint32_t>(n),
                              static_cast<uint32_t>(n)});
  }
  return std::move(model);
}

}  // namespace flashload
