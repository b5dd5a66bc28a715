// Loader: loads a model (file, sharded checkpoint, diffusers folder) into memory as fast as the
// storage allows.
//
// Usage:
//   flashload::LoadOptions opts;                       // defaults need no tuning
//   auto model = flashload::Load("/models/sd15", opts); // Result<LoadedModel>
//   const flashload::Tensor& t = model->tensors.at("unet/conv_in.weight");
//
// Errors: the first failure cancels every read in flight, frees everything allocated for the load,
// and is returned naming the file, tensor and byte offset. No partial model is ever returned.
//
// Lifetime: every Tensor owns (shares) its memory: it stays valid after the LoadedModel that held
// it is gone, and nothing overwrites it.
//
// Thread-safety: Load() may run concurrently with other Load() calls. The progress callback is
// called from an engine thread, serially.
//
// Memory: the output (one host arena per file) plus at most `memory_budget` bytes of reads in
// flight and staging. GPU loads: the model's bytes (after conversion) in one device allocation,
// plus at most `memory_budget` of device scratch when converting; host memory is the pinned
// staging only.
#ifndef FLASHLOAD_LOADER_H_
#define FLASHLOAD_LOADER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "flashload/header.h"
#include "flashload/load_options.h"
#include "flashload/model.h"
#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "flashload/status.h"
#include "flashload/tensor.h"

namespace flashload {

// "cpu", "cuda" (device 0) or "cuda:N". kInvalidArgument naming the text otherwise.
Result<Device> ParseDevice(std::string_view text);
// "cpu" or "cuda:N".
std::string DeviceString(Device device);

// Memory kept for the next load of the process: GPU loads keep their pinned staging memory (up to
// 1 GiB), so loading shard after shard pins it once; host tensor memory freed by an earlier load
// is kept populated (up to FLASHLOAD_CACHED_MEMORY_MIB, default 2048), so the next load does not
// pay the first touch of fresh pages again. Frees everything kept; returns the bytes freed.
// Thread-safe.
uint64_t ReleaseCachedMemory();

// What happened, per file and in total.
struct FileReport {
  std::string path;  // as RedactUrl() shows it: a URL without its credentials
  std::string component;
  std::string strategy;  // what was used, e.g. "direct (io_uring)"
  std::string reason;    // why, e.g. "3% resident in page cache"
  double resident_fraction = 0;
  uint64_t bytes = 0;  // bytes of the file's data read (with a selection: the ranges read)
  uint32_t tensors = 0;
  // Stored bytes of the tensors (or parts) loaded from the file: `bytes` without the gaps a
  // partial load read between them.
  uint64_t selected_bytes = 0;
  uint32_t ranges = 0;  // byte ranges read
  // Parts made of several runs of bytes (a column slice of a row-major matrix), and of those the
  // ones read whole from their first to their last run (the rows covering them) because the gaps
  // cost less to read than to skip, with the bytes that took.
  uint32_t strided_parts = 0;
  uint32_t strided_parts_covered = 0;
  uint64_t strided_covered_bytes = 0;
  double seconds = 0;
  uint32_t tensors_converted = 0;  // tensors whose dtype changed on the way
  uint64_t bytes_converted = 0;    // their stored bytes
  uint64_t output_bytes = 0;       // the file's tensors as loaded (after conversion)
  // GPU loads: how the file reached the device, and why GPUDirect Storage was or was not used.
  std::string gpu_direct_storage;
};

struct LoadReport {
  std::vector<FileReport> files;
  uint64_t bytes = 0;           // bytes of data read
  uint64_t selected_bytes = 0;  // stored bytes of the tensors (or parts) loaded
  double seconds = 0;           // wall time of the whole load, headers included
  double header_seconds = 0;
  // Staged loads (GPU, conversion), both included in `seconds`: opening the copy engine (for a
  // GPU: the CUDA context when the process had none yet, and its streams), and allocating the
  // model's memory and the pinned staging.
  double copy_engine_seconds = 0;
  double allocation_seconds = 0;
  std::string device;       // where the tensors are: "cpu", "cuda:0"
  std::string copy_engine;  // what moved them there when staged ("" when reads landed in place)
  uint32_t tensors_converted = 0;
  uint64_t bytes_converted = 0;    // stored bytes of the converted tensors
  uint64_t output_bytes = 0;       // bytes of all tensors as loaded
  uint64_t staging_bytes = 0;      // pinned staging buffers used
  uint64_t peak_device_bytes = 0;  // GPU loads: most device memory held at once (tensors+scratch)
  // Host loads: how the tensors' fresh memory was supplied. `page_size` says which page size the
  // process uses and why (measured once per process); bytes reused from memory an earlier load of
  // the process freed (already populated), populated by worker threads ahead of the reads, and
  // populated by a read that got ahead of them.
  std::string page_size;
  uint64_t memory_reused_bytes = 0;
  uint64_t memory_populated_ahead = 0;
  uint64_t memory_populated_on_demand = 0;
  double GbPerSecond() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
};

struct LoadedModel {
  ModelLayout layout;
  // Every tensor by name; in a diffusers folder names are "<component>/<tensor>".
  TensorMap tensors;
  // The header of each file, by path.
  std::map<std::string, Header> headers;
  LoadReport report;
};

// Loads `path` (file, folder, index or diffusers folder).
Result<LoadedModel> Load(const std::string& path, const LoadOptions& options = {});

// The plan `Load(path, options)` would execute — files, byte ranges, chunks, strategy per file —
// without reading any tensor data (`flashload load --dry-run`).
Result<std::string> DescribeLoadPlan(const std::string& path, const LoadOptions& options = {});

// Resolves a path or URI into its files: local paths as ResolveModel(); an s3:// prefix lists its
// objects; an http(s):// URL names one file or index.
Result<ModelLayout> ResolveModelAt(const std::string& path_or_uri,
                                   const ResolveOptions& options = {},
                                   const RemoteOpenOptions& remote = {});

// Reads and validates the header of one file (a path or URI), without reading its data.
Result<Header> ReadHeader(const std::string& path, const ParseOptions& options = {},
                          const RemoteOpenOptions& remote = {});
// The same through an open source (any backend; direct-I/O alignment is handled).
Result<Header> ReadHeaderFrom(const Source& source, const ParseOptions& options = {});

}  // namespace flashload

#endif  // FLASHLOAD_LOADER_H_
