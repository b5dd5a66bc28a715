// `flashload bench` and `flashload demo`: load a model cold and hot, beside its limit and the usual
// ways of reading it, interleaved and repeated (BENCHMARKING.md); and `flashload gen`.
//
// Add*Options bind CLI11 options to the fields of `args`, which must outlive the app's parse.
// Run* return the process exit code (0 success, 1 a run or write failed, 2 bad usage) and print
// their errors to stderr. RunBench forks one child process per run (and makes files cold with
// DropAllCaches or eviction): call it from a single-threaded process, one at a time. PlanBenchPhase
// and HeadlineLimit are pure.
#ifndef FLASHLOAD_CLI_BENCH_H_
#define FLASHLOAD_CLI_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "load/load_flags.h"

namespace CLI {
class App;
}

namespace flashload::cli {

struct BenchArgs {
  std::string path;
  int runs = 5;
  bool cold = true;
  bool hot = true;
  bool json = false;
  std::string json_out;   // also write the JSON to this file
  bool baselines = true;  // mmap+copy and one-thread read
  // How flashload loads: the reads and device flags of `flashload load` (cli/flags.h).
  LoadFlags load;
  // Also run flashload with fresh memory touched in its process right before the clock, labelled
  // "warmed" and never the headline. Off by default: every run gets nothing a user's start lacks.
  bool warm_memory = false;
};

struct GenArgs {
  std::string kind;
  std::string out_dir;
  uint64_t seed = 1;
  uint64_t alignment = 8;
  bool force = false;
  std::string llm_shape;          // "hidden=...,layers=..." for kind llm
  std::string values = "random";  // "random" or "weights" (GenOptions::weight_values)
};

struct DemoArgs {
  std::string kind = "sd15";
  std::string dir;  // where to generate (default: a temporary folder under /var/tmp)
  int runs = 5;
  bool keep = false;
  bool json = false;
  bool warm_memory = false;  // see BenchArgs::warm_memory
};

// What one phase of `bench` measures, decided before anything runs. Every method runs once per
// round in a fresh child process, in rotating order.
enum class BenchMethodKind {
  kFioLimit,         // storage limit: fio O_DIRECT io_uring
  kDirectReadLimit,  // storage limit without fio: O_DIRECT preads
  kFreshTouchSmall,  // fresh-memory supply: first touch, 4 KiB pages
  kFreshTouchHuge,   // fresh-memory supply: first touch, MADV_HUGEPAGE
  kPinnedH2D,        // GPU: pinned cudaMemcpyAsync host to device
  kFreshMemcpy,      // memcpy from a resident buffer into new memory
  kResidentMemcpy,   // memcpy between resident buffers
  kFlashload,        // the headline
  kFlashloadWarmed,  // flashload after WarmFreshMemory in its process (--warm-memory only)
  kMmapCopy,         // baseline: the safetensors way
  kBufferedRead,     // baseline: one-thread read()
};

struct BenchMethodPlan {
  BenchMethodKind kind;
  std::string name;     // the table's label
  std::string role;     // "limit", "reference", "flashload", "warmed" or "baseline"
  std::string limit;    // for limits and references: "storage", "fresh-memory", "device" or ""
  bool warmed = false;  // fresh memory is touched in the run's process before its clock
};

struct BenchPhaseSetup {
  bool cold = true;
  bool fio = true;       // fio runs here (else flashload's own O_DIRECT read is the storage limit)
  bool gpu = false;      // --device cuda
  uint32_t threads = 2;  // threads of the memory limits: as many as cores
};

// The methods of one phase, in their first round's order.
std::vector<BenchMethodPlan> PlanBenchPhase(const BenchArgs& args, const BenchPhaseSetup& setup);

// The limit a phase's headline fraction is taken against, from the medians of its limits (GB/s;
// 0 when not measured). Host loads: cold, min(storage, fresh-memory supply); hot, the fresh-memory
// supply (a loader writes into new memory); the supply is the better of 4 KiB and huge pages. GPU
// loads: cold, storage; hot, pinned host-to-device.
struct BenchLimit {
  double gbps = 0;
  std::string name;  // what bounds it, e.g. "fresh memory (MADV_HUGEPAGE)"
  double storage_gbps = 0;
  double fresh_memory_gbps = 0;
  std::string fresh_memory_pages;  // "4 KiB" or "MADV_HUGEPAGE": the better of the two
};
struct BenchLimitInputs {
  double storage = 0, fresh_small = 0, fresh_huge = 0, device = 0;
};
BenchLimit HeadlineLimit(bool cold, bool gpu, const BenchLimitInputs& medians);

void AddBenchOptions(CLI::App& app, BenchArgs& args);
void AddGenOptions(CLI::App& app, GenArgs& args);
void AddDemoOptions(CLI::App& app, DemoArgs& args);
int RunBench(const BenchArgs& args);
int RunGen(const GenArgs& args);
int RunDemo(const DemoArgs& args);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_BENCH_H_
