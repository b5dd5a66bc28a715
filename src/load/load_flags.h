// LoadFlags: the settings of a load as people name them — the `flashload` command line's flags
// (`--budget-mib 512`) and the Python module's keyword arguments (`budget_mib=512`) — and the one
// function that checks them and turns them into LoadOptions. The CLI (inspect, validate, load,
// bench) and the Python module fill a LoadFlags and call ParseLoadFlags(), so every front end
// accepts the same values, applies the same defaults (flashload/defaults.h) and refuses a bad value
// with the same message.
//
// Names: each field is named after its flag: field `budget_mib` is the flag `--budget-mib` and the
// keyword `budget_mib` (FlagName()). Sizes are whole MiB, as the flags take them.
//
// Defaults: a default-constructed LoadFlags is the default load; ParseLoadFlags(LoadFlags{}) equals
// LoadOptions{} in every field it sets. A zero means "the default" where a field says so (threads,
// queue depth, chunk, connections, range); elsewhere zero is refused.
//
// Thread-safety: LoadFlags is a plain value; ParseLoadFlags() and FlagName() are pure functions,
// safe to call from any thread.
//
// This header uses public headers only (the Python module includes it).
#ifndef FLASHLOAD_LOAD_LOAD_FLAGS_H_
#define FLASHLOAD_LOAD_LOAD_FLAGS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/defaults.h"
#include "flashload/header.h"
#include "flashload/load_options.h"
#include "flashload/status.h"

namespace flashload {

struct LoadFlags {
  // ---- how the files are read ----
  std::string strategy = "auto";  // auto, direct, buffered, mmap, network or mapped
  uint32_t threads = 0;           // pread workers (0: the strategy's choice)
  uint32_t queue_depth = 0;       // reads in flight per file (0: the source's preference)
  uint64_t chunk_mib = 0;         // MiB per read (0: the source's preference)
  uint64_t budget_mib = defaults::kMemoryBudget >> 20;  // reads in flight plus staging; at least 1
  uint32_t parallel_files = defaults::kParallelFiles;   // files read at once; at least 1
  bool zero_copy = false;  // strategy auto maps files entirely in the page cache

  // ---- the model ----
  uint64_t header_limit = kDefaultHeaderLimit;  // largest header accepted, in bytes; at least 1
  std::string variant;                          // diffusers variant ("fp16")

  // ---- where the tensors land ----
  std::string device = "cpu";  // cpu, cuda or cuda:N (ParseDevice)
  std::string dtype;           // conversion spec (ParseConvertSpec); empty keeps stored dtypes
  std::string gds = "auto";    // GPUDirect Storage: auto, on or off (ParseGpuDirect)

  // ---- remote objects: http://, https://, s3:// (RemoteOpenOptions) ----
  uint32_t connections = 0;  // ranged GETs in flight per object (0: defaults::kRemoteConnections)
  uint64_t range_mib = 0;    // MiB per ranged GET (0: defaults::kRemoteChunkBytes)
  std::string ca_bundle;     // PEM file of trusted certificate authorities (empty: the system's)
  bool verify_tls = true;
  // Extra request headers, "Name: value" each (the flag --header, once per header). Never shown in
  // a message: they may hold credentials.
  std::vector<std::string> headers;
  bool header_on_redirect = false;
  std::string endpoint;                              // S3 endpoint URL
  std::string region;                                // S3 region
  std::string addressing = "auto";                   // S3 addressing: auto, path or virtual
  bool anonymous = false;                            // S3: unsigned requests
  uint32_t attempts = defaults::kRemoteMaxAttempts;  // tries per range, the first included; >= 1
  uint32_t retry_base_ms = defaults::kRetryBaseMs;   // full-jitter backoff: base (>= 1) ...
  uint32_t retry_cap_ms = defaults::kRetryCapMs;     // ... and cap (>= retry_base_ms)
};

// How a message spells a flag: as the command line takes it ("--budget-mib") or as a Python
// keyword argument ("budget_mib").
enum class FlagStyle { kCommandLine, kKeyword };

// The flag `field` (a LoadFlags field name, e.g. "budget_mib") as `style` spells it.
std::string FlagName(std::string_view field, FlagStyle style);

// The largest MiB count a size flag accepts (its byte count must fit 64 bits).
inline constexpr uint64_t kMaxFlagMib = ~uint64_t{0} >> 20;

// Checks every field of `flags` and returns the LoadOptions they ask for (progress, cancel and
// opener left empty: they are the caller's). Sizes in MiB become bytes.
//
// Errors: kInvalidArgument for the first bad field, the message starting with the flag's name
// (FlagName(field, style)) and naming the value, e.g. "--budget-mib: 0 is out of range (expected 1
// to 17592186044415)", "strategy: unknown strategy 'warp' (expected ...)". A request header's
// message never shows the header (it may hold a credential).
Result<LoadOptions> ParseLoadFlags(const LoadFlags& flags,
                                   FlagStyle style = FlagStyle::kCommandLine);

}  // namespace flashload

#endif  // FLASHLOAD_LOAD_LOAD_FLAGS_H_
