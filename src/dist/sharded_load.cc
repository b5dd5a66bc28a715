// LoadSharded(): tensor-parallel loading on a Communicator (flashload/dist.h).
//
// Every step that can fail on one rank is followed by Agree(), so the failure reaches every rank
// (with its rank named) before anyone goes on to a collective the failed rank would never join.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist/placement.h"
#include "dist/shard_rules.h"
#include "dist/share_plan.h"
#include "engine/engine.h"
#include "flashload/dist.h"
#include "io/archive_source.h"
#include "io/registry.h"
#include "load/open_model.h"
#include "sink/cuda_copy_engine.h"
#include "sink/host_arena.h"
#include "sink/sink.h"

namespace flashload {

std::string_view ShardModeName(ShardMode mode) {
  switch (mode) {
    case ShardMode::kAuto:
      return "auto";
    case ShardMode::kShardLocal:
      return "shard-local";
    case ShardMode::kReadOnceShare:
      return "read-once-share";
  }
  return "?";
}

Result<ShardMode> ParseShardMode(std::string_view text) {
  if (text == "auto") return ShardMode::kAuto;
  if (text == "local" || text == "shard-local") return ShardMode::kShardLocal;
  if (text == "share" || text == "read-once-share") return ShardMode::kReadOnceShare;
  return InvalidArgumentError(fmt::format(
      "unknown shard mode '{}' (expected auto, local (each rank reads its shards) or share (each "
      "byte read once, then exchanged))",
      text));
}

namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string Qualified(const std::string& component, const std::string& name) {
  return component.empty() ? name : component + "/" + name;
}

// config.json beside a local model, for the sizes of fused q/k/v blocks; none elsewhere.
std::optional<dist::ModelConfig> LocalModelConfig(const ModelLayout& layout) {
  if (!RemoteScheme(layout.root).empty() || IsArchiveMemberUri(layout.root)) return std::nullopt;
  std::ifstream in(layout.root + "/config.json");
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  Result<dist::ModelConfig> c = dist::ParseModelConfig(text.str(), layout.root + "/config.json");
  if (!c.ok()) return std::nullopt;
  return *std::move(c);
}

// Whether a tensor's shards are strided runs too short to read one by one (a column split of a
// row-major matrix: every row holds a run of every rank's shard): such shards are read once across
// the ranks and shared even in shard-local mode, since the alternatives are many small requests
// or every rank reading the whole tensor. The same decision on every rank: it depends only on
// the shape, the rule and the world.
constexpr uint64_t kStridedRunBytes = 256 << 10;
bool ShareStrided(const TensorInfo& t, const dist::TensorShard& shard, int world) {
  if (world <= 1 || shard.action != dist::ShardAction::kSplit) return false;
  uint64_t outer = 1;
  for (uint32_t d = 0; d < shard.dim; ++d) outer *= t.shape[d];
  if (outer <= 1) return false;  // one run per block: contiguous
  uint64_t inner = DtypeBits(t.dtype);
  for (size_t d = shard.dim + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
  const uint64_t run_bytes = t.shape[shard.dim] / static_cast<uint64_t>(world) * inner / 8;
  return run_bytes < kStridedRunBytes;
}

// The selection of rank `rank`: every tensor of the model, split or replicated by the rules,
// in two parts: what the rank reads itself (`local`), and what is read once and shared
// (`shared`): everything in read-once-then-share mode, strided short-run shards otherwise when
// the tensors land in host memory as stored (the exchange does not convert or copy to a device:
// a GPU or converting rank reads its column shards itself).
struct RankSelection {
  TensorSelection local;
  TensorSelection shared;
  uint32_t split = 0;
  uint32_t tensors = 0;
};
Result<RankSelection> SelectFor(const LoadedModel& m, const dist::ShardRules& rules, int world,
                                int rank, ShardMode mode, bool host_as_stored) {
  RankSelection out;
  for (const ModelFile& f : m.layout.files) {
    for (const TensorInfo& t : m.headers.at(f.path).tensors) {
      FL_ASSIGN_OR_RETURN(dist::TensorShard shard, rules.ShardFor(t.name, t.shape));
      if (shard.action == dist::ShardAction::kSplit) ++out.split;
      ++out.tensors;
      const bool shared =
          mode == ShardMode::kReadOnceShare || (host_as_stored && ShareStrided(t, shard, world));
      (shared ? out.shared : out.local).tensors[Qualified(f.component, t.name)] = dist::ShardPart(
          shard, t.shape, static_cast<uint32_t>(world), static_cast<uint32_t>(rank));
    }
  }
  return out;
}

// The file that makes a model slow shared storage (remote, an archive member, a network file
// system), or "" when every file is local.
std::string SharedStorage(const load_internal::OpenedModel& opened) {
  for (size_t i = 0; i < opened.files.size(); ++i) {
    const std::string& path = opened.model.layout.files[i].path;
    if (!RemoteScheme(path).empty() || IsArchiveMemberUri(path)) {
      return fmt::format("{} is remote", RedactUrl(path));
    }
    if (opened.files[i].strategy.strategy == Strategy::kNetwork) {
      return fmt::format("{} is on a network file system", path);
    }
  }
  return "";
}

// The reads of one round land in one host buffer, file after file.
class RangeSink : public sink::Sink {
 public:
  Status Prepare(const plan::LoadPlan& plan) override {
    uint64_t total = 0;
    base_.assign(plan.files.size(), 0);
    for (size_t i = 0; i < plan.files.size(); ++i) {
      base_[i] = total;
      total += plan.files[i].arena_size();
    }
    if (!arena_ || arena_->size() < total) {
      arena_.reset();
      FL_ASSIGN_OR_RETURN(arena_, sink::HostArena::Allocate(total));
    }
    return Status::Ok();
  }
  Result<std::span<std::byte>> Acquire(const plan::Chunk& c) override {
    return std::span<std::byte>(At(c.file, c.arena_offset), c.length);
  }
  Status Commit(const plan::Chunk&) override { return Status::Ok(); }
  Result<TensorMap> Finish() override { return TensorMap(); }
  void Abort() override {}
  std::byte* At(uint32_t file, uint64_t arena_offset) const {
    return arena_->data() + base_[file] + arena_offset;
  }
  uint64_t capacity() const { return arena_ ? arena_->size() : 0; }

 private:
  std::shared_ptr<sink::HostArena> arena_;
  std::vector<uint64_t> base_;
};

// Serialized RankReport for AllGather: "key=value" lines.
std::string Serialize(const RankReport& r) {
  auto clean = [](std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
  };
  return fmt::format(
      "rank={}\nworld={}\ncommunicator={}\nmode={}\nmode_reason={}\nrules={}\ntensors={}\n"
      "split={}\nshard_bytes={}\nbytes_read={}\nbytes_sent={}\nbytes_received={}\nrounds={}\n"
      "seconds={}\nread_seconds={}\nshare_seconds={}\ncovering_reads={}\ncovering_bytes={}\n"
      "strided_shared={}\nstrided_shared_bytes={}\n",
      r.rank, r.world, clean(r.communicator), r.mode, clean(r.mode_reason), clean(r.rules),
      r.tensors, r.split, r.shard_bytes, r.bytes_read, r.bytes_sent, r.bytes_received, r.rounds,
      r.seconds, r.read_seconds, r.share_seconds, r.covering_reads, r.covering_bytes,
      r.strided_shared, r.strided_shared_bytes);
}

RankReport Deserialize(const std::string& text) {
  RankReport r;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq);
    const std::string v = line.substr(eq + 1);
    auto u = [&] { return std::strtoull(v.c_str(), nullptr, 10); };
    auto d = [&] { return std::strtod(v.c_str(), nullptr); };
    if (k == "rank")
      r.rank = static_cast<int>(u());
    else if (k == "world")
      r.world = static_cast<int>(u());
    else if (k == "communicator")
      r.communicator = v;
    else if (k == "mode")
      r.mode = v;
    else if (k == "mode_reason")
      r.mode_reason = v;
    else if (k == "rules")
      r.rules = v;
    else if (k == "tensors")
      r.tensors = static_cast<uint32_t>(u());
    else if (k == "split")
      r.split = static_cast<uint32_t>(u());
    else if (k == "shard_bytes")
      r.shard_bytes = u();
    else if (k == "bytes_read")
      r.bytes_read = u();
    else if (k == "bytes_sent")
      r.bytes_sent = u();
    else if (k == "bytes_received")
      r.bytes_received = u();
    else if (k == "rounds")
      r.rounds = static_cast<uint32_t>(u());
    else if (k == "seconds")
      r.seconds = d();
    else if (k == "read_seconds")
      r.read_seconds = d();
    else if (k == "share_seconds")
      r.share_seconds = d();
    else if (k == "covering_reads")
      r.covering_reads = static_cast<uint32_t>(u());
    else if (k == "covering_bytes")
      r.covering_bytes = u();
    else if (k == "strided_shared")
      r.strided_shared = static_cast<uint32_t>(u());
    else if (k == "strided_shared_bytes")
      r.strided_shared_bytes = u();
  }
  return r;
}

class ShardedLoad {
 public:
  ShardedLoad(const std::string& path, Communicator& comm, const TensorParallelOptions& o)
      : path_(path), comm_(comm), o_(o), world_(comm.size()), rank_(comm.rank()) {}

  Result<ShardedModel> Run() {
    const auto start = Clock::now();
    report_.rank = rank_;
    report_.world = world_;
    report_.communicator = comm_.name();
    // Everything before the first byte: the options, the model's headers, the rules, the mode.
    Status prepared = Prepare();
    FL_RETURN_IF_ERROR(Agree(prepared));
    if (!local_->tensors.empty()) FL_RETURN_IF_ERROR(Agree(LoadLocal()));
    FL_RETURN_IF_ERROR(LoadShared());
    report_.seconds = SecondsSince(start);
    out_.report = report_;
    FL_ASSIGN_OR_RETURN(std::vector<std::string> all,
                        comm_.AllGather(Serialize(report_), Deadline::In(o_.timeout)));
    for (const std::string& s : all) out_.reports.push_back(Deserialize(s));
    return std::move(out_);
  }

 private:
  // The mode, and why. Auto: read-once-then-share on slow shared storage with several ranks (each
  // byte once, in large contiguous reads: fewer requests paying the first-byte latency than each
  // rank's own ranges, and no byte twice), shard-local on local storage.
  Result<ShardMode> ChooseMode(std::string& reason) const {
    if (o_.mode != ShardMode::kAuto) {
      reason = "asked for";
      return o_.mode;
    }
    if (world_ == 1) {
      reason = "one rank: nothing to share";
      return ShardMode::kShardLocal;
    }
    const std::string shared = SharedStorage(opened_);
    if (shared.empty()) {
      reason = "local storage: each rank reads its own shards";
      return ShardMode::kShardLocal;
    }
    reason = shared + ": each byte is read once, in large reads, and shared";
    return ShardMode::kReadOnceShare;
  }

  // The files of the model planned for `selection`.
  Result<std::vector<plan::FilePlan>> PlanFiles(const TensorSelection& selection) const {
    plan::PlanOptions po;
    po.selection = &selection;
    std::vector<plan::FilePlan> files;
    for (size_t i = 0; i < opened_.model.layout.files.size(); ++i) {
      const ModelFile& mf = opened_.model.layout.files[i];
      plan::FilePlan fp;
      fp.path = mf.path;
      fp.component = mf.component;
      fp.header = opened_.model.headers.at(mf.path);
      FL_RETURN_IF_ERROR(plan::PlanFile(fp, static_cast<uint32_t>(i), po));
      files.push_back(std::move(fp));
    }
    return files;
  }

  bool HostAsStored() const {
    return o_.load.device.type == DeviceType::kCpu && o_.load.dtype.empty();
  }

  Status Agree(const Status& local) { return comm_.Agree(local, Deadline::In(o_.timeout)); }

  Status Prepare() {
    if (world_ < 1 || rank_ < 0 || rank_ >= world_) {
      return InvalidArgumentError(
          fmt::format("communicator {} says rank {} of {}", comm_.name(), rank_, world_));
    }
    if (o_.load.selection) {
      return InvalidArgumentError(
          "a tensor-parallel load selects each rank's tensors itself; pass no selection");
    }
    FL_ASSIGN_OR_RETURN(opened_, load_internal::OpenModel(path_, o_.load));
    const std::optional<dist::ModelConfig> config = LocalModelConfig(opened_.model.layout);
    FL_ASSIGN_OR_RETURN(rules_, dist::ShardRules::FromSpec(o_.shard, config ? &*config : nullptr));
    report_.rules = rules_.source();
    FL_ASSIGN_OR_RETURN(mode_, ChooseMode(report_.mode_reason));
    report_.mode = std::string(ShardModeName(mode_));
    FL_ASSIGN_OR_RETURN(RankSelection mine,
                        SelectFor(opened_.model, rules_, world_, rank_, mode_, HostAsStored()));
    report_.split = mine.split;
    report_.tensors = mine.tensors;
    report_.strided_shared =
        mode_ == ShardMode::kShardLocal ? static_cast<uint32_t>(mine.shared.tensors.size()) : 0;
    local_ = std::make_shared<TensorSelection>(std::move(mine.local));
    out_.headers = opened_.model.headers;
    return Status::Ok();
  }

  // The shards this rank reads itself, through Load() with its selection.
  Status LoadLocal() {
    LoadOptions lo = o_.load;
    lo.selection = local_;
    const auto start = Clock::now();
    FL_ASSIGN_OR_RETURN(LoadedModel m, Load(path_, lo));
    report_.read_seconds += SecondsSince(start);
    report_.bytes_read += m.report.bytes;
    report_.shard_bytes += m.report.selected_bytes;
    for (const FileReport& f : m.report.files) {
      report_.covering_reads += f.strided_parts_covered;
      report_.covering_bytes += f.strided_covered_bytes;
    }
    out_.tensors.merge(m.tensors);
    report_.load = std::move(m.report);
    return Status::Ok();
  }

  // Plans rank `rank`'s shared tensors (the same on every rank).
  Result<std::vector<plan::FilePlan>> PlanRank(int rank) const {
    FL_ASSIGN_OR_RETURN(RankSelection sel,
                        SelectFor(opened_.model, rules_, world_, rank, mode_, HostAsStored()));
    return PlanFiles(sel.shared);
  }

  // The shards read once across the ranks and exchanged: each rank reads 1/world of the bytes
  // the ranks need of them, round by round.
  Status LoadShared() {
    // Every rank's needs; this rank's output layout.
    std::vector<std::vector<std::vector<dist::Destination>>> needs;
    std::vector<plan::FilePlan> mine;
    dist::OutputLayout layout;
    Status planned = [&]() -> Status {
      for (int q = 0; q < world_; ++q) {
        FL_ASSIGN_OR_RETURN(std::vector<plan::FilePlan> files, PlanRank(q));
        dist::OutputLayout l = dist::LayOutOutput(files);
        needs.push_back(l.destinations);
        if (q == rank_) {
          mine = std::move(files);
          layout = std::move(l);
        }
      }
      return Status::Ok();
    }();
    FL_RETURN_IF_ERROR(Agree(planned));
    const uint64_t window =
        o_.share_window_bytes > 0 ? o_.share_window_bytes : o_.load.memory_budget;
    const dist::SharePlan share(std::move(needs), window);
    report_.rounds = share.rounds();
    // This rank's tensors, in one host allocation.
    Result<std::shared_ptr<sink::HostArena>> output = sink::HostArena::Allocate(layout.bytes);
    FL_RETURN_IF_ERROR(Agree(output.status()));
    std::shared_ptr<sink::HostArena> out = *std::move(output);
    // Rounds are pipelined: while the ranks exchange round k, each reads its piece of round k+1
    // into the other buffer.
    Buffer buffers[2];
    Result<uint64_t> next = ReadRound(share, 0, mine, buffers[0]);
    for (uint32_t round = 0; round < share.rounds(); ++round) {
      Buffer& current = buffers[round % 2];
      Result<uint64_t> read = std::move(next);
      std::thread reader;
      if (read.ok() && round + 1 < share.rounds()) {
        reader = std::thread(
            [&, round] { next = ReadRound(share, round + 1, mine, buffers[(round + 1) % 2]); });
      }
      const auto share_start = Clock::now();
      Status exchanged = Agree(read.status());
      if (exchanged.ok()) exchanged = Exchange(share, round, current, out->data());
      report_.share_seconds += SecondsSince(share_start);
      if (reader.joinable()) reader.join();
      FL_RETURN_IF_ERROR(exchanged);
      report_.bytes_read += *read;
    }
    report_.read_seconds += buffers[0].seconds + buffers[1].seconds;
    // The shards as assembled (host memory, stored dtypes), then converted and placed.
    std::vector<dist::HostShard> shards;
    for (size_t f = 0; f < mine.size(); ++f) {
      for (size_t k = 0; k < mine[f].tensors.size(); ++k) {
        const plan::PlannedTensor& pt = mine[f].tensors[k];
        const TensorInfo& t = mine[f].info(pt);
        dist::HostShard h;
        h.name = Qualified(mine[f].component, t.name);
        h.dtype = t.dtype;
        h.shape = pt.shape;
        h.data = out->data() == nullptr ? nullptr : out->data() + layout.tensor_out[f][k];
        h.bytes = pt.bytes();
        report_.shard_bytes += h.bytes;
        if (mode_ == ShardMode::kShardLocal) report_.strided_shared_bytes += h.bytes;
        shards.push_back(std::move(h));
      }
    }
    FL_ASSIGN_OR_RETURN(ConvertSpec spec, ParseConvertSpec(o_.load.dtype));
    std::shared_ptr<sink::CopyEngine> engine;
    if (o_.load.device.type == DeviceType::kCuda) {
      FL_ASSIGN_OR_RETURN(std::unique_ptr<sink::CopyEngine> cuda,
                          sink::OpenCudaCopyEngine(o_.load.device.index));
      engine = std::move(cuda);
    }
    FL_ASSIGN_OR_RETURN(TensorMap placed, dist::PlaceShards(shards, out, spec, engine));
    out_.tensors.merge(placed);
    return Status::Ok();
  }

  // One round's reads: the plan of this rank's pieces and the memory they landed in.
  struct Buffer {
    plan::LoadPlan plan;
    RangeSink sink;
    double seconds = 0;
  };

  // Reads this rank's pieces of `round` through the engine into `buffer`; the bytes read.
  Result<uint64_t> ReadRound(const dist::SharePlan& share, uint32_t round,
                             const std::vector<plan::FilePlan>& mine, Buffer& buffer) {
    const auto start = Clock::now();
    plan::LoadPlan& lp = buffer.plan;
    lp.files.clear();
    std::vector<std::vector<dist::FileBytes>> by_file(mine.size());
    for (const dist::FileBytes& b : share.Reads(round, static_cast<uint32_t>(rank_))) {
      by_file[b.file].push_back(b);
    }
    std::vector<engine::FileInput> inputs;
    uint64_t bytes = 0;
    for (size_t f = 0; f < mine.size(); ++f) {
      plan::FilePlan fp;
      fp.path = mine[f].path;
      fp.component = mine[f].component;
      fp.header = mine[f].header;
      // The pieces as segments of one stand-in tensor: MergeRanges aligns and merges them.
      plan::PlannedTensor piece;
      for (const dist::FileBytes& b : by_file[f]) piece.segments.push_back({b.offset, b.bytes});
      fp.tensors.push_back(std::move(piece));
      const engine::FileStrategy& s = opened_.files[f].strategy;
      plan::MergeRanges(fp, static_cast<uint32_t>(f), 0, plan::PlanOptions().alignment,
                        s.chunk_bytes);
      bytes += fp.bytes_to_read();
      lp.files.push_back(std::move(fp));
      inputs.push_back({opened_.files[f].source.get(), s.queue_depth});
    }
    FL_RETURN_IF_ERROR(buffer.sink.Prepare(lp));
    engine::EngineOptions eo;
    eo.memory_budget = o_.load.memory_budget;
    eo.parallel_files = o_.load.parallel_files;
    eo.cancel = o_.load.cancel;
    FL_RETURN_IF_ERROR(engine::RunPlan(lp, inputs, buffer.sink, eo));
    buffer.seconds += SecondsSince(start);
    return bytes;
  }

  // Sends every rank the bytes of this round's reads it needs; places what this rank receives
  // (its own reads straight from the read buffer).
  Status Exchange(const dist::SharePlan& share, uint32_t round, const Buffer& reads,
                  std::byte* out) {
    const auto n = static_cast<uint32_t>(world_);
    const auto me = static_cast<uint32_t>(rank_);
    std::vector<std::unique_ptr<std::byte[]>> memory(2 * n);
    std::vector<std::span<const std::byte>> send(n);
    std::vector<std::span<std::byte>> recv(n);
    std::vector<std::vector<dist::Transfer>> incoming(n);
    auto source = [&](const dist::Transfer& t) -> Result<const std::byte*> {
      FL_ASSIGN_OR_RETURN(uint64_t at, reads.plan.files[t.file].ArenaOffset(t.offset));
      return reads.sink.At(t.file, at);
    };
    Status packed = [&]() -> Status {
      for (uint32_t q = 0; q < n; ++q) {
        std::vector<dist::Transfer> outgoing = share.Transfers(round, me, q);
        if (q == me) {
          for (const dist::Transfer& t : outgoing) {
            FL_ASSIGN_OR_RETURN(const std::byte* src, source(t));
            std::memcpy(out + t.out, src, t.bytes);
          }
          continue;
        }
        uint64_t bytes = 0;
        for (const dist::Transfer& t : outgoing) bytes += t.bytes;
        memory[q].reset(new std::byte[std::max<uint64_t>(bytes, 1)]);
        uint64_t at = 0;
        for (const dist::Transfer& t : outgoing) {
          FL_ASSIGN_OR_RETURN(const std::byte* src, source(t));
          std::memcpy(memory[q].get() + at, src, t.bytes);
          at += t.bytes;
        }
        send[q] = std::span<const std::byte>(memory[q].get(), bytes);
        report_.bytes_sent += bytes;
      }
      for (uint32_t r = 0; r < n; ++r) {
        if (r == me) continue;
        incoming[r] = share.Transfers(round, r, me);
        uint64_t bytes = 0;
        for (const dist::Transfer& t : incoming[r]) bytes += t.bytes;
        memory[n + r].reset(new std::byte[std::max<uint64_t>(bytes, 1)]);
        recv[r] = std::span<std::byte>(memory[n + r].get(), bytes);
        report_.bytes_received += bytes;
      }
      return Status::Ok();
    }();
    FL_RETURN_IF_ERROR(Agree(packed));
    FL_RETURN_IF_ERROR(comm_.AllToAll(send, recv, Deadline::In(o_.timeout)));
    for (uint32_t r = 0; r < n; ++r) {
      uint64_t at = 0;
      for (const dist::Transfer& t : incoming[r]) {
        std::memcpy(out + t.out, recv[r].data() + at, t.bytes);
        at += t.bytes;
      }
    }
    return Status::Ok();
  }

  const std::string path_;
  Communicator& comm_;
  const TensorParallelOptions& o_;
  const int world_;
  const int rank_;
  load_internal::OpenedModel opened_;
  dist::ShardRules rules_;
  std::shared_ptr<TensorSelection> local_;  // what this rank reads itself
  ShardMode mode_ = ShardMode::kShardLocal;
  RankReport report_;
  ShardedModel out_;
};

}  // namespace

Result<ShardedModel> LoadSharded(const std::string& path, Communicator& comm,
                                 const TensorParallelOptions& options) {
  return ShardedLoad(path, comm, options).Run();
}

std::string DescribeRankReport(const RankReport& r) {
  std::string s = fmt::format(
      "rank {}/{}: {} ({}), {} tensors ({} split, rules: {}), {:.1f} MB of shards, read {:.1f} "
      "MB in {:.3f} s",
      r.rank, r.world, r.mode, r.mode_reason, r.tensors, r.split, r.rules, r.shard_bytes / 1e6,
      r.bytes_read / 1e6, r.seconds);
  if (r.mode == "read-once-share") {
    s += fmt::format(
        " (reading {:.3f} s, sharing {:.3f} s over {}: sent {:.1f} MB, received "
        "{:.1f} MB in {} rounds)",
        r.read_seconds, r.share_seconds, r.communicator, r.bytes_sent / 1e6, r.bytes_received / 1e6,
        r.rounds);
  }
  if (r.strided_shared > 0) {
    s += fmt::format(
        "; {} column shards ({:.1f} MB) read once across the ranks and shared (reading {:.3f} s, "
        "sharing {:.3f} s over {}: sent {:.1f} MB, received {:.1f} MB)",
        r.strided_shared, r.strided_shared_bytes / 1e6, r.read_seconds, r.share_seconds,
        r.communicator, r.bytes_sent / 1e6, r.bytes_received / 1e6);
  }
  if (r.covering_reads > 0) {
    s += fmt::format("; {} column shards read as the rows covering them ({:.1f} MB)",
                     r.covering_reads, r.covering_bytes / 1e6);
  }
  return s;
}

}  // namespace flashload
