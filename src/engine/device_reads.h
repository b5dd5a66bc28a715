// Device reads: which files of a GPU load are read with GPUDirect Storage (cuFile, straight from
// storage into device memory) and which go through pinned staging, and why.
//
// A file is read directly only when all of these hold; otherwise it is staged, and the first
// reason that failed goes into its FileReport:
// - the load allows it (LoadOptions::gpu_direct is not kOff);
// - cuFile is really direct (CuFileDriver::direct(): not compatibility mode);
// - the file is local, and read from storage: with kAuto, its strategy is direct (cold: a file
//   mostly in the page cache is staged from memory, faster than reading storage again; network
//   file systems keep their own strategy); with kOn any local non-network file;
// - every tensor converted on the way starts at a multiple of its element size (device reads
//   start at multiples of 4096 and never cut an element; the host-side assembly of cut elements
//   needs staged bytes);
// - cuFile registers the file (cuFileHandleRegister on an O_DIRECT descriptor).
// For a chosen file the source is replaced by a CuFileSource, the chunks are re-cut to the
// source's preferred size, and FilePlan::device_reads is set.
//
// Thread-safety: SetUpDeviceReads runs on the loading thread, before the engine. Lifetime: the
// CuFileBuffers returned must be cleared after the sources are closed and before the device
// scratch they register is freed.
#ifndef FLASHLOAD_ENGINE_DEVICE_READS_H_
#define FLASHLOAD_ENGINE_DEVICE_READS_H_

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "engine/strategy.h"
#include "flashload/convert.h"
#include "flashload/load_options.h"
#include "flashload/source.h"
#include "io/cufile.h"
#include "plan/plan.h"
#include "sink/copy_engine.h"

namespace flashload::engine {

struct DeviceReadOptions {
  GpuDirect mode = GpuDirect::kAuto;
  ConvertSpec convert;
  uint32_t threads = defaults::kDeviceReadThreads;         // cuFileRead calls in flight per file
  uint64_t chunk_bytes = defaults::kDeviceReadChunkBytes;  // bytes per cuFileRead (of 4096)
};

struct DeviceReadChoice {
  uint32_t direct_files = 0;
  // The destinations to register for the direct files' reads (after the sink's Prepare; cleared
  // before the scratch goes); null when no file is read directly.
  std::shared_ptr<CuFileBuffers> buffers;
};

// The cuFile driver, opened only when a file gets past every other check (opening it costs time
// and threads): CuFileDriver::Shared in loads, a stand-in library in tests.
using CuFileDriverFn = std::function<std::shared_ptr<CuFileDriver>()>;

// Chooses per file (see above) and says why in files[i].device_reads; for each file read
// directly, replaces files[i].source, sets its queue depth and re-chunks plan.files[i]. Errors:
// only those that would fail a staged read too (the file vanished: kNotFound).
Result<DeviceReadChoice> SetUpDeviceReads(const CuFileDriverFn& open_driver,
                                          std::shared_ptr<sink::CopyEngine> copy_engine,
                                          const DeviceReadOptions& options, plan::LoadPlan& plan,
                                          std::span<FileRead> files);

}  // namespace flashload::engine

#endif  // FLASHLOAD_ENGINE_DEVICE_READS_H_
