// Fresh host memory for tensors at the rate the machine can supply it.
//
// A load writes every byte of its output into memory the process has never touched. The kernel
// must fault in and zero each page first, and on virtual machines the host may have to back it
// too; on some machines that costs more than reading the disk. Three things keep it off the
// critical path:
//
// - Page size chosen by measurement, once per process (PageSizeChoice): transparent huge pages
//   make first touches cheaper on some machines and several times dearer on others (direct
//   compaction, a hypervisor that backs 4 KiB at a time). The first large arena of the process is
//   populated half with 4 KiB pages and half with 2 MiB pages, side by side, and the faster wins
//   for the rest of the process. FLASHLOAD_HUGE_PAGES=on|off forces it.
// - Population ahead of the reads (MemoryPopulator): worker threads populate the arenas
//   (MADV_POPULATE_WRITE) in the order the reads will need them, and the engine's Acquire() waits
//   only for the step it needs, or populates it itself when no worker has claimed it yet.
// - Reuse (ArenaCache): arenas freed by an earlier load of the process keep their populated pages
//   in a bounded cache (FLASHLOAD_CACHED_MEMORY_MIB, default 2048; freed by
//   flashload::ReleaseCachedMemory()), so a process that loads model after model, or shard after
//   shard, pays the first touch once.
#ifndef FLASHLOAD_SINK_HOST_MEMORY_H_
#define FLASHLOAD_SINK_HOST_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace flashload::sink {

enum class PageSize { kUndecided, kSmall, kHuge };

// How the process backs fresh tensor memory, and why.
struct PageSizeChoice {
  PageSize page = PageSize::kUndecided;
  double small_gbps = 0;  // measured population rates of the probe (0: not measured)
  double huge_gbps = 0;
  std::string reason;
};

// The current choice (kUndecided before the first large load). Thread-safe.
PageSizeChoice CurrentPageSizeChoice();

// Decides the process's page size once, measuring on `probe` (writable, not yet touched, 2 MiB
// aligned, at least 2 × kPageProbeBytes): its first half with 4 KiB pages, its second half with
// 2 MiB pages, on two threads at once (one after the other with one core). Later calls return the
// decision without touching `probe`. Returns the bytes of `probe` that were populated (0 when no
// probe ran). Thread-safe.
inline constexpr uint64_t kPageProbeBytes = 32ull << 20;
uint64_t DecidePageSize(std::byte* probe, uint64_t size);

// Test seams: forget the decision; or decide from given rates (the rule DecidePageSize applies).
void ResetPageSizeChoiceForTest();
PageSize ChoosePageSize(double small_gbps, double huge_gbps);

// MADV_HUGEPAGE / MADV_NOHUGEPAGE on the 2 MiB-aligned part of [p, p+len) for `page`
// (kUndecided: no advice). Best effort.
void AdvisePageSize(std::byte* p, uint64_t len, PageSize page);

// Populates [p, p+len) for writing without changing bytes already there (MADV_POPULATE_WRITE;
// kernels before 5.14 fall back to touching one byte a page, which the caller's ordering makes
// safe: see MemoryPopulator). Returns false only when the memory cannot be populated at all.
bool PopulateForWrite(std::byte* p, uint64_t len);

// Populates regions of fresh memory with worker threads, in step order, ahead of the reads.
//
// Contract: every byte a caller writes into a region must first be covered by Ensure(); then no
// population ever runs on a page after data was written to it (a population that would is already
// done by then), so falling back to touching pages is safe. Ensure() returns once every step
// overlapping the range is populated: steps no worker has claimed are populated by the caller
// itself, steps a worker is populating are waited for. Workers serve the regions whose reads are
// closest to catching up with population first (the engine reads several files at once).
//
// Thread-safety: Ensure() may be called concurrently from any thread, also after Stop(). Stop()
// and the destructor join the workers (each finishes its current step). Regions must outlive the
// populator.
class MemoryPopulator {
 public:
  struct Region {
    std::byte* data = nullptr;
    uint64_t size = 0;
    uint64_t populated = 0;  // bytes at the start already populated (reused or probed memory)
  };
  static constexpr uint64_t kStep = 4ull << 20;

  // Starts `workers` threads (0: none; every step is then populated by Ensure()).
  MemoryPopulator(std::vector<Region> regions, uint32_t workers);
  ~MemoryPopulator();
  MemoryPopulator(const MemoryPopulator&) = delete;
  MemoryPopulator& operator=(const MemoryPopulator&) = delete;

  void Ensure(size_t region, uint64_t offset, uint64_t length);
  void Stop();

  uint64_t populated_by_workers() const { return by_workers_.load(); }
  uint64_t populated_by_callers() const { return by_callers_.load(); }
  uint64_t waits() const { return waits_.load(); }

 private:
  enum : uint8_t { kFree = 0, kBusy = 1, kDone = 2 };
  struct RegionState {
    Region region;
    size_t steps = 0;
    std::unique_ptr<std::atomic<uint8_t>[]> state;
    std::atomic<size_t> next{0};    // next step a worker tries to claim
    std::atomic<size_t> demand{0};  // one past the highest step Ensure() asked for
    std::atomic<bool> demanded{false};
  };

  void Work();
  // The region a worker should serve next, or -1 when every step has been claimed.
  int PickRegion();
  bool PopulateStep(RegionState& r, size_t step);

  std::vector<std::unique_ptr<RegionState>> regions_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> by_workers_{0};
  std::atomic<uint64_t> by_callers_{0};
  std::atomic<uint64_t> waits_{0};
};

// Anonymous, 2 MiB-aligned memory kept between loads (see the file comment). Take() returns a
// mapping of exactly `size` bytes (rounded up to 4 KiB) and how many of its first bytes are
// already populated, from the cache when it holds one (trimmed, or grown with mremap), else a new
// mapping. Give() returns a mapping to the cache, or unmaps it when the cache would exceed its
// bound. Thread-safe.
struct CachedMapping {
  std::byte* data = nullptr;
  uint64_t mapped = 0;     // bytes mapped (multiple of 4 KiB)
  uint64_t populated = 0;  // bytes at the start already populated
};
CachedMapping TakeHostMapping(uint64_t size);  // data == nullptr: out of memory (errno set)
void GiveHostMapping(std::byte* data, uint64_t mapped);
uint64_t CachedHostMemoryBytes();
uint64_t TrimHostMemoryCache();  // frees every cached mapping; returns the bytes freed
void SetHostMemoryCacheLimitForTest(uint64_t bytes);

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_HOST_MEMORY_H_
