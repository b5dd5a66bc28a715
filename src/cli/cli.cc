#include "cli/cli.h"

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/baselines.h"
#include "cli/bench.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/output.h"
#include "cli/tp_load.h"
#include "cli/verify.h"
#include "common/url.h"
#include "flashload/loader.h"
#include "flashload/model.h"
#include "flashload/source.h"
#include "flashload/writer.h"
#include "io/fault_source.h"
#include "io/registry.h"

namespace flashload::cli {

namespace {

std::atomic<bool> g_interrupted{false};

void OnSigint(int) { g_interrupted.store(true); }

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

uint64_t ParamCount(const Header& h) {
  uint64_t n = 0;
  for (const TensorInfo& t : h.tensors) n += t.element_count();
  return n;
}

std::string MetadataJson(const Header& h) {
  if (!h.metadata) return "null";
  std::vector<std::string> items;
  for (const auto& [k, v] : *h.metadata) items.push_back(JsonString(k) + ":" + JsonString(v));
  return "{" + fmt::format("{}", fmt::join(items, ",")) + "}";
}

// Checks a command's load flags: the options, or 2 (bad usage) after printing why.
std::optional<LoadOptions> CheckFlags(std::string_view command, const LoadFlags& flags) {
  Result<LoadOptions> options = ParseLoadFlags(flags);
  if (options.ok()) return *std::move(options);
  fmt::print(stderr, "flashload {}: {}\n", command, options.status().message());
  return std::nullopt;
}

// ---- inspect ----

struct InspectArgs {
  std::string path;
  bool json = false;
  bool hash = false;
  LoadFlags flags;  // header limit, variant, remote
};

int Inspect(const InspectArgs& a) {
  const std::optional<LoadOptions> o = CheckFlags("inspect", a.flags);
  if (!o) return 2;
  ResolveOptions ro;
  ro.variant = o->variant;
  const RemoteOpenOptions& remote = o->remote;
  Result<ModelLayout> layout = ResolveModelAt(a.path, ro, remote);
  if (!layout.ok()) {
    fmt::print(stderr, "flashload inspect: {}\n", layout.status().ToString());
    return 1;
  }
  ParseOptions po;
  po.header_limit = o->header_limit;
  std::vector<std::string> file_json;
  uint64_t total_bytes = 0, total_params = 0, total_tensors = 0;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> shard_tensors;
  for (const ModelFile& f : layout->files) {
    Result<Header> h = ReadHeader(f.path, po, remote);
    if (!h.ok()) {
      fmt::print(stderr, "flashload inspect: {}\n", h.status().ToString());
      return 1;
    }
    auto& names = shard_tensors[f.component][f.path];
    for (const TensorInfo& t : h->tensors) names.push_back(t.name);
    std::map<std::string, uint64_t> hashes;
    if (a.hash) {
      Result<std::map<std::string, uint64_t>> r = HashTensorsPlainRead(f.path, *h, remote);
      if (!r.ok()) {
        fmt::print(stderr, "flashload inspect: {}\n", r.status().ToString());
        return 1;
      }
      hashes = *std::move(r);
    }
    const uint64_t params = ParamCount(*h);
    total_bytes += h->data_size();
    total_params += params;
    total_tensors += h->tensors.size();
    if (a.json) {
      std::vector<std::string> tensors;
      for (const TensorInfo& t : h->tensors) {
        std::string entry =
            fmt::format("{{\"name\":{},\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]",
                        JsonString(t.name), DtypeName(t.dtype), fmt::join(t.shape, ","),
                        t.data_begin, t.data_end);
        if (a.hash) entry += fmt::format(",\"xxh3\":\"{:016x}\"", hashes[t.name]);
        tensors.push_back(entry + "}");
      }
      file_json.push_back(fmt::format(
          "{{\"path\":{},\"component\":{},\"header_length\":{},\"data_offset\":{},\"file_size\":{},"
          "\"data_bytes\":{},\"parameters\":{},\"metadata\":{},\"tensors\":[{}]}}",
          JsonString(RedactUrl(f.path)), JsonString(f.component), h->header_length,
          h->data_offset(), h->file_size, h->data_size(), params, MetadataJson(*h),
          fmt::join(tensors, ",")));
      continue;
    }
    fmt::print("{}{}{}\n", f.component, f.component.empty() ? "" : ": ", RedactUrl(f.path));
    fmt::print("  header {} bytes, data section at byte {}, {} tensors, {} parameters, {}\n",
               h->header_length, h->data_offset(), h->tensors.size(), params,
               HumanBytes(h->data_size()));
    if (h->metadata) {
      for (const auto& [k, v] : *h->metadata) fmt::print("  metadata {} = {}\n", k, v);
    }
    for (const TensorInfo& t : h->tensors) {
      fmt::print("  {:<60} {:<11} {:<22} {:>12} [{}, {})", t.name, DtypeName(t.dtype),
                 ShapeString(t.shape), t.byte_size(), t.data_begin, t.data_end);
      if (a.hash) fmt::print(" xxh3 {:016x}", hashes[t.name]);
      fmt::print("\n");
    }
  }
  // An index that disagrees with its shards: inspect still shows what is there, but says so (load
  // and validate refuse such a model).
  std::vector<std::string> warnings;
  for (const auto& [component, weight_map] : layout->weight_maps) {
    const std::string index = component.empty() ? layout->root : layout->root + "/" + component;
    if (Status s = CheckWeightMap(index, weight_map, shard_tensors[component]); !s.ok()) {
      warnings.push_back(fmt::format(
          "{} (load and validate refuse this model; fix the index or the shards)", s.message()));
      fmt::print(stderr, "flashload inspect: warning: {}\n", warnings.back());
    }
  }
  if (a.json) {
    if (layout->files.size() == 1 && layout->kind == ModelLayout::Kind::kSingleFile) {
      fmt::print("{}\n", file_json[0]);
    } else {
      std::vector<std::string> quoted;
      for (const std::string& w : warnings) quoted.push_back(JsonString(w));
      fmt::print(
          "{{\"path\":{},\"files\":[{}],\"tensors\":{},\"parameters\":{},\"data_bytes\":{},"
          "\"warnings\":[{}]}}\n",
          JsonString(RedactUrl(a.path)), fmt::join(file_json, ","), total_tensors, total_params,
          total_bytes, fmt::join(quoted, ","));
    }
  } else if (layout->files.size() > 1) {
    fmt::print("total: {} files, {} tensors, {} parameters, {}\n", layout->files.size(),
               total_tensors, total_params, HumanBytes(total_bytes));
  }
  return 0;
}

// ---- validate ----

struct ValidateArgs {
  std::vector<std::string> paths;
  bool json = false;
  LoadFlags flags;  // header limit, remote
};

// Validates every file of `path` (headers, and weight maps for sharded checkpoints).
Status ValidatePath(const std::string& path, const ParseOptions& po,
                    const RemoteOpenOptions& remote, size_t* tensors) {
  FL_ASSIGN_OR_RETURN(ModelLayout layout, ResolveModelAt(path, {}, remote));
  std::map<std::string, std::map<std::string, std::vector<std::string>>> shard_tensors;
  for (const ModelFile& f : layout.files) {
    FL_ASSIGN_OR_RETURN(Header h, ReadHeader(f.path, po, remote));
    *tensors += h.tensors.size();
    auto& names = shard_tensors[f.component][f.path];
    for (const TensorInfo& t : h.tensors) names.push_back(t.name);
  }
  for (const auto& [component, weight_map] : layout.weight_maps) {
    const std::string index = component.empty() ? layout.root : layout.root + "/" + component;
    FL_RETURN_IF_ERROR(CheckWeightMap(index, weight_map, shard_tensors[component]));
  }
  return Status();
}

int Validate(const ValidateArgs& a) {
  const std::optional<LoadOptions> o = CheckFlags("validate", a.flags);
  if (!o) return 2;
  ParseOptions po;
  po.header_limit = o->header_limit;
  bool all_ok = true;
  std::vector<std::string> json;
  for (const std::string& p : a.paths) {
    size_t tensors = 0;
    Status s = ValidatePath(p, po, o->remote, &tensors);
    all_ok = all_ok && s.ok();
    if (a.json) {
      json.push_back(
          fmt::format("{{\"path\":{},\"ok\":{},\"code\":\"{}\",\"error\":{},\"tensors\":{}}}",
                      JsonString(RedactUrl(p)), s.ok() ? "true" : "false", StatusCodeName(s.code()),
                      JsonString(s.message()), tensors));
    } else if (s.ok()) {
      fmt::print("OK       {} ({} tensors)\n", RedactUrl(p), tensors);
    } else {
      fmt::print("INVALID  {}\n         {}\n", RedactUrl(p), s.ToString());
    }
  }
  if (a.json) fmt::print("{{\"files\":[{}]}}\n", fmt::join(json, ","));
  return all_ok ? 0 : 1;
}

// ---- load ----

struct LoadArgs {
  std::string path;
  bool verify = false;
  bool json = false;
  bool dry_run = false;
  uint64_t warm_memory_mib = 0;
  std::string save;
  uint64_t inject_read_fault_after = 0;
  LoadFlags flags;
  TpArgs tp;
};

int LoadCommand(const LoadArgs& a) {
  std::optional<LoadOptions> checked = CheckFlags("load", a.flags);
  if (!checked) return 2;
  LoadOptions& o = *checked;
  if ((a.verify || !a.save.empty()) && o.device.type != DeviceType::kCpu) {
    fmt::print(stderr, "flashload load: --verify and --save need host tensors (--device cpu)\n");
    return 2;
  }
  if (a.verify && !o.dtype.empty()) {
    fmt::print(stderr,
               "flashload load: --verify compares stored bytes; it cannot check a load with "
               "--dtype (use --save and compare)\n");
    return 2;
  }
  o.cancel = &g_interrupted;
  if (a.inject_read_fault_after > 0) {
    // Tests only: every read of every file after its first N fails with EIO.
    const uint64_t after = a.inject_read_fault_after;
    o.opener = [after](const std::string& uri,
                       const OpenOptions& open) -> Result<std::unique_ptr<Source>> {
      FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> src, OpenSource(uri, open));
      FaultOptions faults;
      faults.after_requests = after;
      return std::unique_ptr<Source>(NewFaultSource(std::move(src), faults));
    };
  }
  if (a.tp.tp > 0) {
    if (a.verify || a.dry_run) {
      fmt::print(stderr, "flashload load: --tp cannot be combined with --verify or --dry-run\n");
      return 2;
    }
    if (!a.save.empty() && a.save.find("{rank}") == std::string::npos) {
      fmt::print(stderr,
                 "flashload load: with --tp, --save needs {{rank}} in its path (each rank writes "
                 "its own shards), e.g. --save 'shards/rank{{rank}}.safetensors'\n");
      return 2;
    }
    TpArgs tp = a.tp;
    tp.json = a.json;
    tp.save = a.save;
    return TensorParallelLoad(a.path, o, tp);
  }
  if (a.dry_run) {
    Result<std::string> plan = DescribeLoadPlan(a.path, o);
    if (!plan.ok()) {
      fmt::print(stderr, "flashload load: {}\n", plan.status().ToString());
      return 1;
    }
    fmt::print("{}", *plan);
    return 0;
  }
  ProgressBar bar("loading");
  o.progress = [&](const Progress& p) {
    bar.Update(p.bytes_done, p.bytes_total);
    return true;
  };
  std::signal(SIGINT, OnSigint);
  std::optional<PeakRssMeter> warm_meter;
  if (a.warm_memory_mib > 0) {
    // Benchmarking only (see WarmFreshMemory): touch fresh memory right before the clock, as
    // `bench --warm-memory` does for its "warmed" variant; a user's load never gets this.
    (void)WarmFreshMemory(a.warm_memory_mib << 20);
    warm_meter.emplace();  // peak RSS from here on: the warming is not the load's
  }
  Result<LoadedModel> model = Load(a.path, o);
  bar.Finish();
  std::signal(SIGINT, SIG_DFL);
  if (!model.ok()) {
    fmt::print(stderr, "flashload load: {}\n", model.status().ToString());
    return 1;
  }
  const LoadReport& r = model->report;
  const uint64_t rss =
      warm_meter ? static_cast<uint64_t>(std::max<int64_t>(warm_meter->PeakDeltaBytes(), 0))
                 : PeakRssBytes();
  std::optional<VerifyReport> verify;
  if (a.verify) {
    Result<VerifyReport> v = VerifyModel(*model, o.remote);
    if (!v.ok()) {
      fmt::print(stderr, "flashload load: verify: {}\n", v.status().ToString());
      return 1;
    }
    verify = *std::move(v);
  }
  if (!a.save.empty()) {
    Status saved = SaveTensors(a.save, model->tensors);
    if (!saved.ok()) {
      fmt::print(stderr, "flashload load: --save: {}\n", saved.ToString());
      return 1;
    }
  }
  if (a.json) {
    std::vector<std::string> files;
    for (const FileReport& f : r.files) {
      files.push_back(
          fmt::format("{{\"path\":{},\"component\":{},\"strategy\":{},\"reason\":{},\"resident_"
                      "fraction\":{:.4f},"
                      "\"bytes\":{},\"tensors\":{},\"seconds\":{:.6f},\"tensors_converted\":{},"
                      "\"bytes_converted\":{},\"output_bytes\":{},\"gpu_direct_storage\":{}}}",
                      JsonString(RedactUrl(f.path)), JsonString(f.component),
                      JsonString(f.strategy), JsonString(f.reason), f.resident_fraction, f.bytes,
                      f.tensors, f.seconds, f.tensors_converted, f.bytes_converted, f.output_bytes,
                      JsonString(f.gpu_direct_storage)));
    }
    std::string v = "null";
    if (verify) {
      v = fmt::format("{{\"tensors_checked\":{},\"mismatches\":{}}}", verify->tensors_checked,
                      verify->mismatches.size());
    }
    fmt::print(
        "{{\"path\":{},\"tensors\":{},\"bytes\":{},\"seconds\":{:.6f},\"gb_per_s\":{:.4f},"
        "\"header_seconds\":{:.6f},\"peak_rss_bytes\":{},\"device\":{},\"copy_engine\":{},"
        "\"dtype\":{},\"tensors_converted\":{},\"bytes_converted\":{},\"output_bytes\":{},"
        "\"staging_bytes\":{},\"peak_device_bytes\":{},\"copy_engine_seconds\":{:.6f},"
        "\"allocation_seconds\":{:.6f},\"page_size\":{},\"memory_reused_bytes\":{},"
        "\"memory_populated_ahead\":{},\"memory_populated_on_demand\":{},"
        "\"files\":[{}],\"verify\":{}}}\n",
        JsonString(RedactUrl(a.path)), model->tensors.size(), r.bytes, r.seconds, r.GbPerSecond(),
        r.header_seconds, rss, JsonString(r.device), JsonString(r.copy_engine), JsonString(o.dtype),
        r.tensors_converted, r.bytes_converted, r.output_bytes, r.staging_bytes,
        r.peak_device_bytes, r.copy_engine_seconds, r.allocation_seconds, JsonString(r.page_size),
        r.memory_reused_bytes, r.memory_populated_ahead, r.memory_populated_on_demand,
        fmt::join(files, ","), v);
  } else {
    for (const FileReport& f : r.files) {
      fmt::print("  {}{}{}: {} in {:.3f} s — {} ({})\n", f.component,
                 f.component.empty() ? "" : ": ", RedactUrl(f.path), HumanBytes(f.bytes), f.seconds,
                 f.strategy, f.reason);
      if (!f.gpu_direct_storage.empty()) fmt::print("    to the GPU: {}\n", f.gpu_direct_storage);
    }
    fmt::print("loaded {} tensors, {} in {:.3f} s: {:.2f} GB/s (headers {:.1f} ms); peak RSS {}\n",
               model->tensors.size(), HumanBytes(r.bytes), r.seconds, r.GbPerSecond(),
               r.header_seconds * 1e3, HumanBytes(rss));
    if (!r.page_size.empty()) {
      fmt::print("memory: {}; {} populated ahead of the reads, {} by the reads, {} reused\n",
                 r.page_size, HumanBytes(r.memory_populated_ahead),
                 HumanBytes(r.memory_populated_on_demand), HumanBytes(r.memory_reused_bytes));
    }
    if (!r.copy_engine.empty()) {
      fmt::print(
          "to {} through {}: {} staged; {} tensors converted ({} -> {}){}; set-up (included "
          "above): copy engine {:.1f} ms, allocations {:.1f} ms\n",
          r.device, r.copy_engine, HumanBytes(r.staging_bytes), r.tensors_converted,
          HumanBytes(r.bytes_converted), HumanBytes(r.bytes_converted + r.output_bytes - r.bytes),
          r.peak_device_bytes > 0
              ? fmt::format("; peak GPU memory {}", HumanBytes(r.peak_device_bytes))
              : "",
          r.copy_engine_seconds * 1e3, r.allocation_seconds * 1e3);
    }
    if (verify) {
      fmt::print("verify: {} tensors compared with a plain read: {}\n", verify->tensors_checked,
                 verify->mismatches.empty() ? "all identical" : "MISMATCH");
    }
  }
  if (verify && !verify->mismatches.empty()) {
    for (const std::string& m : verify->mismatches) {
      fmt::print(stderr, "mismatch: {}\n", RedactUrlsIn(m));
    }
    return 1;
  }
  return 0;
}

}  // namespace

int RunCli(int argc, char** argv) {
  CLI::App app{
      "flashload: load safetensors models (files, sharded checkpoints, diffusers folders) into "
      "memory at the speed of the storage.\n\nExit codes: 0 success, 1 failure (invalid file, I/O "
      "error, verification mismatch), 2 bad usage."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "flashload 0.1.0");

  InspectArgs ia;
  CLI::App* inspect = app.add_subcommand(
      "inspect",
      "List the tensors of a file, sharded checkpoint, diffusers folder or packed archive: "
      "names, dtypes, "
      "shapes, bytes, offsets, totals, parameter count, metadata. Reads headers only. A sharded "
      "checkpoint whose index disagrees with its shards is shown with a warning (stderr, and "
      "\"warnings\" in --json); load and validate refuse it.");
  inspect
      ->add_option(
          "path", ia.path,
          "a .safetensors file, an index.json, a model folder, or a .tar / seekable .tar.zst "
          "archive of one (read in place); a path or an http(s):// or s3:// URI, or "
          "tar:<archive>!/<member>")
      ->required();
  inspect->add_flag("--json", ia.json, "machine-readable output");
  inspect->add_flag("--hash", ia.hash,
                    "also read every tensor and print its XXH3-64 (plain reads)");
  AddLoadFlags(*inspect, ia.flags, {.header_limit = true, .variant = true, .remote = true});

  ValidateArgs va;
  CLI::App* validate = app.add_subcommand(
      "validate",
      "Check files against the safetensors rules (and sharded checkpoints against their "
      "index). Prints what is wrong, where, and what the file really is. Exit 1 if any "
      "is invalid.");
  validate->add_option("paths", va.paths, "files, model folders or packed archives")->required();
  validate->add_flag("--json", va.json, "machine-readable output");
  AddLoadFlags(*validate, va.flags, {.header_limit = true, .remote = true});

  LoadArgs la;
  CLI::App* load = app.add_subcommand(
      "load",
      "Load a model (a file, folder, sharded checkpoint, or a .tar / seekable .tar.zst archive "
      "read in place) into host or GPU memory and report the strategy, time, throughput and peak "
      "RSS.");
  load->add_option(
          "path", la.path,
          "a .safetensors file, an index.json, a model folder, or a .tar / seekable .tar.zst "
          "archive of one (read in place); a path or an http(s):// or s3:// URI, or "
          "tar:<archive>!/<member>")
      ->required();
  load->add_option("--warm-memory-mib", la.warm_memory_mib,
                   "for benchmarking only, never for real loads: touch (and free) this much fresh "
                   "memory just before the clock starts, hiding the first-touch cost that virtual "
                   "machines whose host reclaims idle memory put on every fresh process; a figure "
                   "measured with it is a 'warmed' one, not what a user's load gets");
  load->add_flag("--verify", la.verify,
                 "compare every tensor's XXH3 with an independent plain read of the file (a file "
                 "truncated since the load is an error naming the tensor and byte offset)");
  load->add_flag("--dry-run", la.dry_run, "print the plan (files, byte ranges, chunks) and exit");
  load->add_flag("--json", la.json, "machine-readable output");
  load->add_option("--save", la.save,
                   "write the loaded tensors to this .safetensors file (host loads; with --dtype: "
                   "a converted copy)");
  AddLoadFlags(
      *load, la.flags,
      {.reads = true, .header_limit = true, .variant = true, .device = true, .remote = true});
  load->add_option("--inject-read-fault-after", la.inject_read_fault_after,
                   "tests only: every read of each file after its first N fails with EIO")
      ->group("");  // hidden
  load->add_option("--tp", la.tp.tp,
                   "tensor-parallel load over N ranks: run under `mpirun -n N`; each rank ends "
                   "with its shard of every tensor (torch.tensor_split semantics) and rank 0 "
                   "prints every rank's report (docs/tensor-parallel.md)")
      ->check(CLI::Range(1u, 65536u));
  load->add_option("--shard", la.tp.shard,
                   "with --tp: shard rules, a preset (llama, none) or a rules file "
                   "(docs/shard-rules.md)")
      ->capture_default_str();
  load->add_option("--shard-mode", la.tp.mode,
                   "with --tp: local (each rank reads only its shards: fast local disks), share "
                   "(each byte read once across the ranks, then exchanged: S3, HTTP, network "
                   "file systems) or auto (share for remote or network files)")
      ->capture_default_str();
  load->add_option("--share-window-mib", la.tp.window_mib,
                   "with --tp and share: MiB of the model read per round across the ranks "
                   "(default: the memory budget)");
  load->add_option("--tp-communicator", la.tp.communicator,
                   "with --tp: what the ranks exchange bytes over: mpi, or nccl between their GPUs "
                   "(needs --device cuda:N and a build with NCCL; bootstrapped over MPI)")
      ->capture_default_str();
  load->add_option("--tp-timeout", la.tp.timeout_seconds,
                   "with --tp: seconds a rank waits for the others at each step before the job "
                   "is aborted")
      ->capture_default_str();

  BenchArgs ba;
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Measure loading cold and hot, every run in its own fresh process with nothing warmed for "
      "it, beside the limits (storage by fio; the fresh-memory supply, first touch of new memory "
      "by one thread per core with 4 KiB and huge pages) and the usual ways of reading (mmap + "
      "copy per tensor as safetensors does, one-thread read), interleaved. Cold is judged "
      "against min(fio, fresh memory), hot against fresh memory.");
  AddBenchOptions(*bench, ba);

  GenArgs ga;
  CLI::App* gen = app.add_subcommand(
      "gen",
      "Write a synthetic model with the tensor shapes of a real architecture, filled with "
      "random bytes (or trained-weight-like values: --values weights).");
  AddGenOptions(*gen, ga);

  DemoArgs da;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Generate a realistic model (SD-1.5-like diffusers folder, ~2 GB) in a temporary "
      "folder and benchmark it as `flashload bench` does: cold and hot, fresh processes, nothing "
      "warmed, against fio, the fresh-memory supply and the baselines.");
  AddDemoOptions(*demo, da);

  std::vector<Command> commands;
  AddConvertCommand(app, commands);
  AddPackCommands(app, commands);
  AddTransferCommands(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*inspect) return Inspect(ia);
  if (*validate) return Validate(va);
  if (*load) return LoadCommand(la);
  if (*bench) return RunBench(ba);
  if (*gen) return RunGen(ga);
  if (*demo) return RunDemo(da);
  for (const Command& c : commands) {
    if (*c.app) return c.run();
  }
  return 2;
}

}  // namespace flashload::cli
