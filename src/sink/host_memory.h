// Fresh host memory for tensors at the rate the machine can supply it.
//
// A load writes every byte of its output into memory the process has never touched. The kernel
// must fault in and zero each page first, and on virtual machines the host may have to back it
// too; on some machines that costs more than reading the disk. Three things keep it off the
// critical path:
//
// - Page size chosen by measurement, during every load (PageSizeTuner): transparent huge pages
//   make first touches cheaper on some machines and several times dearer on others (direct
//   compaction, a hypervisor that backs 4 KiB at a time, memory the host has just reclaimed). The
//   first two steps a load populates are one with 4 KiB pages and one with 2 MiB pages; the faster
//   wins, and the load switches when the winner's measured rate falls well below the other's.
//   FLASHLOAD_HUGE_PAGES=on|off forces it.
// - Population ahead of the reads (MemoryPopulator): worker threads populate the arenas
//   (MADV_POPULATE_WRITE) in the order the reads will need them, and the engine's Acquire() waits
//   only for the step it needs, or populates it itself when no worker has claimed it yet.
// - Reuse (TakeHostMapping/GiveHostMapping): arenas freed by an earlier load of the process keep
//   their populated pages in a bounded cache (FLASHLOAD_CACHED_MEMORY_MIB, default 2048; freed by
//   flashload::ReleaseCachedMemory()), so a process that loads model after model, or shard after
//   shard, pays the first touch once.
#ifndef FLASHLOAD_SINK_HOST_MEMORY_H_
#define FLASHLOAD_SINK_HOST_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace flashload::sink {

enum class PageSize { kUndecided, kSmall, kHuge };

// How fresh tensor memory was backed, and why.
struct PageSizeChoice {
  PageSize page = PageSize::kUndecided;
  double small_gbps = 0;  // last measured population rates (0: not measured)
  double huge_gbps = 0;
  uint32_t switches = 0;  // times a load changed its choice on new measurements
  std::string reason;
};

// The choice of the process's latest load that populated memory (kUndecided before). These three
// are thread-safe (one process-wide value under a lock).
PageSizeChoice CurrentPageSizeChoice();
void ResetPageSizeChoiceForTest();
void PublishPageSizeChoice(const PageSizeChoice& c);

// The rule: huge pages only when clearly faster.
PageSize ChoosePageSize(double small_gbps, double huge_gbps);

// Chooses the page size of each step a load populates, from rates measured while populating.
// Steps are numbered in the order they are claimed: step 0 is populated with 4 KiB pages and step
// 1 with 2 MiB pages (when the load has at least `kMinProbedSteps`); until both are measured the
// process's previous choice (or 4 KiB) is used; then the faster (ChoosePageSize), switching when
// the chosen kind's running rate falls below two thirds of the other kind's last rate.
// FLASHLOAD_HUGE_PAGES=on|off, or transparent huge pages off in the kernel, fix it. Thread-safe.
class PageSizeTuner {
 public:
  static constexpr uint64_t kMinProbedSteps = 8;
  explicit PageSizeTuner(uint64_t steps);
  PageSize ForStep(uint64_t ordinal);
  void Record(PageSize page, uint64_t bytes, double seconds);
  PageSizeChoice Result() const;
  // Test seam: no environment or kernel setting read.
  static PageSizeTuner ForTest(uint64_t steps) { return PageSizeTuner(steps, false); }

 private:
  PageSizeTuner(uint64_t steps, bool read_settings);
  mutable std::mutex mu_;
  bool fixed_ = false;
  bool probing_ = false;
  std::string fixed_reason_;
  PageSize choice_ = PageSize::kSmall;
  double rate_[2] = {0, 0};  // [small, huge]: latest (running) rates
  bool measured_[2] = {false, false};
  uint32_t switches_ = 0;
};

// MADV_HUGEPAGE (kHuge) or MADV_NOHUGEPAGE (kSmall) on the 2 MiB-aligned part of [p, p+len);
// kUndecided: nothing. Best effort.
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
// and the destructor join the workers (each finishes its current step); Stop() is called by one
// thread at a time. Lifetime: the regions' memory must outlive the populator. Ensure() of a region
// index out of range, or of a range starting past the region's end, does nothing.
class MemoryPopulator {
 public:
  struct Region {
    std::byte* data = nullptr;
    uint64_t size = 0;
    uint64_t populated = 0;  // bytes at the start already populated (reused or probed memory)
  };
  static constexpr uint64_t kStep = 4ull << 20;

  // Starts `workers` threads (0: none; every step is then populated by Ensure()). Each step's page
  // size comes from a PageSizeTuner over all the regions' steps.
  MemoryPopulator(std::vector<Region> regions, uint32_t workers);
  ~MemoryPopulator();
  MemoryPopulator(const MemoryPopulator&) = delete;
  MemoryPopulator& operator=(const MemoryPopulator&) = delete;

  void Ensure(size_t region, uint64_t offset, uint64_t length);
  void Stop();

  uint64_t populated_by_workers() const { return by_workers_.load(); }
  uint64_t populated_by_callers() const { return by_callers_.load(); }
  uint64_t waits() const { return waits_.load(); }
  PageSizeChoice page_size() const { return tuner_->Result(); }

 private:
  enum : uint8_t { kFree = 0, kBusy = 1, kDone = 2 };
  struct RegionState {
    Region region;
    size_t steps = 0;
    std::unique_ptr<std::atomic<uint8_t>[]> state;
    std::atomic<size_t> next{0};    // next step a worker tries to claim
    std::atomic<size_t> demand{0};  // one past the highest step Ensure() asked for
    std::atomic<bool> demanded{false};
    // The page size last advised for the rest of the region, from the step that changed it: advice
    // is given once per change of choice, for the whole rest of the region, not per step (madvise
    // takes the address-space lock for writing, stalling reads that pin pages and populates).
    std::mutex advice_mu;
    std::atomic<PageSize> advised{PageSize::kUndecided};
  };

  void Work();
  void AdviseRest(RegionState& r, uint64_t offset, PageSize page);
  // The region a worker should serve next, or -1 when every step has been claimed.
  int PickRegion();
  bool PopulateStep(RegionState& r, size_t step);

  std::vector<std::unique_ptr<RegionState>> regions_;
  std::unique_ptr<PageSizeTuner> tuner_;
  std::atomic<uint64_t> claimed_{0};  // steps claimed so far (the tuner's step ordinals)
  bool published_ = false;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> by_workers_{0};
  std::atomic<uint64_t> by_callers_{0};
  std::atomic<uint64_t> waits_{0};
};

// Anonymous memory kept between loads (see the file comment). TakeHostMapping() returns a mapping
// of exactly `size` bytes (rounded up to 4 KiB) and how many of its first bytes are already
// populated: from the cache when it holds one (the smallest large enough, trimmed; else the
// largest, grown with mremap), else a new mapping, which starts on a 2 MiB boundary when it has
// 2 MiB or more. A cached mapping counts as populated in full. GiveHostMapping() takes a mapping
// back into the cache, first unmapping the largest cached ones while the cache would exceed its
// bound (or the mapping itself when it alone does). Thread-safe: one process-wide cache under a
// lock, never destroyed (arenas may die at exit).
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
