// `flashload bench` and `flashload demo`: load a model cold and hot, beside its limit and the usual
// ways of reading it, interleaved and repeated (BENCHMARKING.md); and `flashload gen`.
#ifndef FLASHLOAD_CLI_BENCH_H_
#define FLASHLOAD_CLI_BENCH_H_

#include <cstdint>
#include <string>

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
  std::string strategy = "auto";
  uint64_t budget_mib = 256;
  std::string device = "cpu";  // cpu, cuda, cuda:N
  std::string dtype;           // conversion spec ("" keeps stored dtypes)
  std::string gds = "auto";    // GPUDirect Storage: auto, on, off
};

struct GenArgs {
  std::string kind;
  std::string out_dir;
  uint64_t seed = 1;
  uint64_t alignment = 8;
  bool force = false;
  std::string llm_shape;  // "hidden=...,layers=..." for kind llm
};

struct DemoArgs {
  std::string kind = "sd15";
  std::string dir;  // where to generate (default: a temporary folder under /var/tmp)
  int runs = 5;
  bool keep = false;
  bool json = false;
};

void AddBenchOptions(CLI::App& app, BenchArgs& args);
void AddGenOptions(CLI::App& app, GenArgs& args);
void AddDemoOptions(CLI::App& app, DemoArgs& args);
int RunBench(const BenchArgs& args);
int RunGen(const GenArgs& args);
int RunDemo(const DemoArgs& args);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_BENCH_H_
