#include "cli/bench.h"

#include <fmt/format.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "cli/baselines.h"
#include "cli/flags.h"
#include "cli/gen.h"
#include "cli/output.h"
#include "flashload/loader.h"
#include "flashload/model.h"
#include "io/page_cache.h"
#include "sink/copy_engine.h"
#include "sink/cuda_copy_engine.h"

namespace flashload::cli {

namespace {

using Clock = std::chrono::steady_clock;

// One timed run of one method, measured in a child process so each run has its own peak RSS and
// leaves nothing behind.
struct Sample {
  bool ok = false;
  double seconds = 0;
  uint64_t bytes = 0;
  int64_t peak_rss = -1;        // peak RSS of the child (bytes)
  double resident_before = -1;  // page-cache residency of the files before the run
  int64_t peak_device = -1;     // GPU loads: most device memory flashload held at once
  uint64_t output_bytes = 0;    // bytes of the tensors as loaded (after conversion)
  char detail[320] = {};
  char error[512] = {};
};

Sample RunInChild(const std::function<Sample()>& fn) {
  int fds[2];
  Sample failed;
  if (pipe(fds) != 0) {
    std::snprintf(failed.error, sizeof(failed.error), "pipe failed");
    return failed;
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    std::snprintf(failed.error, sizeof(failed.error), "fork failed");
    return failed;
  }
  if (pid == 0) {
    close(fds[0]);
    Sample s = fn();
    s.peak_rss = static_cast<int64_t>(PeakRssBytes());
    const ssize_t w = write(fds[1], &s, sizeof(s));
    _exit(w == static_cast<ssize_t>(sizeof(s)) ? 0 : 1);
  }
  close(fds[1]);
  Sample s;
  size_t got = 0;
  while (got < sizeof(s)) {
    const ssize_t n = read(fds[0], reinterpret_cast<char*>(&s) + got, sizeof(s) - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (got != sizeof(s)) {
    std::snprintf(failed.error, sizeof(failed.error), "benchmark child died (status %d)", wstatus);
    return failed;
  }
  return s;
}

Sample FromBaseline(const Result<BaselineResult>& r) {
  Sample s;
  if (!r.ok()) {
    std::snprintf(s.error, sizeof(s.error), "%s", r.status().ToString().c_str());
    return s;
  }
  s.ok = true;
  s.seconds = r->seconds;
  s.bytes = r->bytes;
  std::snprintf(s.detail, sizeof(s.detail), "%s", r->detail.c_str());
  return s;
}

struct Method {
  BenchMethodPlan plan;
  std::function<Sample()> run;
  std::vector<Sample> samples;
};

struct Stat {
  double median = 0, min = 0, max = 0;
  int n = 0;
};

Stat GbpsStat(const std::vector<Sample>& samples) {
  std::vector<double> v;
  for (const Sample& s : samples) {
    if (s.ok && s.seconds > 0) v.push_back(s.bytes / s.seconds / 1e9);
  }
  Stat st;
  st.n = static_cast<int>(v.size());
  if (v.empty()) return st;
  std::sort(v.begin(), v.end());
  st.min = v.front();
  st.max = v.back();
  st.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return st;
}

int64_t MaxRss(const std::vector<Sample>& samples) {
  int64_t m = -1;
  for (const Sample& s : samples) m = std::max(m, s.peak_rss);
  return m;
}

double MaxResidency(const std::vector<Sample>& samples) {
  double m = -1;
  for (const Sample& s : samples) m = std::max(m, s.resident_before);
  return m;
}

// Makes the files cold: drops the whole page cache when allowed (root), else evicts each file.
Status MakeCold(const std::vector<std::string>& files) {
  if (DropAllCaches().ok()) return Status();
  return EvictFiles(files).status();
}

// Reads the files into the page cache through one small buffer: a whole-file buffer here would
// touch (and free) model-sized memory right before the run, warming it for the child.
Status MakeHot(const std::vector<std::string>& files) {
  std::vector<char> buf(8 << 20);
  for (const std::string& path : files) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return ErrnoToStatus(errno, "open", path);
    std::setvbuf(f, nullptr, _IONBF, 0);
    while (std::fread(buf.data(), 1, buf.size(), f) == buf.size()) {
    }
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) return IoError(fmt::format("{}: read failed while priming the page cache", path));
  }
  return Status();
}

std::string MachineDescription(const std::string& path) {
  struct utsname u {};
  uname(&u);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  std::string fs = "?";
  if (auto k = FileSystemKind(path); k.ok()) fs = std::string(k->name);
  return fmt::format("{} cores, {} memory, Linux {}, file system {}",
                     std::thread::hardware_concurrency(), HumanBytes(uint64_t(pages) * page),
                     u.release, fs);
}

struct PhaseResult {
  std::string name;
  std::vector<Method> methods;
  bool cold = false;
  bool gpu = false;
};

const Method* FindKind(const PhaseResult& p, BenchMethodKind kind) {
  for (const Method& m : p.methods) {
    if (m.plan.kind == kind) return &m;
  }
  return nullptr;
}

double Median(const PhaseResult& p, BenchMethodKind kind) {
  const Method* m = FindKind(p, kind);
  return m ? GbpsStat(m->samples).median : 0;
}

BenchLimit PhaseLimit(const PhaseResult& p) {
  BenchLimitInputs in;
  in.storage =
      std::max(Median(p, BenchMethodKind::kFioLimit), Median(p, BenchMethodKind::kDirectReadLimit));
  in.fresh_small = Median(p, BenchMethodKind::kFreshTouchSmall);
  in.fresh_huge = Median(p, BenchMethodKind::kFreshTouchHuge);
  in.device = Median(p, BenchMethodKind::kPinnedH2D);
  return HeadlineLimit(p.cold, p.gpu, in);
}

// The goals of flashload's core issue: cold ≥ 95 % of the limit and ≥ 3× mmap + copy; hot ≥ 90 %
// of the limit and never slower than mmap + copy.
void PrintGoals(const PhaseResult& p, const Stat& flashload, const BenchLimit& limit) {
  const double want_limit = p.cold ? 0.95 : 0.90;
  const double want_mmap = p.cold ? 3.0 : 1.0;
  auto verdict = [](bool met) { return met ? "met" : "BELOW GOAL"; };
  std::string line;
  if (limit.gbps > 0) {
    const double f = flashload.median / limit.gbps;
    line += fmt::format("≥ {:.0f}% of the limit: {} ({:.0f}%)", want_limit * 100,
                        verdict(f >= want_limit), f * 100);
  }
  if (const Method* mmap = FindKind(p, BenchMethodKind::kMmapCopy)) {
    const Stat b = GbpsStat(mmap->samples);
    if (b.median > 0) {
      const double x = flashload.median / b.median;
      line += fmt::format("{}≥ {:.0f}x mmap + copy: {} ({:.2f}x)", line.empty() ? "" : "; ",
                          want_mmap, verdict(x >= want_mmap), x);
    }
  }
  if (!line.empty()) fmt::print("  goals: {}\n", line);
}

std::string Percent(double part, double whole) {
  return whole > 0 && part > 0 ? fmt::format("{:.0f}%", 100 * part / whole) : "";
}

void PrintPhase(const PhaseResult& p, uint64_t model_bytes, uint64_t budget) {
  const Method* fl = FindKind(p, BenchMethodKind::kFlashload);
  fmt::print("\n{} — resident in page cache before runs: max {:.1f}%\n", p.name,
             std::max(0.0, MaxResidency(fl ? fl->samples : p.methods[0].samples)) * 100);
  fmt::print("  {:<50} {:>9} {:>17} {:>11} {:>10}\n", "method", "GB/s", "min–max", "vs limit",
             "peak RSS");
  const BenchLimit lim = PhaseLimit(p);
  for (const Method& m : p.methods) {
    const Stat st = GbpsStat(m.samples);
    std::string err;
    for (const Sample& s : m.samples) {
      if (!s.ok) err = s.error;
    }
    const bool measured = m.plan.role != "limit" && m.plan.role != "reference";
    const int64_t rss = MaxRss(m.samples);
    fmt::print("  {:<50} {:>9.3f} {:>8.3f}–{:<8.3f} {:>11} {:>10}\n", m.plan.name, st.median,
               st.min, st.max, measured ? Percent(st.median, lim.gbps) : "",
               !measured || rss < 0 ? "" : HumanBytes(rss));
    if (!err.empty()) fmt::print("    error: {}\n", err);
  }
  if (lim.gbps > 0) {
    if (p.gpu) {
      fmt::print("  limit: {} {:.3f} GB/s\n", lim.name, lim.gbps);
    } else if (p.cold) {
      fmt::print(
          "  limit: min(storage {:.3f}, fresh memory {:.3f} ({})) = {:.3f} GB/s, set by {}\n",
          lim.storage_gbps, lim.fresh_memory_gbps, lim.fresh_memory_pages, lim.gbps, lim.name);
    } else {
      fmt::print("  limit: fresh memory {:.3f} GB/s ({}): a loader writes into new memory\n",
                 lim.fresh_memory_gbps, lim.fresh_memory_pages);
    }
  }
  if (fl == nullptr) return;
  const Stat f = GbpsStat(fl->samples);
  if (lim.gbps > 0 && f.median > 0) {
    std::string line = fmt::format("  flashload: {} of the limit", Percent(f.median, lim.gbps));
    if (p.cold && lim.storage_gbps > 0) {
      line += fmt::format(", {} of {}", Percent(f.median, lim.storage_gbps),
                          FindKind(p, BenchMethodKind::kFioLimit) ? "fio" : "O_DIRECT read");
    }
    if (!p.gpu && lim.fresh_memory_gbps > 0 && lim.name != "fresh memory") {
      line += fmt::format(", {} of fresh memory", Percent(f.median, lim.fresh_memory_gbps));
    }
    fmt::print("{}\n", line);
  }
  for (const Method& m : p.methods) {
    if (m.plan.role != "baseline") continue;
    const Stat b = GbpsStat(m.samples);
    if (b.median > 0) fmt::print("  flashload vs {}: {:.2f}x\n", m.plan.name, f.median / b.median);
  }
  if (const Method* w = FindKind(p, BenchMethodKind::kFlashloadWarmed)) {
    const Stat ws = GbpsStat(w->samples);
    fmt::print(
        "  warmed (not a headline): {:.3f} GB/s with fresh memory touched in its process right "
        "before the clock, {:.2f}x the unwarmed run; a user's fresh process does not get this\n",
        ws.median, f.median > 0 ? ws.median / f.median : 0);
  }
  int64_t gpu = -1;
  uint64_t output = 0;
  for (const Sample& s : fl->samples) {
    gpu = std::max(gpu, s.peak_device);
    output = std::max(output, s.output_bytes);
  }
  if (gpu >= 0) {
    fmt::print("  flashload peak GPU memory {} vs tensors {} + budget {}: {}\n", HumanBytes(gpu),
               HumanBytes(output), HumanBytes(budget),
               uint64_t(gpu) <= output + budget ? "within" : "ABOVE");
  }
  const int64_t rss = MaxRss(fl->samples);
  fmt::print("  flashload peak RSS {} vs model {} + budget {}: {}\n",
             HumanBytes(std::max<int64_t>(rss, 0)), HumanBytes(model_bytes), HumanBytes(budget),
             rss >= 0 && uint64_t(rss) <= model_bytes + budget ? "within" : "ABOVE");
  PrintGoals(p, f, lim);
}

std::string PhaseJson(const PhaseResult& p) {
  std::vector<std::string> ms;
  for (const Method& m : p.methods) {
    const Stat st = GbpsStat(m.samples);
    std::vector<std::string> runs;
    for (const Sample& s : m.samples) {
      runs.push_back(fmt::format(
          "{{\"ok\":{},\"seconds\":{:.6f},\"bytes\":{},\"peak_rss\":{},\"resident_before\":{:.4f},"
          "\"peak_device\":{},\"detail\":{},\"error\":{}}}",
          s.ok ? "true" : "false", s.seconds, s.bytes, s.peak_rss, s.resident_before, s.peak_device,
          JsonString(s.detail), JsonString(s.error)));
    }
    ms.push_back(fmt::format(
        "{{\"name\":{},\"role\":\"{}\",\"limit\":\"{}\",\"warmed\":{},\"median_gbps\":{:.4f},"
        "\"min_gbps\":{:.4f},\"max_gbps\":{:.4f},\"runs\":[{}]}}",
        JsonString(m.plan.name), m.plan.role, m.plan.limit, m.plan.warmed ? "true" : "false",
        st.median, st.min, st.max, fmt::join(runs, ",")));
  }
  const BenchLimit lim = PhaseLimit(p);
  const Method* fl = FindKind(p, BenchMethodKind::kFlashload);
  const double f = fl ? GbpsStat(fl->samples).median : 0;
  auto fraction = [&](double whole) { return whole > 0 ? f / whole : 0.0; };
  return fmt::format(
      "{{\"phase\":{},\"cold\":{},\"limit\":{{\"gbps\":{:.4f},\"set_by\":{},\"storage_gbps\":{:.4f}"
      ","
      "\"fresh_memory_gbps\":{:.4f},\"fresh_memory_pages\":{}}},\"flashload_of_limit\":{:.4f},"
      "\"flashload_of_storage\":{:.4f},\"flashload_of_fresh_memory\":{:.4f},\"methods\":[{}]}}",
      JsonString(p.name), p.cold ? "true" : "false", lim.gbps, JsonString(lim.name),
      lim.storage_gbps, lim.fresh_memory_gbps, JsonString(lim.fresh_memory_pages),
      fraction(lim.gbps), fraction(lim.storage_gbps), fraction(lim.fresh_memory_gbps),
      fmt::join(ms, ","));
}

}  // namespace

std::vector<BenchMethodPlan> PlanBenchPhase(const BenchArgs& a, const BenchPhaseSetup& setup) {
  using K = BenchMethodKind;
  std::vector<BenchMethodPlan> ms;
  // Host loads write their tensors into new memory: its supply bounds them like the disk does.
  // GPU loads write into device memory, so there it is only a reference.
  const std::string memory_role = setup.gpu ? "reference" : "limit";
  auto fresh_touch = [&] {
    ms.push_back({K::kFreshTouchSmall,
                  fmt::format("{}: fresh memory first touch, 4 KiB pages", memory_role),
                  memory_role, "fresh-memory"});
    ms.push_back({K::kFreshTouchHuge,
                  fmt::format("{}: fresh memory first touch, MADV_HUGEPAGE", memory_role),
                  memory_role, "fresh-memory"});
  };
  if (setup.cold) {
    if (setup.fio) {
      ms.push_back(
          {K::kFioLimit, "limit: fio O_DIRECT io_uring 1 MiB (best QD)", "limit", "storage"});
    } else {
      ms.push_back({K::kDirectReadLimit, "limit: O_DIRECT raw read (no fio)", "limit", "storage"});
    }
    fresh_touch();
    if (setup.gpu) {
      ms.push_back({K::kPinnedH2D, "reference: pinned cudaMemcpyAsync H2D", "reference", "device"});
    }
  } else {
    fresh_touch();
    ms.push_back({K::kFreshMemcpy,
                  fmt::format("reference: {}-thread memcpy into new memory", setup.threads),
                  "reference", "fresh-memory"});
    ms.push_back({K::kResidentMemcpy,
                  fmt::format("reference: {}-thread memcpy, resident buffers", setup.threads),
                  "reference", ""});
    if (setup.gpu) {  // page cache -> GPU is bounded by the host-to-device copy
      ms.push_back({K::kPinnedH2D, "limit: pinned cudaMemcpyAsync H2D", "limit", "device"});
    }
  }
  ms.push_back({K::kFlashload, "flashload", "flashload", ""});
  if (a.warm_memory) {
    ms.push_back(
        {K::kFlashloadWarmed, "flashload, warmed (memory touched first)", "warmed", "", true});
  }
  if (a.baselines) {
    ms.push_back({K::kMmapCopy, "mmap + copy per tensor (safetensors way)", "baseline", ""});
    ms.push_back({K::kBufferedRead, "one-thread read()", "baseline", ""});
  }
  return ms;
}

BenchLimit HeadlineLimit(bool cold, bool gpu, const BenchLimitInputs& in) {
  BenchLimit l;
  l.storage_gbps = in.storage;
  const bool huge = in.fresh_huge > in.fresh_small;
  l.fresh_memory_gbps = huge ? in.fresh_huge : in.fresh_small;
  if (l.fresh_memory_gbps > 0) l.fresh_memory_pages = huge ? "MADV_HUGEPAGE" : "4 KiB";
  if (gpu) {
    l.gbps = cold ? in.storage : in.device;
    if (l.gbps > 0) l.name = cold ? "storage" : "pinned host-to-device copy";
    return l;
  }
  if (cold && l.storage_gbps > 0 &&
      (l.fresh_memory_gbps <= 0 || l.storage_gbps <= l.fresh_memory_gbps)) {
    l.gbps = l.storage_gbps;
    l.name = "storage";
  } else if (l.fresh_memory_gbps > 0) {
    l.gbps = l.fresh_memory_gbps;
    l.name = "fresh memory";
  }
  return l;
}

void AddBenchOptions(CLI::App& app, BenchArgs& a) {
  app.add_option("path", a.path, "a .safetensors file, an index.json, or a model folder")
      ->required();
  app.add_option("--runs", a.runs, "runs of each method per phase (interleaved)")->default_val(5);
  app.add_flag("!--no-cold", a.cold, "skip the cold-cache phase");
  app.add_flag("!--no-hot", a.hot, "skip the hot-cache phase");
  app.add_flag("!--no-baselines", a.baselines, "measure only flashload and the limit");
  app.add_flag("--json", a.json, "print JSON instead of tables");
  app.add_option("--json-out", a.json_out, "also write the JSON results to this file");
  app.add_flag("--warm-memory", a.warm_memory,
               "also run flashload with fresh memory touched in its process right before the "
               "clock, printed beside as 'warmed' (never the headline; off by default, as a "
               "user's load gets no warmed memory)");
  AddLoadFlags(app, a.load, {.reads = true, .device = true});
  CLI::Option* device = app.get_option("--device");
  device->description(device->get_description() +
                      "; GPU runs add the pinned cudaMemcpyAsync host-to-device limit and peak GPU "
                      "memory");
}

int RunBench(const BenchArgs& a) {
  if (a.path.find("://") != std::string::npos) {
    fmt::print(stderr,
               "flashload bench: {}: bench measures local files against fio and the page cache; "
               "for object stores and network file systems run bench/storage_bench.py, or time "
               "`flashload load URI`\n",
               a.path);
    return 2;
  }
  if (a.runs < 1) {
    fmt::print(stderr, "flashload bench: --runs: {} is out of range (expected at least 1)\n",
               a.runs);
    return 2;
  }
  Result<LoadOptions> parsed = ParseLoadFlags(a.load);
  if (!parsed.ok()) {
    fmt::print(stderr, "flashload bench: {}\n", parsed.status().message());
    return 2;
  }
  const LoadOptions& lo = *parsed;
  Result<ModelLayout> layout = ResolveModel(a.path);
  if (!layout.ok()) {
    fmt::print(stderr, "flashload bench: {}\n", layout.status().ToString());
    return 1;
  }
  std::vector<std::string> files;
  uint64_t file_bytes = 0, data_bytes = 0;
  size_t tensors = 0;
  for (const ModelFile& f : layout->files) {
    files.push_back(f.path);
    Result<Header> h = ReadHeader(f.path);
    if (!h.ok()) {
      fmt::print(stderr, "flashload bench: {}\n", h.status().ToString());
      return 1;
    }
    file_bytes += h->file_size;
    data_bytes += h->data_size();
    tensors += h->tensors.size();
  }
  const bool gpu = lo.device.type == DeviceType::kCuda;
  // CUDA is used only in the measuring children: a CUDA context does not survive fork().
  if (gpu) {
    const int index = lo.device.index;
    Sample probe = RunInChild([index] {
      Sample s;
      Result<std::unique_ptr<sink::CopyEngine>> e = sink::OpenCudaCopyEngine(index);
      s.ok = e.ok();
      if (!e.ok()) std::snprintf(s.error, sizeof(s.error), "%s", e.status().ToString().c_str());
      return s;
    });
    if (!probe.ok) {
      fmt::print(stderr, "flashload bench: {}\n", probe.error);
      return 1;
    }
  }
  auto h2d_limit = [&] {
    Sample s;
    Result<double> secs = sink::MeasurePinnedH2D(lo.device.index, data_bytes);
    if (!secs.ok()) {
      std::snprintf(s.error, sizeof(s.error), "%s", secs.status().ToString().c_str());
      return s;
    }
    s.ok = true;
    s.seconds = *secs;
    s.bytes = data_bytes;
    std::snprintf(s.detail, sizeof(s.detail), "pinned cudaMemcpyAsync, 8 MiB blocks, 4 streams");
    return s;
  };
  const std::string path = a.path;

  auto flashload_run = [&] {
    Sample s;
    if (gpu) {
      // A model server has its CUDA context long before it loads weights, and the Python
      // baselines import torch (and make their context) outside their clocks too.
      if (Status w = sink::WarmUpCuda(lo.device.index); !w.ok()) {
        std::snprintf(s.error, sizeof(s.error), "%s", w.ToString().c_str());
        return s;
      }
    }
    const auto t0 = Clock::now();
    Result<LoadedModel> m = Load(path, lo);
    s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!m.ok()) {
      std::snprintf(s.error, sizeof(s.error), "%s", m.status().ToString().c_str());
      return s;
    }
    s.ok = true;
    s.bytes = m->report.bytes;
    s.output_bytes = m->report.output_bytes;
    if (gpu) s.peak_device = static_cast<int64_t>(m->report.peak_device_bytes);
    std::string detail = m->report.files.empty() ? "" : m->report.files[0].strategy;
    if (gpu && !m->report.files.empty()) {
      // How the first file reached the GPU (GPUDirect Storage or why staged).
      detail += "; " + m->report.files[0].gpu_direct_storage;
    }
    std::snprintf(s.detail, sizeof(s.detail), "%s", detail.c_str());
    return s;
  };

  const uint32_t threads = std::max(1u, std::thread::hardware_concurrency());
  // --warm-memory only: what the warmed variant touches in its own process before its clock.
  const uint64_t warm_bytes = file_bytes + lo.memory_budget;
  auto warmed_run = [&] {
    (void)WarmFreshMemory(warm_bytes, threads);
    PeakRssMeter reset_peak;  // the child's peak RSS from here on: the warming is not the load's
    return flashload_run();
  };
  auto run_of = [&](BenchMethodKind kind) -> std::function<Sample()> {
    using K = BenchMethodKind;
    switch (kind) {
      case K::kFioLimit:
        return [&] { return FromBaseline(FioLimit(files)); };
      case K::kDirectReadLimit:
        return [&] { return FromBaseline(DirectReadLimit(files)); };
      case K::kFreshTouchSmall:
        return [&] { return FromBaseline(FreshTouchLimit(data_bytes, threads, PageMode::kSmall)); };
      case K::kFreshTouchHuge:
        return [&] { return FromBaseline(FreshTouchLimit(data_bytes, threads, PageMode::kHuge)); };
      case K::kPinnedH2D:
        return h2d_limit;
      case K::kFreshMemcpy:
        return [&] { return FromBaseline(FreshMemcpyLimit(data_bytes, threads)); };
      case K::kResidentMemcpy:
        return [&] { return FromBaseline(MemcpyLimit(data_bytes, threads)); };
      case K::kFlashload:
        return flashload_run;
      case K::kFlashloadWarmed:
        return warmed_run;
      case K::kMmapCopy:
        return [&] { return FromBaseline(MmapCopyBaseline(files)); };
      case K::kBufferedRead:
        return [&] { return FromBaseline(BufferedReadBaseline(files)); };
    }
    return {};
  };

  if (!a.json) {
    fmt::print("flashload bench: {} — {} files, {} tensors, {} of tensor data\n", a.path,
               files.size(), tensors, HumanBytes(data_bytes));
    fmt::print("machine: {}\n", MachineDescription(files[0]));
    fmt::print(
        "{} interleaved runs per method and phase, median and min–max; every run in its own fresh "
        "process with nothing warmed for it\n"
        "fresh memory limit: {} threads (one per core) touch {} of new memory, 4 KiB pages and "
        "MADV_HUGEPAGE; the better of the two is the supply of memory to load into\n",
        a.runs, threads, HumanBytes(data_bytes));
  }

  std::vector<PhaseResult> phases;
  auto run_phase = [&](const std::string& name, bool cold, std::vector<Method> methods) {
    PhaseResult p{name, std::move(methods), cold, gpu};
    ProgressBar bar(name);
    const int total = a.runs * static_cast<int>(p.methods.size());
    int done = 0;
    const size_t count = p.methods.size();
    for (int r = 0; r < a.runs; ++r) {
      // Rotate the order each round so no method always runs first (or after the same neighbour).
      for (size_t k = 0; k < count; ++k) {
        Method& m = p.methods[(k + static_cast<size_t>(r)) % count];
        // Nothing else is prepared: the run gets the memory a user's fresh process would get.
        Status prep = cold ? MakeCold(files) : MakeHot(files);
        const Result<double> residency = ResidentFractionOf(files);
        const double resident = residency.ok() ? *residency : -1;
        Sample s;
        if (!prep.ok()) {
          std::snprintf(s.error, sizeof(s.error), "%s", prep.ToString().c_str());
        } else {
          s = RunInChild(m.run);
        }
        s.resident_before = resident;
        m.samples.push_back(s);
        bar.Update(++done, total);
      }
    }
    bar.Finish();
    phases.push_back(std::move(p));
  };
  auto methods_of = [&](const BenchPhaseSetup& setup) {
    std::vector<Method> ms;
    for (BenchMethodPlan& plan : PlanBenchPhase(a, setup)) {
      std::function<Sample()> run = run_of(plan.kind);
      ms.push_back({std::move(plan), std::move(run), {}});
    }
    return ms;
  };

  if (a.cold) {
    const bool fio = FioLimit(files, std::span<const uint32_t>(kFioDepths).first(1)).ok();
    run_phase("COLD (page cache dropped before each run)", true,
              methods_of({.cold = true, .fio = fio, .gpu = gpu, .threads = threads}));
  }
  if (a.hot) {
    run_phase("HOT (files in page cache)", false,
              methods_of({.cold = false, .fio = false, .gpu = gpu, .threads = threads}));
  }

  std::vector<std::string> pj;
  for (const PhaseResult& p : phases) pj.push_back(PhaseJson(p));
  const std::string json = fmt::format(
      "{{\"path\":{},\"files\":{},\"tensors\":{},\"data_bytes\":{},\"file_bytes\":{},"
      "\"budget_bytes\":{},\"machine\":{},\"runs\":{},\"memory_threads\":{},"
      "\"warm_memory\":{},\"phases\":[{}]}}",
      JsonString(a.path), files.size(), tensors, data_bytes, file_bytes, lo.memory_budget,
      JsonString(MachineDescription(files[0])), a.runs, threads, a.warm_memory ? "true" : "false",
      fmt::join(pj, ","));
  if (!a.json_out.empty()) {
    std::ofstream(a.json_out) << json << "\n";
  }
  if (a.json) {
    fmt::print("{}\n", json);
  } else {
    for (const PhaseResult& p : phases) PrintPhase(p, data_bytes, lo.memory_budget);
  }
  for (const PhaseResult& p : phases) {
    for (const Method& m : p.methods) {
      if (m.plan.role == "flashload" && GbpsStat(m.samples).n != a.runs) return 1;
    }
  }
  return 0;
}

void AddGenOptions(CLI::App& app, GenArgs& a) {
  std::string kinds;
  for (const GenKind& k : GenKinds()) kinds += fmt::format("\n  {:<10} {}", k.name, k.description);
  app.add_option("kind", a.kind, "what to generate:" + kinds)->required();
  app.add_option("out_dir", a.out_dir, "folder to write (created; must be empty unless --force)")
      ->required();
  app.add_option("--seed", a.seed, "random seed")->default_val(1);
  app.add_option("--alignment", a.alignment, "data section alignment: 8 (reference) or 4096")
      ->default_val(8);
  app.add_flag("--force", a.force, "write into a non-empty folder");
  app.add_option("--values", a.values,
                 "what floating tensors hold: random (random finite bit patterns, "
                 "incompressible) or weights (trained-weight-like values, about N(0, 0.02), "
                 "which compress as real checkpoints do)")
      ->check(CLI::IsMember({"random", "weights"}))
      ->default_val("random");
  app.add_option("--shape", a.llm_shape,
                 "for llm: hidden=,layers=,intermediate=,vocab=,heads=,kv_heads=,shard_mb=,tie=");
}

int RunGen(const GenArgs& a) {
  GenOptions o;
  o.kind = a.kind;
  o.out_dir = a.out_dir;
  o.seed = a.seed;
  o.alignment = a.alignment;
  o.force = a.force;
  o.weight_values = a.values == "weights";
  if (!a.llm_shape.empty()) {
    Result<LlmShape> shape = ParseLlmShape(a.llm_shape);
    if (!shape.ok()) {
      fmt::print(stderr, "flashload gen: {}\n", shape.status().ToString());
      return 2;
    }
    o.llm = *shape;
  }
  ProgressBar bar("writing");
  o.progress = [&](uint64_t done, uint64_t total) { bar.Update(done, total); };
  Result<GenSummary> s = GenerateModel(o);
  bar.Finish();
  if (!s.ok()) {
    fmt::print(stderr, "flashload gen: {}\n", s.status().ToString());
    return 1;
  }
  for (const GenComponent& c : s->components) {
    fmt::print("  {:<14} {:>3} files {:>6} tensors {:>14} params {:>10}\n", c.name, c.files,
               c.tensors, c.params, HumanBytes(c.bytes));
  }
  fmt::print("wrote {} ({}): {} files, {} tensors, {} params, {} in {:.1f} s ({:.0f} MB/s)\n",
             s->out_dir, s->kind, s->files, s->tensors, s->params, HumanBytes(s->disk_bytes),
             s->seconds, s->MbPerSecond());
  return 0;
}

void AddDemoOptions(CLI::App& app, DemoArgs& a) {
  app.add_option("--kind", a.kind, "model to generate (see `flashload gen --help`)")
      ->default_val("sd15");
  app.add_option("--dir", a.dir, "where to generate (default: a new folder under /var/tmp)");
  app.add_option("--runs", a.runs, "runs per method and phase")->default_val(5);
  app.add_flag("--keep", a.keep, "keep the generated model");
  app.add_flag("--json", a.json, "print the benchmark as JSON");
  app.add_flag("--warm-memory", a.warm_memory,
               "also print a 'warmed' flashload run beside (see `flashload bench --help`)");
}

int RunDemo(const DemoArgs& a) {
  std::string dir = a.dir;
  bool made = false;
  if (dir.empty()) {
    // Not /tmp, which is often tmpfs (in memory, no O_DIRECT): the demo is about storage.
    std::string tmpl = "/var/tmp/flashload-demo-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      fmt::print(stderr, "flashload demo: cannot create a folder under /var/tmp\n");
      return 1;
    }
    dir = tmpl;
    made = true;
  }
  fmt::print("flashload demo: generating a synthetic '{}' model in {}\n", a.kind, dir);
  GenArgs g;
  g.kind = a.kind;
  g.out_dir = dir;
  g.force = false;  // a folder the user named must be empty: nothing of theirs is overwritten
  int rc = RunGen(g);
  if (rc == 0) {
    BenchArgs b;
    b.path = dir;
    b.runs = a.runs;
    b.json = a.json;
    b.warm_memory = a.warm_memory;
    rc = RunBench(b);
  }
  if (made && !a.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  } else {
    fmt::print("kept the model in {}\n", dir);
  }
  return rc;
}

}  // namespace flashload::cli
