// The thread-pool backend for local files: worker threads call pread(), each on its own descriptor
// (so per-descriptor state in FUSE/NFS clients, readahead included, follows one sequential stream).
//
// Caps: direct_io and alignment when opened with O_DIRECT; max_in_flight = threads.
// Submit() only queues; Reap() waits on a condition variable up to the deadline. ReadAt() runs on
// the caller's thread; with O_DIRECT, an unaligned ReadAt() goes through a buffered descriptor.
//
// Thread-safety: all methods, from any thread. Errors name the file and byte offset. Lifetime: the
// destructor drops the requests not yet started and joins the workers, so no read touches a
// buffer after it returns.
#ifndef FLASHLOAD_IO_PREAD_SOURCE_H_
#define FLASHLOAD_IO_PREAD_SOURCE_H_

#include <memory>
#include <string>

#include "flashload/registry.h"
#include "flashload/source.h"

namespace flashload {

// Opens `path` with options.threads workers (0: 2 × cores, at least 4) and options.direct.
// `fell_back_from_io_uring` only changes backend() ("pread+fallback"), so callers can tell.
Result<std::unique_ptr<Source>> OpenPreadSource(const std::string& path,
                                                const LocalOpenOptions& options,
                                                bool fell_back_from_io_uring = false);

}  // namespace flashload

#endif  // FLASHLOAD_IO_PREAD_SOURCE_H_
