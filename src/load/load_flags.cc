#include "load/load_flags.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "flashload/convert.h"
#include "flashload/loader.h"

namespace flashload {

namespace {

constexpr uint64_t kMaxU32 = std::numeric_limits<uint32_t>::max();

// Checks one flag's values; the first error is kept.
class FlagChecker {
 public:
  explicit FlagChecker(FlagStyle style) : style_(style) {}

  Status status() const { return status_; }
  std::string Name(std::string_view field) const { return FlagName(field, style_); }

  // `value` of flag `field` must lie in [least, most].
  void Range(std::string_view field, uint64_t value, uint64_t least, uint64_t most) {
    if (value < least || value > most) {
      Fail(field, fmt::format("{} is out of range (expected {} to {})", value, least, most));
    }
  }

  // `mib` of size flag `field` (at least `least`) in bytes.
  uint64_t Mib(std::string_view field, uint64_t mib, uint64_t least) {
    Range(field, mib, least, kMaxFlagMib);
    return std::min(mib, kMaxFlagMib) << 20;
  }

  // A library parser's result, its message prefixed with the flag's name.
  template <typename T>
  std::optional<T> Parsed(std::string_view field, Result<T> result) {
    if (result.ok()) return *std::move(result);
    Fail(field, result.status().message());
    return std::nullopt;
  }

  void Fail(std::string_view field, std::string_view what) {
    if (status_.ok()) {
      status_ = InvalidArgumentError(fmt::format("{}: {}", Name(field), what));
    }
  }

 private:
  FlagStyle style_;
  Status status_;
};

// S3 addressing: 1 path-style, 0 virtual-hosted, -1 auto (RemoteOpenOptions::path_style).
std::optional<int> ParseAddressing(std::string_view text) {
  if (text == "auto") return -1;
  if (text == "path") return 1;
  if (text == "virtual") return 0;
  return std::nullopt;
}

// Why request header `header` is refused (`flag`: the header flag's name), or empty. Never quotes
// the header.
std::string HeaderProblem(std::string_view header, std::string_view flag) {
  if (header.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return fmt::format(
        "a header holds a CR, LF or NUL byte, which would start another header line; give one "
        "header per {}, on one line",
        flag);
  }
  if (header.find(':') == std::string_view::npos) {
    return "expected 'Name: value' (the header is not shown: it may hold a credential)";
  }
  return {};
}

void ParseRemote(const LoadFlags& f, FlagChecker& check, RemoteOpenOptions& r) {
  r.connections = f.connections;
  r.chunk_bytes = check.Mib("range_mib", f.range_mib, 0);
  r.ca_bundle = f.ca_bundle;
  r.verify_tls = f.verify_tls;
  for (const std::string& h : f.headers) {
    const std::string problem = HeaderProblem(h, check.Name("header"));
    if (!problem.empty()) check.Fail("header", problem);
  }
  r.headers = f.headers;
  r.header_on_redirect = f.header_on_redirect;
  r.endpoint = f.endpoint;
  r.region = f.region;
  if (std::optional<int> style = ParseAddressing(f.addressing)) {
    r.path_style = *style;
  } else {
    check.Fail(
        "addressing",
        fmt::format("unknown S3 addressing '{}' (expected auto, path or virtual)", f.addressing));
  }
  r.anonymous = f.anonymous;
  check.Range("attempts", f.attempts, 1, kMaxU32);
  r.max_attempts = f.attempts;
  check.Range("retry_base_ms", f.retry_base_ms, 1, kMaxU32);
  r.retry_base_ms = f.retry_base_ms;
  check.Range("retry_cap_ms", f.retry_cap_ms, std::max<uint32_t>(f.retry_base_ms, 1), kMaxU32);
  r.retry_cap_ms = f.retry_cap_ms;
}

}  // namespace

std::string FlagName(std::string_view field, FlagStyle style) {
  std::string name(field);
  if (style == FlagStyle::kKeyword) return name;
  std::replace(name.begin(), name.end(), '_', '-');
  return "--" + name;
}

Result<LoadOptions> ParseLoadFlags(const LoadFlags& f, FlagStyle style) {
  FlagChecker check(style);
  LoadOptions o;
  if (std::optional<Strategy> s = ParseStrategy(f.strategy)) {
    o.strategy = *s;
  } else {
    check.Fail("strategy",
               fmt::format("unknown strategy '{}' (expected auto, direct, buffered, mmap, network "
                           "or mapped)",
                           f.strategy));
  }
  o.threads = f.threads;
  o.queue_depth = f.queue_depth;
  o.chunk_bytes = check.Mib("chunk_mib", f.chunk_mib, 0);
  o.memory_budget = check.Mib("budget_mib", f.budget_mib, 1);
  check.Range("parallel_files", f.parallel_files, 1, kMaxU32);
  o.parallel_files = f.parallel_files;
  o.zero_copy_hot = f.zero_copy;

  check.Range("header_limit", f.header_limit, 1, std::numeric_limits<uint64_t>::max());
  o.header_limit = f.header_limit;
  o.variant = f.variant;

  if (std::optional<Device> d = check.Parsed("device", ParseDevice(f.device))) o.device = *d;
  if (check.Parsed("dtype", ParseConvertSpec(f.dtype))) o.dtype = f.dtype;
  if (std::optional<GpuDirect> g = check.Parsed("gds", ParseGpuDirect(f.gds))) o.gpu_direct = *g;

  ParseRemote(f, check, o.remote);
  FL_RETURN_IF_ERROR(check.status());
  return o;
}

}  // namespace flashload
