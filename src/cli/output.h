// Output helpers of the CLI: JSON strings, human-readable sizes, peak RSS, a progress bar.
//
// Thread-safety: the functions are safe to call from any thread; ProgressBar is
// thread-compatible. Nothing here fails.
#ifndef FLASHLOAD_CLI_OUTPUT_H_
#define FLASHLOAD_CLI_OUTPUT_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload::cli {

// `s` as a JSON string literal, quotes included.
std::string JsonString(std::string_view s);
// "1.23 GB", "512.0 MB", "4.0 KB", "17 B" (decimal units, as storage vendors and fio report).
std::string HumanBytes(uint64_t bytes);
// Peak resident set size of this process, in bytes.
uint64_t PeakRssBytes();

// Writes host tensors as a safetensors file (atomically, as WriteSafetensors()).
Status SaveTensors(const std::string& path, const TensorMap& tensors);

// A one-line progress bar on stderr (bytes done and total, GB/s, ETA), shown only when stderr is
// a terminal, `quiet` is false, and the work has run for more than a second. Thread-compatible
// (callers serialize).
class ProgressBar {
 public:
  explicit ProgressBar(std::string label, bool quiet = false);
  ~ProgressBar();
  void Update(uint64_t done, uint64_t total);
  void Finish();

 private:
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool enabled_;
  bool drawn_ = false;
};

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_OUTPUT_H_
