// The usual ways of reading a model, and the hardware limits, for `flashload bench` to measure side
// by side with flashload's loader (see BENCHMARKING.md).
//
// Baselines (what users do today):
// - MmapCopyBaseline: the safetensors way. mmap each file (no madvise hints), parse the header, and
//   for each tensor allocate a fresh buffer and memcpy from the mapping, single-threaded, so the
//   kernel faults pages in as the copy touches them.
// - BufferedReadBaseline: one thread, one buffer of the file's size, plain read() until EOF.
// Limits (what the hardware allows, measured on the same files):
// - FioLimit: fio, O_DIRECT + io_uring, 1 MiB blocks, best of a few queue depths per file.
// - DirectReadLimit: the same measured by flashload itself (threads issuing O_DIRECT preads), for
//   machines without fio.
// - MemcpyLimit: multi-threaded memcpy between resident buffers: the hot page cache limit.
// - FreshMemcpyLimit / FreshTouchLimit: memcpy into, or first touch of, new memory: what any loader
//   pays to get memory for its tensors (the fresh-memory supply).
//
// Errors: open, read and mmap failures come back as Status naming the file (and byte offset);
// nothing is retried. Every function frees what it allocated before returning, and keeps the
// compiler from eliding the copies. None of them evicts the page cache: the caller makes runs cold (io/page_cache.h) and
// reports residency. Functions run one at a time in the calling thread (plus their own workers).
#ifndef FLASHLOAD_CLI_BASELINES_H_
#define FLASHLOAD_CLI_BASELINES_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flashload/status.h"

namespace flashload::cli {

struct BaselineResult {
  std::string name;    // "mmap+copy", "read", "direct", "fio", "memcpy"
  std::string detail;  // how it ran, e.g. "fio io_uring bs=1M iodepth=32"
  uint64_t bytes = 0;  // bytes delivered: tensor data (mmap+copy) or whole files (the others)
  double seconds = 0;  // wall time of the timed part (open to last byte; verification excluded)
  // Peak resident set growth during the run (bytes), -1 when the kernel cannot tell.
  int64_t peak_rss_delta = -1;
  // With verify: XXH3-64 of the bytes delivered, files in order, each file's bytes in file order
  // (mmap+copy: each file's data section; read/direct: whole files).
  std::optional<uint64_t> checksum;
  double GbPerSecond() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
};

struct BaselineOptions {
  bool verify = false;  // compute `checksum` after the timed part (tests)
};

Result<BaselineResult> MmapCopyBaseline(std::span<const std::string> files,
                                        const BaselineOptions& options = {});
Result<BaselineResult> BufferedReadBaseline(std::span<const std::string> files,
                                            const BaselineOptions& options = {});

struct DirectReadOptions {
  std::vector<uint32_t> depths = {8, 32};  // reads in flight; the best depth is reported
  uint64_t block_bytes = 1 << 20;          // a multiple of 4096
  // Read each file into one buffer of its size (and checksum it) instead of discarding blocks.
  bool verify = false;
};
// kFailedPrecondition when a file's system refuses O_DIRECT (tmpfs, some FUSE).
Result<BaselineResult> DirectReadLimit(std::span<const std::string> files,
                                       const DirectReadOptions& options = {});

// Runs `fio --rw=read --direct=1 --ioengine=io_uring --bs=1M --iodepth=D --readonly` on each file
// for each depth and keeps each file's best bandwidth (bw_bytes); seconds = sum of size / best bw.
// kNotFound when fio is not installed; fio's own errors come back with its message.
inline constexpr uint32_t kFioDepths[] = {8, 32, 128};
Result<BaselineResult> FioLimit(std::span<const std::string> files,
                                std::span<const uint32_t> depths = kFioDepths);

// memcpy of `bytes` between resident buffers with `threads` threads, best of `repeats`. Buffers are
// at most `max_buffer` bytes each (copied repeatedly to total `bytes`), so a 5 GB model does not
// need 10 GB of memory; far larger than any cache, so the figure is the memory bandwidth.
Result<BaselineResult> MemcpyLimit(uint64_t bytes, uint32_t threads = 2, uint32_t repeats = 3,
                                   uint64_t max_buffer = 1ull << 30);

// Cold runs (BENCHMARKING.md: "cold means cold"). EvictFiles drops each file's cached pages
// (io/page_cache.h, best effort) and returns what stays resident; ResidentFractionOf measures it.
// Both are byte-weighted over the files (0..1), to report next to a cold figure.
Result<double> EvictFiles(std::span<const std::string> files);
Result<double> ResidentFractionOf(std::span<const std::string> files);

// The hot limit for producing new tensors: `threads` threads copy `bytes` from a resident buffer
// (at most `max_buffer`, reused) into a fresh anonymous mapping of `bytes` (huge pages requested,
// as the loader's arenas), so the page faults and zeroing any loader pays for new memory are
// included.
Result<BaselineResult> FreshMemcpyLimit(uint64_t bytes, uint32_t threads = 2,
                                        uint64_t max_buffer = 1ull << 30);

// How fresh anonymous memory is asked for: plain 4 KiB pages, or transparent huge pages requested
// with MADV_HUGEPAGE (as flashload's host arenas do; whether the kernel grants them depends on
// /sys/kernel/mm/transparent_hugepage).
enum class PageMode { kSmall, kHuge };

// The fresh-memory supply limit: maps `bytes` of new anonymous memory (`pages`) and writes one byte
// of every 4 KiB page with `threads` threads, which makes the kernel fault in and zero every page.
// seconds covers mapping and touching (unmapping excluded), so the figure is the rate at which a
// loader can get new memory to write tensors into, whatever the storage: on virtual machines whose
// host reclaims idle guest memory, or with huge-page compaction, it can be below the disk's rate.
// detail says how many threads and, for kHuge, how much of the mapping really was in huge pages.
// Measure it in a fresh process with nothing touched before (see bench.cc), as a user's load runs.
Result<BaselineResult> FreshTouchLimit(uint64_t bytes, uint32_t threads, PageMode pages);

// Maps, touches (every 4 KiB, `threads` threads) and unmaps `bytes` of fresh memory; returns the
// first-touch rate in GB/s. For benchmarking only (`bench --warm-memory`, `load
// --warm-memory-mib`): on virtual machines whose host reclaims idle guest memory, memory first
// touched after a pause costs several times more than memory reused soon after, so touching it
// right before a timed run hides a cost that every user's fresh process pays. Figures measured
// after it are "warmed" and never a headline.
Result<double> WarmFreshMemory(uint64_t bytes, uint32_t threads = 2);

// Peak RSS growth of this process from construction to PeakDeltaBytes(): resets the kernel's
// high-water mark (/proc/self/clear_refs) and reads VmHWM. For measuring flashload's own load the
// same way as the baselines. -1 when /proc does not allow it. Not meaningful with concurrent
// meters.
class PeakRssMeter {
 public:
  PeakRssMeter();
  int64_t PeakDeltaBytes() const;

 private:
  int64_t start_rss_ = -1;
};

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_BASELINES_H_
