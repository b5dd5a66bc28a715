// LoadOptions: how a load reads (strategy, queue depth, chunk size, memory budget), where the
// tensors land (host or a CUDA device, dtype conversion) and how the caller follows or stops it
// (progress, cancel). Defaults need no tuning; flashload/defaults.h holds them. The engine layer
// honours these options; Load() (flashload/loader.h) takes them.
//
// Thread-safety: plain values, copied by Load(); `progress` is called from an engine thread,
// serially; `cancel` may be set from any thread.
#ifndef FLASHLOAD_LOAD_OPTIONS_H_
#define FLASHLOAD_LOAD_OPTIONS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "flashload/defaults.h"
#include "flashload/header.h"
#include "flashload/registry.h"
#include "flashload/selection.h"
#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload {

enum class Strategy {
  kAuto,      // per file: buffered when mostly in the page cache, direct when cold
  kDirect,    // io_uring + O_DIRECT (falls back to a pread pool with O_DIRECT without io_uring)
  kBuffered,  // parallel buffered pread, one descriptor per worker
  kMmap,      // map and copy
  // Network file systems (FUSE, NFS, CIFS, 9p, Lustre): never maps; many workers, each with its own
  // descriptor, reading large contiguous ranges with sequential read-ahead.
  kNetwork,
  // Zero-copy for files in the page cache: tensors are copy-on-write views of a private mapping of
  // the file (as safetensors returns them); nothing is copied at load time, pages are mapped on
  // first access. The file must not be truncated while its tensors live.
  kMapped,
};
std::string_view StrategyName(Strategy s);
std::optional<Strategy> ParseStrategy(std::string_view name);

struct Progress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint32_t files_done = 0;
  uint32_t files_total = 0;
};

// GPUDirect Storage for GPU loads (cuFile, loaded at run time): whether a file may be read
// straight from storage into device memory instead of through pinned staging.
enum class GpuDirect {
  kAuto,  // cold local files, when cuFile is really direct (not compatibility mode)
  kOn,    // every local file cuFile accepts, even one in the page cache
  kOff,   // always pinned staging
};

// "auto", "on", "off". kInvalidArgument naming the text otherwise.
Result<GpuDirect> ParseGpuDirect(std::string_view text);

struct LoadOptions {
  Strategy strategy = Strategy::kAuto;  // auto picks kNetwork on network file systems
  uint32_t threads = 0;                 // pread workers (0: auto)
  uint32_t queue_depth = 0;             // reads in flight per file (0: the source's preference)
  uint64_t chunk_bytes = 0;             // bytes per read (0: the source's preference)
  // Bytes of reads in flight plus staging.
  uint64_t memory_budget = defaults::kMemoryBudget;
  // Files read at once (keeps storage busy across file boundaries).
  uint32_t parallel_files = defaults::kParallelFiles;
  uint64_t header_limit = kDefaultHeaderLimit;
  std::string variant;       // diffusers variant ("fp16")
  RemoteOpenOptions remote;  // http(s):// and s3:// sources (connections, TLS, S3 endpoint...)
  // auto: a local file entirely in the page cache is mapped (kMapped) instead of copied.
  bool zero_copy_hot = false;
  // Where the tensors land: host memory (default) or a CUDA device (see ParseDevice). A GPU load
  // stages reads in pinned memory (within memory_budget) and copies them into one device
  // allocation per model; kFailedPrecondition "no CUDA device: ..." without a usable GPU,
  // kUnimplemented when flashload was built without CUDA.
  Device device;
  // Dtype conversion on the way: a conversion spec (flashload/convert.h), e.g. "bf16" or
  // "F32=BF16,lm_head.*:keep"; empty keeps every stored dtype. kInvalidArgument when malformed.
  std::string dtype;
  // GPU loads: GPUDirect Storage (per file; every file it is not used for is staged, and its
  // FileReport says why).
  GpuDirect gpu_direct = GpuDirect::kAuto;
  // Which tensors to load, and which part of each (flashload/selection.h): only those bytes are
  // read, in ranges merged where a gap costs less than another request (LoadReport::bytes says
  // how many were read). Null: every tensor, whole.
  std::shared_ptr<const TensorSelection> selection;
  // Called about every 64 MiB and at the end; returning false cancels the load (kCancelled).
  std::function<bool(const Progress&)> progress;
  // Opens every source of the load (empty: OpenSource, through the built-in schemes). Wrap
  // OpenSource here to observe or inject faults into every read of a load.
  SourceOpener opener;
  // Set to true from any thread to cancel the load.
  const std::atomic<bool>* cancel = nullptr;
};

}  // namespace flashload

#endif  // FLASHLOAD_LOAD_OPTIONS_H_
