#include "load/stream_load.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <set>

#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "format/tar.h"
#include "io/archive_source.h"
#include "sink/host_arena.h"
#include "sink/host_memory.h"
#include "sink/host_sink.h"

namespace flashload {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr uint64_t kArenaAlignment = 4096;
constexpr uint64_t kCopyPieceBytes = 16ull << 20;  // cancellation and progress between pieces
constexpr uint64_t kProgressEveryBytes = 64ull << 20;

bool IsWeightsName(std::string_view path) { return path.ends_with(".safetensors"); }
bool IsJsonName(std::string_view path) { return path.ends_with(".json"); }

// A safetensors member whose data section was decompressed into its own memory.
struct StreamedWeights {
  Header header;
  std::shared_ptr<sink::HostArena> arena;
  uint64_t lead = 0;  // arena offset of the data section (the file offset modulo 4096)
  double seconds = 0;
  uint64_t reused_bytes = 0;  // arena bytes already populated (memory of an earlier load)
  uint64_t populated_ahead = 0;
  uint64_t populated_on_demand = 0;
  std::string page_size;  // the populator's choice, when it populated anything
};

// What the walk saw of one member (not folders).
struct SeenMember {
  format::TarMemberKind kind = format::TarMemberKind::kFile;
  char type_flag = '0';
  uint64_t header_offset = 0;
  uint64_t size = 0;
  bool has_text = false;
  std::string text;  // kept .json members
};

// A ModelStore over the members a stream walk saw; paths are member URIs of `archive`. Only the
// kept JSON members can be read.
class StreamedStore final : public ModelStore {
 public:
  StreamedStore(std::string archive, std::map<std::string, SeenMember, std::less<>> members,
                std::set<std::string, std::less<>> folders, uint64_t max_json_bytes)
      : archive_(std::move(archive)),
        members_(std::move(members)),
        folders_(std::move(folders)),
        max_json_bytes_(max_json_bytes) {}

  Result<EntryKind> Stat(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(path));
    if (auto it = members_.find(member); it != members_.end()) {
      if (it->second.kind == format::TarMemberKind::kFile) return EntryKind::kFile;
      return InvalidArgumentError(fmt::format(
          "{}: is {} in the archive (type flag '{}', header at byte offset {}), not a regular "
          "file; links inside archives are not followed (pack the archive with the files "
          "themselves)",
          path, format::TarMemberKindText(it->second.kind, it->second.type_flag),
          it->second.type_flag, it->second.header_offset));
    }
    return IsFolder(member) ? EntryKind::kFolder : EntryKind::kMissing;
  }

  Result<std::vector<Entry>> List(const std::string& folder) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(folder));
    if (!IsFolder(member)) {
      return NotFoundError(fmt::format("{}: no such folder in the archive", folder));
    }
    const std::string prefix = member.empty() ? std::string() : member + "/";
    auto child = [&](const std::string& p) -> std::string_view {
      if (!p.starts_with(prefix) || p.size() == prefix.size()) return {};
      const std::string_view rest = std::string_view(p).substr(prefix.size());
      return rest.find('/') == std::string_view::npos ? rest : std::string_view();
    };
    std::vector<Entry> out;
    for (auto it = folders_.lower_bound(prefix); it != folders_.end() && it->starts_with(prefix);
         ++it) {
      if (std::string_view c = child(*it); !c.empty()) {
        out.push_back({std::string(c), EntryKind::kFolder});
      }
    }
    for (auto it = members_.lower_bound(prefix);
         it != members_.end() && it->first.starts_with(prefix); ++it) {
      if (std::string_view c = child(it->first); !c.empty()) {
        out.push_back({std::string(c), it->second.kind == format::TarMemberKind::kFile
                                           ? EntryKind::kFile
                                           : EntryKind::kMissing});
      }
    }
    return out;
  }

  Result<std::string> ReadText(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(path));
    FL_ASSIGN_OR_RETURN(const EntryKind kind, Stat(path));
    if (kind != EntryKind::kFile) {
      return NotFoundError(fmt::format("{}: no such file in the archive", path));
    }
    const SeenMember& m = members_.find(member)->second;
    if (!m.has_text) {
      return ResourceExhaustedError(fmt::format(
          "{}: {} bytes; a streamed archive keeps .json members of at most {} bytes (unpack the "
          "archive with `flashload unpack` to load it)",
          path, m.size, max_json_bytes_));
    }
    return m.text;
  }

  std::string Canonical(const std::string& path) const override {
    Result<ArchiveMemberRef> ref = ParseArchiveMemberUri(path);
    return ref.ok() ? ArchiveMemberUri(ref->archive, ref->member) : path;
  }

 private:
  bool IsFolder(std::string_view member) const {
    return member.empty() || folders_.contains(member);
  }
  Result<std::string> Member(const std::string& path) const {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path));
    if (ref.archive != archive_) {
      return InvalidArgumentError(
          fmt::format("{}: not inside the archive {} this load streams", path, archive_));
    }
    return std::move(ref.member);
  }

  const std::string archive_;
  const std::map<std::string, SeenMember, std::less<>> members_;
  const std::set<std::string, std::less<>> folders_;
  const uint64_t max_json_bytes_;
};

// One pass over the archive: the tar walk, with the members' bytes read or skipped as they pass.
class StreamWalk {
 public:
  StreamWalk(ZstdStreamReader& reader, std::string archive, std::string wanted,
             const LoadOptions& options, const StreamLoadOptions& stream)
      : reader_(reader),
        archive_(std::move(archive)),
        wanted_(std::move(wanted)),
        options_(options),
        stream_(stream) {
    parse_.header_limit = options.header_limit;
  }

  Status Run();

  std::map<std::string, SeenMember, std::less<>>& members() { return members_; }
  std::set<std::string, std::less<>>& folders() { return folders_; }
  std::map<std::string, StreamedWeights>& weights() { return weights_; }
  uint32_t weights_read() const { return weights_read_; }

 private:
  const std::string& name() const { return reader_.source().name(); }
  // Reads exactly dst.size() bytes of member data; `what` and the member's own offsets name the
  // place when the archive ends first.
  // When `populator` is set, dst is its region 0 from `arena_offset`, and each piece is populated
  // (by its worker ahead of the stream, or here) before it is written.
  Status ReadMember(std::span<std::byte> dst, const std::string& member_uri, uint64_t member_offset,
                    uint64_t member_size, sink::MemoryPopulator* populator = nullptr,
                    uint64_t arena_offset = 0);
  Status SkipTo(uint64_t tar_offset, const std::string& what);
  Status Tick();
  Result<StreamedWeights> ReadWeights(const format::TarMember& m, const std::string& uri);
  void AddParents(std::string_view path);
  // Whether weights at `path` are under the folder (or are the file) the load asked for.
  bool Wanted(std::string_view path) const {
    return wanted_.empty() || path == wanted_ ||
           (path.starts_with(wanted_) && path[wanted_.size()] == '/');
  }

  ZstdStreamReader& reader_;
  const std::string archive_;  // location, as member URIs name it
  const std::string wanted_;   // "" (all), a folder or a weights file: the weights worth reading
  const LoadOptions& options_;
  const StreamLoadOptions& stream_;
  ParseOptions parse_;
  uint64_t next_progress_ = kProgressEveryBytes;
  uint32_t weights_read_ = 0;
  std::map<std::string, SeenMember, std::less<>> members_;
  std::set<std::string, std::less<>> folders_;
  std::map<std::string, StreamedWeights> weights_;  // by member URI
};

Status StreamWalk::Tick() {
  if (options_.cancel != nullptr && options_.cancel->load()) {
    return CancelledError(fmt::format("{}: load cancelled", RedactUrl(archive_)));
  }
  if (options_.progress && reader_.compressed_position() >= next_progress_) {
    next_progress_ = reader_.compressed_position() + kProgressEveryBytes;
    if (!options_.progress(
            Progress{reader_.compressed_position(), reader_.source().size(), weights_read_, 0})) {
      return CancelledError(
          fmt::format("{}: load cancelled by the progress callback", RedactUrl(archive_)));
    }
  }
  return Status::Ok();
}

Status StreamWalk::ReadMember(std::span<std::byte> dst, const std::string& member_uri,
                              uint64_t member_offset, uint64_t member_size,
                              sink::MemoryPopulator* populator, uint64_t arena_offset) {
  uint64_t done = 0;
  while (done < dst.size()) {
    FL_RETURN_IF_ERROR(Tick());
    const size_t piece =
        static_cast<size_t>(std::min<uint64_t>(dst.size() - done, kCopyPieceBytes));
    if (populator != nullptr) populator->Ensure(0, arena_offset + done, piece);
    const uint64_t at = reader_.position();
    Result<size_t> got = reader_.Read(dst.subspan(done, piece));
    if (!got.ok()) {
      return got.status().WithContext(
          fmt::format("{} (member byte offset {}, archive byte offset {})", RedactUrl(member_uri),
                      member_offset + done, at));
    }
    done += *got;
    if (*got < piece) {
      return DataLossError(fmt::format(
          "{}: the archive ends at decompressed byte offset {}, inside the member (member byte "
          "offset {} of its {} bytes); it is truncated: fetch or pack it again",
          RedactUrl(member_uri), reader_.position(), member_offset + done, member_size));
    }
  }
  return Status::Ok();
}

Status StreamWalk::SkipTo(uint64_t tar_offset, const std::string& what) {
  while (reader_.position() < tar_offset) {
    FL_RETURN_IF_ERROR(Tick());
    const uint64_t want = std::min(tar_offset - reader_.position(), kCopyPieceBytes);
    const uint64_t at = reader_.position();
    Result<uint64_t> got = reader_.Skip(want);
    if (!got.ok()) {
      return got.status().WithContext(fmt::format("{} (archive byte offset {})", what, at));
    }
    if (*got < want) {
      return DataLossError(fmt::format(
          "{}: the archive ends at decompressed byte offset {}, inside {} (which ends at byte "
          "offset {}); it is truncated: fetch or pack it again",
          RedactUrl(archive_), reader_.position(), what, tar_offset));
    }
  }
  return Status::Ok();
}

Result<StreamedWeights> StreamWalk::ReadWeights(const format::TarMember& m,
                                                const std::string& uri) {
  const auto start = Clock::now();
  const uint64_t size = m.size;
  std::array<std::byte, 8> prefix{};
  const size_t prefix_bytes = static_cast<size_t>(std::min<uint64_t>(size, prefix.size()));
  FL_RETURN_IF_ERROR(ReadMember(std::span(prefix).first(prefix_bytes), uri, 0, size));
  FL_ASSIGN_OR_RETURN(const uint64_t n, ParseHeaderLength(std::span(prefix).first(prefix_bytes),
                                                          size, RedactUrl(uri), parse_));
  std::string json(n, '\0');
  FL_RETURN_IF_ERROR(ReadMember(std::as_writable_bytes(std::span(json)), uri, 8, size));
  StreamedWeights w;
  FL_ASSIGN_OR_RETURN(w.header, ParseHeaderJson(json, n, size, RedactUrl(uri), parse_));
  json = std::string();
  const uint64_t data_offset = w.header.data_offset();
  const uint64_t data_size = w.header.data_size();
  w.lead = data_offset % kArenaAlignment;
  Result<std::shared_ptr<sink::HostArena>> arena = sink::HostArena::Allocate(w.lead + data_size);
  if (!arena.ok()) return arena.status().WithContext(RedactUrl(uri));
  w.arena = *std::move(arena);
  if (data_size > 0) {
    // The first touch of fresh pages costs about as much as decompressing into them: a worker
    // populates the arena ahead of the stream, on another core.
    const sink::HostArena& a = *w.arena;
    const bool ahead = a.size() - a.populated() >= 4 * sink::MemoryPopulator::kStep;
    sink::MemoryPopulator populator({{a.data(), a.size(), a.populated()}}, ahead ? 1 : 0);
    FL_RETURN_IF_ERROR(ReadMember(std::span(a.data() + w.lead, data_size), uri, data_offset, size,
                                  &populator, w.lead));
    populator.Stop();
    w.reused_bytes = a.populated();
    w.populated_ahead = populator.populated_by_workers();
    w.populated_on_demand = populator.populated_by_callers();
    if (w.populated_ahead + w.populated_on_demand > 0) w.page_size = populator.page_size().reason;
  }
  w.seconds = SecondsSince(start);
  return w;
}

void StreamWalk::AddParents(std::string_view path) {
  for (size_t slash = path.find('/'); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    folders_.emplace(path.substr(0, slash));
  }
}

Status StreamWalk::Run() {
  const ArchiveIndexLimits& limits = stream_.limits;
  format::TarPending pending;
  uint64_t members = 0;
  uint64_t total = 0;
  std::array<uint8_t, format::kTarBlock> block;
  while (true) {
    FL_RETURN_IF_ERROR(Tick());
    const uint64_t offset = reader_.position();
    Result<size_t> got = reader_.Read(std::as_writable_bytes(std::span(block)));
    if (!got.ok()) {
      return got.status().WithContext(fmt::format("tar header at byte offset {}", offset));
    }
    if (*got == 0 && pending.empty()) return Status::Ok();  // no end blocks: tolerated, as tar
    if (*got < block.size()) {
      return DataLossError(fmt::format(
          "{}: the archive ends at decompressed byte offset {} inside a tar header (at byte "
          "offset {}); it is truncated: fetch or pack it again",
          RedactUrl(archive_), offset + *got, offset));
    }
    FL_ASSIGN_OR_RETURN(
        format::TarStep step,
        format::ParseTarHeader(block, offset, RedactUrl(archive_), pending, limits.tar));
    if (step.kind == format::TarStep::Kind::kEnd) return Status::Ok();
    if (step.kind == format::TarStep::Kind::kExtension) {
      std::string payload(step.payload_size, '\0');
      FL_RETURN_IF_ERROR(
          ReadMember(std::as_writable_bytes(std::span(payload)),
                     fmt::format("{} (tar extension header at byte offset {})", archive_, offset),
                     0, step.payload_size));
      FL_RETURN_IF_ERROR(
          format::ApplyTarExtension(step, payload, offset, RedactUrl(archive_), pending));
      FL_RETURN_IF_ERROR(SkipTo(step.next_offset, "the padding of a tar extension header"));
      continue;
    }
    const format::TarMember& m = step.member;
    if (++members > limits.max_members) {
      return ResourceExhaustedError(fmt::format(
          "{}: more than {} members (at byte offset {}); the archive is too large or crafted",
          RedactUrl(archive_), limits.max_members, m.header_offset));
    }
    total += m.size;
    if (total > limits.max_total_size) {
      return ResourceExhaustedError(fmt::format(
          "{}: members hold more than {} bytes (at member '{}', byte offset {}); the archive is "
          "too large or crafted",
          RedactUrl(archive_), limits.max_total_size, m.path, m.header_offset));
    }
    std::string_view root = m.path;
    while (root.starts_with("./")) root.remove_prefix(2);
    const bool root_folder =
        m.kind == format::TarMemberKind::kDirectory && (root.empty() || root == "." || root == "/");
    std::string path;
    if (!root_folder) {
      Result<std::string> checked = format::CheckMemberPath(m.path, RedactUrl(archive_));
      if (!checked.ok()) {
        return checked.status().WithContext(
            fmt::format("member at byte offset {}", m.header_offset));
      }
      path = *std::move(checked);
      AddParents(path);
    }
    const std::string uri = ArchiveMemberUri(archive_, path);
    if (!root_folder && m.kind == format::TarMemberKind::kDirectory) {
      members_.erase(path);
      weights_.erase(uri);
      folders_.insert(path);
    } else if (!root_folder) {
      // The later member of a path wins, as tar extracts them.
      weights_.erase(uri);
      folders_.erase(path);
      SeenMember& seen = members_[path];
      seen = SeenMember{m.kind, m.type_flag, m.header_offset, m.size, false, {}};
      if (m.kind == format::TarMemberKind::kFile) {
        if (IsWeightsName(path) && Wanted(path)) {
          FL_ASSIGN_OR_RETURN(weights_[uri], ReadWeights(m, uri));
          ++weights_read_;
        } else if (IsJsonName(path) && m.size <= stream_.max_json_bytes) {
          seen.text.resize(m.size);
          FL_RETURN_IF_ERROR(
              ReadMember(std::as_writable_bytes(std::span(seen.text)), uri, 0, m.size));
          seen.has_text = true;
        }
      }
    }
    FL_RETURN_IF_ERROR(SkipTo(step.next_offset, fmt::format("the data of member '{}'", m.path)));
  }
}

Status RefuseStagedLoad(const std::string& archive, const LoadOptions& options) {
  if (options.device.type == DeviceType::kCuda || !options.dtype.empty()) {
    return FailedPreconditionError(fmt::format(
        "{}: a plain zstd archive (no seek table) can only be streamed into host memory without "
        "a dtype conversion, and this load asks for {}; repack it with `flashload pack` (seekable "
        "archives load onto GPUs and convert), or extract it with `flashload unpack` and load "
        "the folder",
        RedactUrl(archive),
        options.device.type == DeviceType::kCuda ? "device " + DeviceString(options.device)
                                                 : "dtype '" + options.dtype + "'"));
  }
  return Status::Ok();
}

}  // namespace

Result<LoadedModel> LoadStreamedArchive(const std::string& path_or_uri, const LoadOptions& options,
                                        const StreamLoadOptions& stream) {
  const auto start = Clock::now();
  std::string root;
  std::string folder;  // inside the archive: "" or the folder or file asked for
  if (IsArchiveMemberUri(path_or_uri)) {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path_or_uri));
    root = ArchiveMemberUri(ref.archive, ref.member);
    folder = std::move(ref.member);
  } else {
    FL_ASSIGN_OR_RETURN(std::string location, ArchiveLocation(path_or_uri));
    root = ArchiveMemberUri(location, "");
  }
  FL_ASSIGN_OR_RETURN(const ArchiveMemberRef root_ref, ParseArchiveMemberUri(root));
  const std::string& archive = root_ref.archive;
  FL_RETURN_IF_ERROR(RefuseStagedLoad(archive, options));

  OpenOptions open;
  open.remote = options.remote;
  open.local.backend = LocalBackend::kThreadPool;
  open.local.direct = false;
  open.local.threads = std::max<uint32_t>(stream.zstd.reads_in_flight, 1);
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> raw,
                      options.opener ? options.opener(archive, open) : OpenSource(archive, open));
  const uint64_t archive_size = raw->size();
  const std::string backend(raw->backend());
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ZstdStreamReader> reader,
                      ZstdStreamReader::Open(std::move(raw), stream.zstd));

  // A weights file asked for by name: only it is read; an index: the weights beside it; a folder:
  // the weights under it.
  std::string wanted = folder;
  if (IsJsonName(wanted)) {
    const size_t slash = wanted.rfind('/');
    wanted = slash == std::string::npos ? std::string() : wanted.substr(0, slash);
  }
  StreamWalk walk(*reader, archive, wanted, options, stream);
  FL_RETURN_IF_ERROR(walk.Run());
  // The rest of the stream (end blocks, padding, any trailing members): read to its end, so
  // that the last frames' checksums are verified before a tensor is handed out.
  {
    const uint64_t at = reader->position();
    Result<uint64_t> rest = reader->Skip(UINT64_MAX);
    if (!rest.ok()) {
      return rest.status().WithContext(
          fmt::format("after the end of the tar archive (byte offset {})", at));
    }
  }
  reader.reset();

  StreamedStore store(archive, std::move(walk.members()), std::move(walk.folders()),
                      stream.max_json_bytes);
  ResolveOptions resolve;
  resolve.variant = options.variant;
  Result<ModelLayout> layout = ResolveModel(store, root, resolve);
  if (!layout.ok() && layout.status().code() == StatusCode::kNotFound && folder.empty()) {
    // An archive packed as "NAME/...": the model in its one top folder.
    FL_ASSIGN_OR_RETURN(std::vector<ModelStore::Entry> top, store.List(root));
    if (top.size() == 1 && top[0].kind == ModelStore::EntryKind::kFolder) {
      layout = ResolveModel(store, JoinModelPath(root, top[0].name), resolve);
    }
  }
  FL_RETURN_IF_ERROR(layout.status());

  LoadedModel model;
  model.layout = *std::move(layout);
  std::map<std::string, StreamedWeights>& weights = walk.weights();
  for (const ModelFile& f : model.layout.files) {
    auto it = weights.find(f.path);
    if (it == weights.end()) {
      return InternalError(fmt::format("{}: in the resolved layout but not read from the stream",
                                       RedactUrl(f.path)));
    }
    model.headers.emplace(f.path, it->second.header);
  }
  FL_RETURN_IF_ERROR(load_internal::CheckWeightMaps(model));

  LoadReport& report = model.report;
  for (const ModelFile& f : model.layout.files) {
    const StreamedWeights& w = weights.at(f.path);
    for (const TensorInfo& t : w.header.tensors) {
      std::byte* data =
          w.arena->data() == nullptr ? nullptr : w.arena->data() + w.lead + t.data_begin;
      std::string name = sink::QualifiedTensorName(f.component, t.name);
      Tensor tensor(name, t.dtype, t.shape, Device{}, data, t.byte_size(), w.arena);
      if (!model.tensors.emplace(name, std::move(tensor)).second) {
        return DataLossError(
            fmt::format("tensor '{}' appears twice in the model ({} and another file)", name,
                        RedactUrl(f.path)));
      }
    }
    FileReport r;
    r.path = RedactUrl(f.path);
    r.component = f.component;
    r.strategy = std::string(kStreamStrategy);
    r.reason =
        fmt::format("no seek table: the archive ({} bytes, {}) is decompressed once, in order",
                    archive_size, backend);
    r.bytes = w.header.data_size();
    r.output_bytes = r.bytes;
    r.tensors = static_cast<uint32_t>(w.header.tensors.size());
    r.seconds = w.seconds;
    report.bytes += r.bytes;
    report.output_bytes += r.bytes;
    report.memory_reused_bytes += w.reused_bytes;
    report.memory_populated_ahead += w.populated_ahead;
    report.memory_populated_on_demand += w.populated_on_demand;
    if (!w.page_size.empty()) report.page_size = w.page_size;
    report.files.push_back(std::move(r));
  }
  weights.clear();  // the memory of members outside the layout goes now
  report.device = DeviceString(options.device);
  if (report.page_size.empty()) report.page_size = "no fresh memory (reused)";
  report.seconds = SecondsSince(start);
  if (options.progress) {
    const auto n = static_cast<uint32_t>(model.layout.files.size());
    options.progress(Progress{archive_size, archive_size, n, n});
  }
  return model;
}

}  // namespace flashload
