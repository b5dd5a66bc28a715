#include "engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "engine/staging_budget.h"

namespace flashload::engine {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kReapSlice = std::chrono::milliseconds(50);

// State shared by the drivers of one run.
class RunState {
 public:
  RunState(const plan::LoadPlan& plan, const EngineOptions& options)
      : plan_(plan), options_(options), budget_(std::max<uint64_t>(options.memory_budget, 1)) {
    // Bytes that will be read: each file's ranges, up to its end.
    for (const plan::FilePlan& f : plan.files) {
      if (!f.chunks.empty()) total_bytes_ += f.bytes_to_read();
    }
  }

  bool stopping() const {
    return stop_.load(std::memory_order_relaxed) ||
           (options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed));
  }

  void Fail(Status s) {
    {
      std::lock_guard lock(mu_);
      if (first_error_.ok()) first_error_ = std::move(s);
    }
    stop_.store(true);
    budget_.Cancel();
  }

  Status result() {
    std::lock_guard lock(mu_);
    if (!first_error_.ok()) return first_error_;
    if (options_.cancel != nullptr && options_.cancel->load()) {
      return CancelledError("load cancelled");
    }
    return Status();
  }

  void AddProgress(uint64_t bytes, bool file_done) {
    const uint64_t done = bytes_done_.fetch_add(bytes) + bytes;
    if (file_done) files_done_.fetch_add(1);
    if (!options_.progress) return;
    std::lock_guard lock(progress_mu_);
    if (!file_done && done - last_reported_ < options_.progress_interval_bytes) return;
    last_reported_ = done;
    Progress p{done, total_bytes_, files_done_.load(), static_cast<uint32_t>(plan_.files.size())};
    if (!options_.progress(p)) Fail(CancelledError("load cancelled by the progress callback"));
  }

  StagingBudget& budget() { return budget_; }
  uint32_t NextFile() { return next_file_.fetch_add(1); }

 private:
  const plan::LoadPlan& plan_;
  const EngineOptions& options_;
  StagingBudget budget_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  Status first_error_;
  std::atomic<uint64_t> bytes_done_{0};
  std::atomic<uint32_t> files_done_{0};
  std::atomic<uint32_t> next_file_{0};
  std::mutex progress_mu_;
  uint64_t last_reported_ = 0;
  uint64_t total_bytes_ = 0;
};

// One chunk in flight.
struct Slot {
  const plan::Chunk* chunk = nullptr;
  std::span<std::byte> dst;  // the whole chunk's memory
  uint64_t done = 0;         // bytes of the chunk already in place
  uint32_t retries = 0;
  bool busy = false;
};

std::string DescribeOffset(const plan::FilePlan& file, uint64_t offset) {
  const TensorInfo* t = plan::TensorAtFileOffset(file, offset);
  if (t == nullptr) return fmt::format("{} at byte offset {}", file.path, offset);
  return fmt::format("{} at byte offset {} (tensor '{}', data bytes [{}, {}) of the file)",
                     file.path, offset, t->name, file.header.data_offset() + t->data_begin,
                     file.header.data_offset() + t->data_end);
}

class FileDriver {
 public:
  FileDriver(uint32_t index, const plan::FilePlan& file, Source& source, sink::Sink& sink,
             RunState& run, const EngineOptions& options, uint32_t queue_depth)
      : index_(index),
        file_(file),
        source_(source),
        sink_(sink),
        run_(run),
        options_(options),
        slots_(std::max<uint32_t>(queue_depth, 1)) {}

  // Reads the whole file; failures go to run_.Fail().
  FileTiming Run() {
    const auto start = Clock::now();
    uint64_t useful = 0;
    std::vector<ReadRequest> batch;
    std::vector<ReadResult> results(slots_.size());
    size_t next = 0;
    bool cancelled_source = false;
    while (true) {
      if (run_.stopping() && !cancelled_source) {
        source_.Cancel();
        cancelled_source = true;
      }
      batch.clear();
      while (!run_.stopping() && next < file_.chunks.size()) {
        Slot* slot = FreeSlot();
        if (slot == nullptr) break;
        const plan::Chunk& c = file_.chunks[next];
        if (!run_.budget().TryAcquire(c.length)) {
          if (in_flight_ > 0 || !batch.empty()) break;
          if (!run_.budget().Acquire(c.length)) break;  // cancelled
        }
        Result<std::span<std::byte>> dst = sink_.Acquire(c);
        if (!dst.ok()) {
          run_.budget().Release(c.length);
          run_.Fail(dst.status().WithContext(file_.path));
          break;
        }
        *slot = Slot{&c, *dst, 0, 0, true};
        batch.push_back(ReadRequest{c.offset, c.length, dst->data(), SlotTag(slot)});
        ++next;
      }
      if (!Submit(batch)) continue;
      if (in_flight_ == 0) {
        if (next >= file_.chunks.size() || run_.stopping()) break;
        continue;
      }
      Result<size_t> n = source_.Reap(results, Deadline::In(kReapSlice));
      if (!n.ok()) {
        // The source can no longer deliver completions: nothing more can be reaped safely.
        run_.Fail(n.status().WithContext(file_.path));
        break;
      }
      for (size_t i = 0; i < *n; ++i) useful += Complete(results[i], batch);
      if (!Submit(batch)) continue;
    }
    // Requests of a failed Reap() may still be in flight; the source waits for them when destroyed.
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    return FileTiming{secs, useful};
  }

  uint64_t short_read_retries() const { return short_read_retries_; }

 private:
  uint64_t SlotTag(const Slot* s) const { return static_cast<uint64_t>(s - slots_.data()); }

  Slot* FreeSlot() {
    for (Slot& s : slots_) {
      if (!s.busy) return &s;
    }
    return nullptr;
  }

  // Submits `batch` (and clears it). Returns false when the submission failed.
  bool Submit(std::vector<ReadRequest>& batch) {
    if (batch.empty()) return true;
    Status s = source_.Submit(batch);
    if (!s.ok()) {
      for (const ReadRequest& r : batch) Release(slots_[r.tag]);
      batch.clear();
      run_.Fail(s.WithContext(file_.path));
      return false;
    }
    in_flight_ += batch.size();
    batch.clear();
    return true;
  }

  void Release(Slot& slot) {
    run_.budget().Release(slot.chunk->length);
    slot.busy = false;
  }

  // Handles one completion; may queue a resubmission into `resubmit`. Returns bytes committed.
  uint64_t Complete(const ReadResult& r, std::vector<ReadRequest>& resubmit) {
    --in_flight_;
    if (r.tag >= slots_.size() || !slots_[r.tag].busy) {
      run_.Fail(
          InternalError(fmt::format("{}: completion for unknown request {}", file_.path, r.tag)));
      return 0;
    }
    Slot& slot = slots_[r.tag];
    const plan::Chunk& c = *slot.chunk;
    const uint64_t req_offset = c.offset + slot.done;
    if (!r.status.ok()) {
      Release(slot);
      if (r.status.code() != StatusCode::kCancelled || !run_.stopping()) {
        run_.Fail(
            r.status.WithContext(fmt::format("reading {}", DescribeOffset(file_, req_offset))));
      }
      return 0;
    }
    slot.done += r.bytes;
    const uint64_t file_size = file_.header.file_size;
    const uint64_t end = c.offset + slot.done;
    if (slot.done >= c.length || end >= file_size) {
      Status s = sink_.Commit(c);
      const uint64_t useful = std::min(c.offset + c.length, file_size) - c.offset;
      Release(slot);
      if (!s.ok()) {
        run_.Fail(s.WithContext(file_.path));
        return 0;
      }
      run_.AddProgress(useful, false);
      return useful;
    }
    // Fewer bytes than asked before the end of the file.
    if (r.bytes == 0 || ++slot.retries > options_.max_short_read_retries || run_.stopping()) {
      Release(slot);
      if (!run_.stopping()) {
        run_.Fail(DataLossError(fmt::format(
            "unexpected end of data reading {}: the read returned {} bytes at byte offset {} of a "
            "{}-byte file (was the file truncated or replaced while loading?)",
            DescribeOffset(file_, end), r.bytes, end, file_size)));
      }
      return 0;
    }
    ++short_read_retries_;
    // Resume from an aligned offset so direct-I/O sources accept the request; re-reading a few
    // bytes lands them at the same place.
    const uint64_t align = std::max<uint32_t>(source_.caps().alignment, 1);
    const uint64_t resume = (end / align) * align;
    slot.done = std::max(resume, c.offset) - c.offset;
    resubmit.push_back(ReadRequest{c.offset + slot.done, c.length - slot.done,
                                   slot.dst.data() + slot.done, r.tag});
    return 0;
  }

  const uint32_t index_;
  const plan::FilePlan& file_;
  Source& source_;
  sink::Sink& sink_;
  RunState& run_;
  const EngineOptions& options_;
  std::vector<Slot> slots_;
  size_t in_flight_ = 0;
  uint64_t short_read_retries_ = 0;
};

}  // namespace

Status RunPlan(const plan::LoadPlan& plan, std::vector<std::unique_ptr<Source>>& sources,
               sink::Sink& sink, const EngineOptions& options,
               const std::vector<uint32_t>& queue_depths, EngineStats* stats) {
  std::vector<FileInput> files(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    files[i].source = sources[i].get();
    files[i].queue_depth = i < queue_depths.size() ? queue_depths[i] : 0;
  }
  return RunPlan(plan, files, sink, options, stats);
}

Status RunPlan(const plan::LoadPlan& plan, std::span<const FileInput> files, sink::Sink& sink,
               const EngineOptions& options, EngineStats* stats) {
  if (files.size() != plan.files.size()) {
    return InternalError(fmt::format("{} sources for {} files", files.size(), plan.files.size()));
  }
  RunState run(plan, options);
  std::vector<FileTiming> timings(plan.files.size());
  std::atomic<uint64_t> retries{0};
  auto drive = [&] {
    for (uint32_t i = run.NextFile(); i < plan.files.size(); i = run.NextFile()) {
      if (run.stopping()) break;
      const uint32_t qd = files[i].queue_depth > 0 ? files[i].queue_depth : options.queue_depth;
      FileDriver driver(i, plan.files[i], *files[i].source, sink, run, options, qd);
      timings[i] = driver.Run();
      retries += driver.short_read_retries();
      if (!run.stopping()) run.AddProgress(0, true);
    }
  };
  const uint32_t drivers =
      std::clamp<uint32_t>(options.parallel_files, 1, std::max<size_t>(plan.files.size(), 1));
  std::vector<std::thread> threads;
  for (uint32_t d = 1; d < drivers; ++d) threads.emplace_back(drive);
  drive();
  for (std::thread& t : threads) t.join();

  if (stats != nullptr) {
    stats->files = timings;
    stats->bytes_read = 0;
    for (const FileTiming& t : timings) stats->bytes_read += t.bytes;
    stats->peak_in_flight_bytes = run.budget().peak();
    stats->short_read_retries = retries.load();
  }
  return run.result();
}

}  // namespace flashload::engine
