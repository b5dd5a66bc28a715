// The io_uring backend for local files (liburing), buffered or O_DIRECT.
//
// Caps: max_in_flight = the ring's queue depth (options.queue_depth, 0: kUringQueueDepth); with
// options.direct,
// direct_io and alignment = what the file's device needs (statx DIOALIGN, else the logical block
// size, else 4096). Submit() accepts any number of requests: beyond the queue depth they wait in a
// queue and enter the ring as earlier ones complete (inside Reap()). Submit() and Cancel() may race
// with one thread in Reap(); several Reap() callers are serialized. ReadAt() is a plain pread() on
// the caller's thread (through a buffered descriptor when a direct source gets an unaligned call).
//
// Thread-safety: all methods, from any thread, as above. Errors name the file and byte offset
// (ErrnoToStatus); kUnimplemented from the open when the kernel refuses io_uring (the registry's
// file backend then falls back to the thread pool). Lifetime: the destructor cancels and waits for
// the requests in the ring.
#ifndef FLASHLOAD_IO_URING_SOURCE_H_
#define FLASHLOAD_IO_URING_SOURCE_H_

#include <memory>
#include <string>

#include "flashload/registry.h"
#include "flashload/source.h"

namespace flashload {

// Opens `path` for io_uring reads. File errors come back as from any local backend. When the kernel
// refuses io_uring (ENOSYS, EPERM from kernel.io_uring_disabled or seccomp, a kernel older
// than 5.11 without IORING_FEAT_EXT_ARG) or the environment sets FLASHLOAD_DISABLE_IO_URING=1,
// returns kUnimplemented saying why; OpenLocalFile() then falls back to the thread pool.
Result<std::unique_ptr<Source>> OpenUringSource(const std::string& path,
                                                const LocalOpenOptions& options);

// Knobs that are not part of LocalOpenOptions (tests use them to reach rare paths cheaply).
struct UringTuning {
  // The most bytes one SQE reads; a larger request completes in several pieces. Rounded down to the
  // direct-I/O alignment. The kernel caps one read near 2 GiB anyway.
  uint64_t max_bytes_per_sqe = uint64_t{1} << 30;
};
Result<std::unique_ptr<Source>> OpenUringSource(const std::string& path,
                                                const LocalOpenOptions& options,
                                                const UringTuning& tuning);

}  // namespace flashload

#endif  // FLASHLOAD_IO_URING_SOURCE_H_
