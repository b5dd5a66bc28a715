#include "sink/host_memory.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <string_view>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace flashload::sink {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kHugePage = 2ull << 20;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::mutex& ChoiceMutex() {
  static std::mutex mu;
  return mu;
}
PageSizeChoice& Choice() {
  static PageSizeChoice choice;
  return choice;
}

// "always [madvise] never" -> the bracketed word.
std::string ThpMode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text;
  std::getline(in, text);
  const size_t open = text.find('[');
  const size_t close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  return text.substr(open + 1, close - open - 1);
}

}  // namespace

PageSizeChoice CurrentPageSizeChoice() {
  std::lock_guard lock(ChoiceMutex());
  return Choice();
}

void ResetPageSizeChoiceForTest() {
  std::lock_guard lock(ChoiceMutex());
  Choice() = PageSizeChoice{};
}

PageSize ChoosePageSize(double small_gbps, double huge_gbps) {
  // Huge pages only when clearly faster: each fault then zeroes 2 MiB, and a partly used huge page
  // holds memory a 4 KiB mapping would not.
  return huge_gbps > 1.2 * small_gbps ? PageSize::kHuge : PageSize::kSmall;
}

PageSizeTuner::PageSizeTuner(uint64_t steps) : PageSizeTuner(steps, true) {}

PageSizeTuner::PageSizeTuner(uint64_t steps, bool read_settings) {
  const PageSizeChoice previous = read_settings ? CurrentPageSizeChoice() : PageSizeChoice{};
  if (previous.page != PageSize::kUndecided) choice_ = previous.page;
  probing_ = steps >= kMinProbedSteps;
  if (!read_settings) return;
  if (const char* env = std::getenv("FLASHLOAD_HUGE_PAGES"); env != nullptr && *env != '\0') {
    const std::string_view v(env);
    if (v == "on" || v == "1") {
      fixed_ = true;
      choice_ = PageSize::kHuge;
      fixed_reason_ = "2 MiB pages (FLASHLOAD_HUGE_PAGES=on)";
    } else if (v == "off" || v == "0") {
      fixed_ = true;
      choice_ = PageSize::kSmall;
      fixed_reason_ = "4 KiB pages (FLASHLOAD_HUGE_PAGES=off)";
    }
  }
  if (!fixed_) {
    const std::string thp = ThpMode();
    if (thp == "never" || thp.empty()) {
      fixed_ = true;
      choice_ = PageSize::kSmall;
      fixed_reason_ = "4 KiB pages (transparent huge pages are off in this kernel)";
    }
  }
  if (fixed_) probing_ = false;
}

PageSize PageSizeTuner::ForStep(uint64_t ordinal) {
  std::lock_guard lock(mu_);
  if (probing_ && ordinal < 2) return ordinal == 0 ? PageSize::kSmall : PageSize::kHuge;
  return choice_;
}

void PageSizeTuner::Record(PageSize page, uint64_t bytes, double seconds) {
  if (page == PageSize::kUndecided || seconds <= 0) return;
  const double gbps = static_cast<double>(bytes) / seconds / 1e9;
  std::lock_guard lock(mu_);
  const int k = page == PageSize::kHuge ? 1 : 0;
  rate_[k] = measured_[k] ? 0.5 * rate_[k] + 0.5 * gbps : gbps;
  measured_[k] = true;
  if (fixed_ || !measured_[0] || !measured_[1]) return;
  if (probing_) {  // both probes are in: decide
    probing_ = false;
    choice_ = ChoosePageSize(rate_[0], rate_[1]);
    return;
  }
  const int chosen = choice_ == PageSize::kHuge ? 1 : 0;
  if (k == chosen && rate_[chosen] * 1.5 < rate_[1 - chosen]) {
    choice_ = chosen == 1 ? PageSize::kSmall : PageSize::kHuge;
    ++switches_;
  }
}

PageSizeChoice PageSizeTuner::Result() const {
  std::lock_guard lock(mu_);
  PageSizeChoice c;
  c.page = choice_;
  c.small_gbps = measured_[0] ? rate_[0] : 0;
  c.huge_gbps = measured_[1] ? rate_[1] : 0;
  c.switches = switches_;
  const std::string name = choice_ == PageSize::kHuge ? "2 MiB" : "4 KiB";
  if (fixed_) {
    c.reason = fixed_reason_;
  } else if (measured_[0] && measured_[1]) {
    c.reason = fmt::format(
        "{} pages (first touch measured while loading: 4 KiB {:.2f} GB/s, 2 MiB {:.2f} GB/s{})",
        name, c.small_gbps, c.huge_gbps,
        switches_ > 0 ? fmt::format("; switched {} times", switches_) : std::string());
  } else {
    c.reason =
        name + " pages (too little memory to measure: the previous load's choice, else 4 KiB)";
  }
  return c;
}

void PublishPageSizeChoice(const PageSizeChoice& c) {
  std::lock_guard lock(ChoiceMutex());
  Choice() = c;
}

void AdvisePageSize(std::byte* p, uint64_t len, PageSize page) {
  if (page == PageSize::kUndecided || p == nullptr) return;
  const uintptr_t begin = RoundUp(reinterpret_cast<uintptr_t>(p), kHugePage);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + len) / kHugePage * kHugePage;
  if (end <= begin) return;
  (void)madvise(reinterpret_cast<void*>(begin), end - begin,
                page == PageSize::kHuge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

bool PopulateForWrite(std::byte* p, uint64_t len) {
  static std::atomic<bool> have_populate{true};
  if (len == 0) return true;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / kPage * kPage;
  const uintptr_t end = RoundUp(reinterpret_cast<uintptr_t>(p) + len, kPage);
  if (have_populate.load(std::memory_order_relaxed)) {
    if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE) == 0) return true;
    if (errno != EINVAL) return false;
    have_populate = false;  // kernel < 5.14
  }
  // Touch one byte a page, writing back what is there: nothing was written to these pages yet
  // (MemoryPopulator's contract), and if it were, the value would be kept.
  for (uintptr_t q = begin; q < end; q += kPage) {
    volatile std::byte* b = reinterpret_cast<volatile std::byte*>(q);
    *b = *b;
  }
  return true;
}

// ---- MemoryPopulator ---------------------------------------------------------------------------

MemoryPopulator::MemoryPopulator(std::vector<Region> regions, uint32_t workers) {
  regions_.reserve(regions.size());
  for (const Region& r : regions) {
    auto s = std::make_unique<RegionState>();
    s->region = r;
    s->steps = r.data == nullptr ? 0 : (r.size + kStep - 1) / kStep;
    s->state = std::make_unique<std::atomic<uint8_t>[]>(s->steps);
    const size_t done = std::min<size_t>(r.populated / kStep, s->steps);
    for (size_t i = 0; i < s->steps; ++i) s->state[i].store(i < done ? kDone : kFree);
    s->next.store(done);
    regions_.push_back(std::move(s));
  }
  uint64_t steps = 0;
  for (const auto& r : regions_) steps += r->steps - r->next.load();
  tuner_ = std::make_unique<PageSizeTuner>(steps);
  for (uint32_t i = 0; i < workers; ++i) workers_.emplace_back([this] { Work(); });
}

MemoryPopulator::~MemoryPopulator() { Stop(); }

void MemoryPopulator::Stop() {
  stop_.store(true);
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
  if (claimed_.load() > 0 && !published_) {
    published_ = true;
    PublishPageSizeChoice(tuner_->Result());  // the next load starts from it
  }
}

bool MemoryPopulator::PopulateStep(RegionState& r, size_t step) {
  uint8_t expected = kFree;
  if (!r.state[step].compare_exchange_strong(expected, kBusy)) return false;
  const uint64_t off = step * kStep;
  const uint64_t len = std::min(kStep, r.region.size - off);
  const PageSize page = tuner_->ForStep(claimed_.fetch_add(1));
  if (r.advised.load(std::memory_order_relaxed) != page) AdviseRest(r, off, page);
  const auto start = std::chrono::steady_clock::now();
  (void)PopulateForWrite(r.region.data + off, len);
  tuner_->Record(page, len,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  r.state[step].store(kDone);
  r.state[step].notify_all();
  return true;
}

void MemoryPopulator::AdviseRest(RegionState& r, uint64_t offset, PageSize page) {
  std::lock_guard lock(r.advice_mu);
  const PageSize before = r.advised.load();
  if (before == page) return;
  r.advised.store(page);
  // Without advice a mapping gets 4 KiB pages, unless huge pages are always on: MADV_NOHUGEPAGE
  // is needed only then, or to undo an earlier MADV_HUGEPAGE.
  static const bool thp_always = ThpMode() == "always";
  if (page == PageSize::kSmall && before == PageSize::kUndecided && !thp_always) return;
  AdvisePageSize(r.region.data + offset, r.region.size - offset, page);
}

int MemoryPopulator::PickRegion() {
  int best = -1;
  int64_t best_lead = 0;
  int first_unclaimed = -1;
  for (size_t i = 0; i < regions_.size(); ++i) {
    RegionState& r = *regions_[i];
    const size_t next = r.next.load(std::memory_order_relaxed);
    if (next >= r.steps) continue;
    if (first_unclaimed < 0) first_unclaimed = static_cast<int>(i);
    if (!r.demanded.load(std::memory_order_relaxed)) continue;
    const int64_t lead =
        static_cast<int64_t>(next) - static_cast<int64_t>(r.demand.load(std::memory_order_relaxed));
    if (best < 0 || lead < best_lead) {
      best = static_cast<int>(i);
      best_lead = lead;
    }
  }
  return best >= 0 ? best : first_unclaimed;
}

void MemoryPopulator::Work() {
  while (!stop_.load(std::memory_order_relaxed)) {
    const int pick = PickRegion();
    if (pick < 0) return;
    RegionState& r = *regions_[pick];
    const size_t step = r.next.fetch_add(1);
    if (step >= r.steps) continue;
    if (PopulateStep(r, step)) {
      by_workers_.fetch_add(std::min(kStep, r.region.size - step * kStep),
                            std::memory_order_relaxed);
    }
  }
}

void MemoryPopulator::Ensure(size_t region, uint64_t offset, uint64_t length) {
  if (region >= regions_.size() || length == 0) return;
  RegionState& r = *regions_[region];
  if (r.steps == 0 || offset >= r.region.size) return;
  const size_t first = offset / kStep;
  const size_t last = std::min<size_t>((offset + length - 1) / kStep, r.steps - 1);
  size_t seen = r.demand.load(std::memory_order_relaxed);
  while (seen < last + 1 && !r.demand.compare_exchange_weak(seen, last + 1)) {
  }
  r.demanded.store(true, std::memory_order_relaxed);
  for (size_t s = first; s <= last; ++s) {
    if (r.state[s].load() == kDone) continue;
    if (PopulateStep(r, s)) {
      by_callers_.fetch_add(std::min(kStep, r.region.size - s * kStep), std::memory_order_relaxed);
      continue;
    }
    bool waited = false;
    for (uint8_t st = r.state[s].load(); st == kBusy; st = r.state[s].load()) {
      waited = true;
      r.state[s].wait(kBusy);
    }
    if (waited) waits_.fetch_add(1, std::memory_order_relaxed);
  }
}

// ---- the cache of host mappings ----------------------------------------------------------------

namespace {

struct MappingCache {
  std::mutex mu;
  std::multimap<uint64_t, std::byte*> blocks;  // mapped bytes -> mapping
  uint64_t bytes = 0;
  uint64_t limit = 0;
  MappingCache() {
    limit = 2048ull << 20;
    if (const char* env = std::getenv("FLASHLOAD_CACHED_MEMORY_MIB"); env != nullptr) {
      char* end = nullptr;
      const unsigned long long mib = std::strtoull(env, &end, 10);
      if (end != env && *end == '\0') limit = static_cast<uint64_t>(mib) << 20;
    }
  }
};

MappingCache& Cache() {
  static MappingCache* cache = new MappingCache();  // never destroyed: arenas may die at exit
  return *cache;
}

std::byte* MapFresh(uint64_t size) {
  // Over-map by a huge page and trim, so the mapping starts on a 2 MiB boundary (huge pages and the
  // page-size probe need it).
  const uint64_t over = size >= kHugePage ? size + kHugePage : size;
  void* p = mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  auto* base = static_cast<std::byte*>(p);
  if (over == size) return base;
  const uintptr_t aligned = RoundUp(reinterpret_cast<uintptr_t>(base), kHugePage);
  auto* start = reinterpret_cast<std::byte*>(aligned);
  if (start > base) munmap(base, static_cast<size_t>(start - base));
  const uint64_t tail = (base + over) - (start + size);
  if (tail > 0) munmap(start + size, tail);
  return start;
}

}  // namespace

CachedMapping TakeHostMapping(uint64_t size) {
  const uint64_t need = RoundUp(std::max<uint64_t>(size, 1), kPage);
  MappingCache& cache = Cache();
  {
    std::unique_lock lock(cache.mu);
    if (!cache.blocks.empty()) {
      auto it = cache.blocks.lower_bound(need);
      if (it == cache.blocks.end()) --it;  // the largest, smaller than needed: grown below
      const uint64_t mapped = it->first;
      std::byte* data = it->second;
      cache.blocks.erase(it);
      cache.bytes -= mapped;
      lock.unlock();
      if (mapped >= need) {
        if (mapped > need) munmap(data + need, mapped - need);
        return {data, need, need};
      }
      void* grown = mremap(data, mapped, need, MREMAP_MAYMOVE);
      if (grown != MAP_FAILED) return {static_cast<std::byte*>(grown), need, mapped};
      munmap(data, mapped);  // fall through to a fresh mapping
    }
  }
  std::byte* data = MapFresh(need);
  if (data == nullptr) return {};
  return {data, need, 0};
}

void GiveHostMapping(std::byte* data, uint64_t mapped) {
  if (data == nullptr || mapped == 0) return;
  MappingCache& cache = Cache();
  std::vector<std::pair<std::byte*, uint64_t>> unmap;
  {
    std::lock_guard lock(cache.mu);
    if (mapped > cache.limit) {
      unmap.emplace_back(data, mapped);
    } else {
      while (cache.bytes + mapped > cache.limit && !cache.blocks.empty()) {
        auto largest = std::prev(cache.blocks.end());
        unmap.emplace_back(largest->second, largest->first);
        cache.bytes -= largest->first;
        cache.blocks.erase(largest);
      }
      cache.blocks.emplace(mapped, data);
      cache.bytes += mapped;
    }
  }
  for (auto [p, n] : unmap) munmap(p, n);
}

uint64_t CachedHostMemoryBytes() {
  MappingCache& cache = Cache();
  std::lock_guard lock(cache.mu);
  return cache.bytes;
}

uint64_t TrimHostMemoryCache() {
  MappingCache& cache = Cache();
  std::multimap<uint64_t, std::byte*> blocks;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(cache.mu);
    blocks.swap(cache.blocks);
    bytes = cache.bytes;
    cache.bytes = 0;
  }
  for (auto& [n, p] : blocks) munmap(p, n);
  return bytes;
}

void SetHostMemoryCacheLimitForTest(uint64_t bytes) {
  MappingCache& cache = Cache();
  std::lock_guard lock(cache.mu);
  cache.limit = bytes;
}

}  // namespace flashload::sink
