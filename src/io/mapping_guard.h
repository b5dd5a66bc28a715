// MappingGuard: reads through a file mapping that survive the file being truncated underneath.
//
// Touching a page of a shared or private file mapping past the file's current end raises SIGBUS,
// which kills the process unless handled. GuardedCopy() and RunGuarded() run an access with a
// thread-local recovery point: a process-wide SIGBUS handler (installed once, on first use) jumps
// back to it and the call returns the faulting address instead of dying.
//
// Thread-safety: every function may be called from any thread, concurrently; each thread has its
// own recovery point. A SIGBUS outside a guarded call (another thread's fault, or one sent with
// kill()) goes to the handler that was installed before ours (or the default action: the process
// dies with SIGBUS, as it would have without flashload).
//
// What the guarded function may do: plain loads and stores (memcpy, hashing). It must not allocate,
// take locks or own objects with destructors: on a fault the function is abandoned mid-way
// (siglongjmp), so nothing after the faulting instruction runs.
#ifndef FLASHLOAD_IO_MAPPING_GUARD_H_
#define FLASHLOAD_IO_MAPPING_GUARD_H_

#include <cstddef>
#include <cstdint>

namespace flashload::io_internal {

// Runs fn(context). Returns nullptr when it finished, or the address whose access raised SIGBUS
// (fn was abandoned at that point). A call inside another guarded call runs under the outer one's
// recovery point (a fault abandons the outer call too).
const void* RunGuarded(void (*fn)(void* context), void* context);

// Copies `length` bytes from `src` (inside a file mapping) to `dst`, in order, in pieces. Returns
// the bytes copied: `length`, or on SIGBUS the bytes before the piece that faulted (every byte
// below that count is in place; bytes above it are unspecified). `*fault` (when not null) is set to
// the faulting address, or nullptr.
size_t GuardedCopy(std::byte* dst, const std::byte* src, size_t length,
                   const void** fault = nullptr);

}  // namespace flashload::io_internal

#endif  // FLASHLOAD_IO_MAPPING_GUARD_H_
