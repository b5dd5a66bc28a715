// GPUDirect Storage (cuFile), loaded at run time with dlopen: flashload has no link-time
// dependency on libcufile, and a machine without it loads through the pinned staging path.
//
// CuFileDriver loads the library, resolves the entry points flashload uses, opens the driver and
// decides whether reads are really direct: storage DMA into GPU memory through the nvidia-fs
// kernel driver. In compatibility mode (no nvidia-fs, or CUFILE_FORCE_COMPAT_MODE) cuFile reads
// through the page cache and copies, which flashload's own staging does better (deep queues,
// several streams, conversion on the way), so such a driver is reported as not direct and every
// file is staged, with the reason in its FileReport.
//
// CuFileSource is a Source whose reads land in DEVICE memory: each request's `dst` is a device
// address (a staging slot's device scratch), read with cuFileRead by a pool of worker threads
// bound to the target device by a callback the caller gives (the io layer knows no device API). Opening one registers the file (cuFileHandleRegister on an
// O_DIRECT descriptor); a refusal is returned as kFailedPrecondition with cuFile's reason, and the
// loader stages that file instead (per-file fallback).
//
// ABI: the few cuFile types used here are declared in cufile.cc with the layout of NVIDIA's
// cufile.h (a C API, stable across releases); no cuFile header is needed to build.
//
// The driver is opened once per process and never closed (cuFileDriverClose would pull the
// driver from under any other library of the process that uses cuFile).
//
// Thread-safety: CuFileDriver's members may be called from any thread; CuFileSource follows the
// Source contract; CuFileBuffers as described there.
#ifndef FLASHLOAD_IO_CUFILE_H_
#define FLASHLOAD_IO_CUFILE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flashload/registry.h"
#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload {

struct CuFileApi;

// Device buffers registered with cuFileBufRegister: reads into them DMA straight in, with no
// bounce buffer inside cuFile. Add() and Clear() must not run while reads into the buffers are in
// flight (register after the sink's Prepare, clear after the load's sources are gone and before
// the buffers are freed); Locate() may be called concurrently by readers.
class CuFileBuffers {
 public:
  explicit CuFileBuffers(std::shared_ptr<const CuFileApi> api) : api_(std::move(api)) {}
  ~CuFileBuffers() { Clear(); }
  CuFileBuffers(const CuFileBuffers&) = delete;
  CuFileBuffers& operator=(const CuFileBuffers&) = delete;

  // Registers [p, p + bytes). kFailedPrecondition with cuFile's reason when refused (reads into
  // the buffer still work, through cuFile's bounce buffers).
  Status Add(void* p, uint64_t bytes);
  // Deregisters every buffer.
  void Clear();
  // The registered buffer containing [p, p + bytes): its base and p's offset in it; {p, 0} when
  // none does.
  std::pair<void*, uint64_t> Locate(const void* p, uint64_t bytes) const;
  size_t count() const { return regions_.size(); }

 private:
  std::shared_ptr<const CuFileApi> api_;
  std::vector<std::pair<std::byte*, uint64_t>> regions_;  // sorted by address
};

// Binds the calling thread to the device the reads target (cudaSetDevice through the copy
// engine). Called by OpenSource() and once by each reader thread before its first read; an error
// fails that open or read.
using BindDeviceFn = std::function<Status()>;

struct CuFileSourceOptions {
  uint32_t threads = 8;                          // cuFileRead calls in flight
  uint64_t preferred_chunk = 16ull << 20;        // cuFile's default max_direct_io_size
  std::shared_ptr<const CuFileBuffers> buffers;  // registered destinations (may be null)
};

class CuFileDriver {
 public:
  static std::vector<std::string> DefaultLibraries() { return {"libcufile.so.0", "libcufile.so"}; }

  // Loads the first of `libraries` dlopen finds and opens the driver. Never fails: a driver that
  // cannot read directly says why in reason(). Each call opens the driver again (tests load
  // stand-in libraries); loads use Shared().
  static std::shared_ptr<CuFileDriver> Open(const std::vector<std::string>& libraries);
  // The process-wide driver, opened on first use with DefaultLibraries().
  static std::shared_ptr<CuFileDriver> Shared();

  ~CuFileDriver();
  CuFileDriver(const CuFileDriver&) = delete;
  CuFileDriver& operator=(const CuFileDriver&) = delete;

  // True when cuFileRead moves data by DMA from storage into GPU memory.
  bool direct() const { return direct_; }
  // How (when direct) or why not, for load reports.
  const std::string& reason() const { return reason_; }

  // Opens `path` with O_DIRECT and registers it with cuFile; reads run on threads bound by
  // `bind_device`. kFailedPrecondition with cuFile's reason when the driver is not direct or
  // the file cannot be registered (the caller stages the file); kNotFound etc. from open().
  Result<std::unique_ptr<Source>> OpenSource(const std::string& path, BindDeviceFn bind_device,
                                             const CuFileSourceOptions& options) const;

  // An empty set of registered buffers for reads of this driver (null when not direct).
  std::shared_ptr<CuFileBuffers> NewBuffers() const;

 private:
  CuFileDriver() = default;

  std::shared_ptr<const CuFileApi> api_;  // null when the library is not usable
  bool direct_ = false;
  std::string reason_;
};

}  // namespace flashload

#endif  // FLASHLOAD_IO_CUFILE_H_
