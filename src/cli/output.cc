#include "cli/output.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

#include "flashload/writer.h"
#include "format/json_text.h"

namespace flashload::cli {

std::string JsonString(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  format_internal::AppendJsonString(out, s);
  return out;
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

uint64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

ProgressBar::ProgressBar(std::string label, bool quiet)
    : label_(std::move(label)),
      start_(std::chrono::steady_clock::now()),
      enabled_(!quiet && isatty(STDERR_FILENO) == 1) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (secs < 1.0) return;
  const double frac = total > 0 ? static_cast<double>(done) / total : 1.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  const double rate = done / secs;
  std::string eta = "--";
  if (rate > 0 && total >= done) {
    const uint64_t left = static_cast<uint64_t>((total - done) / rate);
    eta = left >= 3600 ? fmt::format("{}h{:02}m", left / 3600, left / 60 % 60)
                       : fmt::format("{}:{:02}", left / 60, left % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %5.1f%%  %s / %s  %.2f GB/s  ETA %s \033[K", label_.c_str(),
               bar.c_str(), frac * 100, HumanBytes(done).c_str(), HumanBytes(total).c_str(),
               rate / 1e9, eta.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

Status SaveTensors(const std::string& path, const TensorMap& tensors) {
  std::vector<TensorToWrite> out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    out.push_back(TensorToWrite{name, t.dtype(), t.shape(), t.bytes(), {}});
  }
  return WriteSafetensors(path, out);
}

}  // namespace flashload::cli
