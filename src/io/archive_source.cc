#include "io/archive_source.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "common/strings.h"
#include "common/url.h"
#include "io/read_pool.h"
#include "io/read_text.h"
#include "io/registry.h"

namespace flashload {
namespace {

constexpr uint8_t kZstdMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};
constexpr uint8_t kGzipMagic[2] = {0x1F, 0x8B};
// Frames kept in memory for the life of an open .tar.zst (PinSmallFrames()).
constexpr uint32_t kPinnedFrameBytes = 64 << 10;
constexpr uint64_t kPinnedTotalBytes = 16 << 20;

// The byte window [data_offset, data_offset + size) of an archive's content. Holds the archive,
// so the content, index and frame cache live as long as any member source does.
class MemberSource final : public io_internal::PooledSource {
 public:
  MemberSource(std::shared_ptr<const Archive> archive, const ArchiveMember& member)
      : archive_(std::move(archive)),
        member_(member),
        name_(ArchiveMemberUri(archive_->uri(), member.path)),
        caps_([&] {
          SourceCaps c = archive_->content().caps();
          c.direct_io = false;
          c.alignment = 1;
          c.max_in_flight = std::clamp<uint32_t>(c.max_in_flight, 8, 64);
          return c;
        }()),
        backend_(fmt::format("tar({})", archive_->content().backend())) {}

  ~MemberSource() override { pool_.reset(); }

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return member_.size; }
  SourceCaps caps() const override { return caps_; }
  std::string_view backend() const override { return backend_; }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    if (offset >= member_.size || dst.empty()) return size_t{0};
    const uint64_t n = std::min<uint64_t>(dst.size(), member_.size - offset);
    const uint64_t at = member_.data_offset + offset;
    Result<size_t> got = archive_->content().ReadAt(at, dst.first(n), options);
    if (!got.ok()) {
      return Status(got.status().code(),
                    fmt::format("{} (member byte offset {}, archive byte offset {}): {}", name_,
                                offset, at, got.status().message()));
    }
    if (*got < n) {
      return DataLossError(fmt::format(
          "{}: the archive ended at byte offset {} inside the member (member byte offset {}); it "
          "changed or was truncated since it was opened: load it again",
          name_, at + *got, offset + *got));
    }
    return static_cast<size_t>(n);
  }

 protected:
  io_internal::ReadPool& pool() override {
    std::call_once(pool_once_, [this] {
      pool_ = std::make_unique<io_internal::ReadPool>(
          caps_.max_in_flight,
          [this](const ReadRequest& r, uint32_t) {
            return ReadAt(r.offset, std::span(r.dst, r.length), ReadOptions{});
          },
          name_);
    });
    return *pool_;
  }

 private:
  const std::shared_ptr<const Archive> archive_;
  const ArchiveMember member_;
  const std::string name_;
  const SourceCaps caps_;
  const std::string backend_;
  std::once_flag pool_once_;
  std::unique_ptr<io_internal::ReadPool> pool_;  // last: its workers use the members above
};

// A ModelStore over one archive's index; paths are member URIs of that archive.
class ArchiveModelStore final : public ModelStore {
 public:
  explicit ArchiveModelStore(std::shared_ptr<const Archive> archive)
      : archive_(std::move(archive)) {}

  Result<EntryKind> Stat(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(path));
    if (const ArchiveMember* m = archive_->index().Find(member)) {
      if (m->kind == format::TarMemberKind::kFile) return EntryKind::kFile;
      return InvalidArgumentError(fmt::format(
          "{}: is {} in the archive, not a regular file; links inside archives are not followed "
          "(pack the archive with the files themselves)",
          path, format::TarMemberKindText(m->kind, m->type_flag)));
    }
    return archive_->index().IsFolder(member) ? EntryKind::kFolder : EntryKind::kMissing;
  }

  Result<std::vector<Entry>> List(const std::string& folder) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(folder));
    if (!archive_->index().IsFolder(member)) {
      return NotFoundError(fmt::format("{}: no such folder in the archive", folder));
    }
    std::vector<Entry> out;
    for (auto& [name, is_folder] : archive_->index().List(member)) {
      EntryKind kind = EntryKind::kFolder;
      if (!is_folder) {
        const ArchiveMember* m =
            archive_->index().Find(member.empty() ? name : member + "/" + name);
        kind = m != nullptr && m->kind == format::TarMemberKind::kFile ? EntryKind::kFile
                                                                       : EntryKind::kMissing;
      }
      out.push_back({std::move(name), kind});
    }
    return out;
  }

  Result<std::string> ReadText(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(const std::string member, Member(path));
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, archive_->OpenMember(member));
    return ReadTextFile(*source);
  }

  std::string Canonical(const std::string& path) const override {
    Result<ArchiveMemberRef> ref = ParseArchiveMemberUri(path);
    return ref.ok() ? ArchiveMemberUri(ref->archive, ref->member) : path;
  }

 private:
  Result<std::string> Member(const std::string& path) const {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path));
    if (ref.archive != archive_->uri()) {
      return InvalidArgumentError(
          fmt::format("{}: not inside the archive {} this store reads", path, archive_->uri()));
    }
    return std::move(ref.member);
  }

  const std::shared_ptr<const Archive> archive_;
};

// ---- The cache of open archives ----

struct ArchiveCache {
  std::mutex mu;
  std::map<std::string, std::weak_ptr<Archive>> open;  // guarded by mu
  std::shared_ptr<Archive> recent;                     // guarded by mu
  std::chrono::steady_clock::time_point recent_at;     // guarded by mu
};

ArchiveCache& Cache() {
  static ArchiveCache* cache = new ArchiveCache;  // never destroyed: used from any thread
  return *cache;
}

// What identifies what an open of `uri` reads: for a local file its identity (so a file replaced
// in place is opened again), for a remote object the options that change the bytes or who may
// read them.
std::string CacheKey(const std::string& uri, const OpenOptions& options) {
  if (!SchemeOf(uri).has_value()) {
    struct stat st;
    if (stat(uri.c_str(), &st) == 0) {
      return fmt::format("{}\n{}:{}:{}:{}.{}", uri, st.st_dev, st.st_ino, st.st_size,
                         st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    }
    return uri;
  }
  const RemoteOpenOptions& r = options.remote;
  return fmt::format("{}\n{}|{}|{}|{}|{}|{}|{}|{}", uri, r.endpoint, r.region, r.path_style,
                     r.anonymous, r.verify_tls, r.ca_bundle, fmt::join(r.headers, "\x1f"),
                     r.header_on_redirect);
}

}  // namespace

Archive::Archive(std::string uri, std::shared_ptr<const Source> raw,
                 std::shared_ptr<const Source> content, Compression compression, ArchiveIndex index)
    : uri_(std::move(uri)),
      raw_(std::move(raw)),
      content_(std::move(content)),
      compression_(compression),
      index_(std::move(index)) {}

Result<std::unique_ptr<Source>> Archive::OpenMember(std::string_view path) const {
  FL_ASSIGN_OR_RETURN(const std::string member, format::CheckMemberPath(path, uri_));
  const ArchiveMember* m = index_.Find(member);
  if (m == nullptr) {
    if (index_.IsFolder(member)) {
      return NotFoundError(
          fmt::format("{}: '{}' is a folder in the archive, not a file", uri_, member));
    }
    return NotFoundError(fmt::format(
        "{}: no member '{}' in the archive (list it with `tar -tf`, or `flashload inspect` the "
        "archive)",
        uri_, member));
  }
  if (m->kind != format::TarMemberKind::kFile) {
    return InvalidArgumentError(fmt::format(
        "{}: member '{}' (type flag '{}', header at byte offset {}) is {}, not a regular file; "
        "flashload reads regular files only (pack the archive with the files themselves)",
        uri_, member, m->type_flag, m->header_offset,
        format::TarMemberKindText(m->kind, m->type_flag)));
  }
  return std::unique_ptr<Source>(std::make_unique<MemberSource>(shared_from_this(), *m));
}

Result<std::shared_ptr<Archive>> OpenArchiveFromSource(std::unique_ptr<Source> raw, std::string uri,
                                                       const ArchiveOptions& options) {
  std::shared_ptr<const Source> shared(std::move(raw));
  uint8_t magic[4] = {};
  const size_t probe = static_cast<size_t>(std::min<uint64_t>(shared->size(), sizeof(magic)));
  FL_RETURN_IF_ERROR(ReadExact(*shared, 0, std::as_writable_bytes(std::span(magic)).first(probe)));
  if (probe >= 2 && std::memcmp(magic, kGzipMagic, 2) == 0) {
    return UnimplementedError(fmt::format(
        "{}: a gzip-compressed archive; flashload loads .tar and zstd seekable .tar.zst archives "
        "(extract it with `tar -xzf`, or repack it with `flashload pack`)",
        uri));
  }
  const bool zstd = probe == 4 && (std::memcmp(magic, kZstdMagic, 4) == 0 ||
                                   (magic[3] == 0x18 && magic[2] == 0x4D && magic[1] == 0x2A &&
                                    (magic[0] & 0xF0) == 0x50));  // a skippable frame first
  std::shared_ptr<const Source> content = shared;
  Archive::Compression compression = Archive::Compression::kNone;
  if (zstd) {
    Result<std::unique_ptr<SeekableZstdSource>> z = OpenSeekableZstd(shared, options.zstd);
    if (!z.ok() && z.status().code() == StatusCode::kNotFound) {
      return UnimplementedError(fmt::format(
          "{}: a zstd stream that is not in the zstd seekable format (no seek table at its end), "
          "so it cannot be read without decompressing all of it: `flashload load` streams it "
          "into host memory front to back; for anything else extract it with `flashload "
          "unpack` (or `tar --zstd -xf`) and use the folder, or pack it again with `flashload "
          "pack`, which writes seekable archives",
          uri));
    }
    FL_RETURN_IF_ERROR(z.status());
    // Tar headers and small members (configs, indexes) in their own frames, fetched in parallel
    // now rather than one request at a time by the header walk and the layout resolution.
    (*z)->PinSmallFrames(kPinnedFrameBytes, kPinnedTotalBytes, (*z)->caps().max_in_flight);
    content = std::shared_ptr<const Source>(std::move(z).value());
    compression = Archive::Compression::kZstdSeekable;
  }
  FL_ASSIGN_OR_RETURN(ArchiveIndex index, ArchiveIndex::Build(*content, options.limits));
  return std::make_shared<Archive>(std::move(uri), std::move(shared), std::move(content),
                                   compression, std::move(index));
}

Result<std::shared_ptr<Archive>> OpenArchive(const std::string& uri, const OpenOptions& options,
                                             const ArchiveOptions& archive_options) {
  const std::string key = CacheKey(uri, options);
  ArchiveCache& cache = Cache();
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(cache.mu);
    if (cache.recent && now - cache.recent_at > std::chrono::seconds(kRecentArchiveSeconds)) {
      cache.recent.reset();
    }
    std::erase_if(cache.open, [](const auto& kv) { return kv.second.expired(); });
    if (auto it = cache.open.find(key); it != cache.open.end()) {
      if (std::shared_ptr<Archive> a = it->second.lock()) {
        cache.recent = a;
        cache.recent_at = now;
        return a;
      }
    }
  }
  // The raw bytes are read with positional reads from the members' workers: one descriptor, no
  // O_DIRECT, no pool of its own.
  OpenOptions raw_options = options;
  raw_options.local.backend = LocalBackend::kThreadPool;
  raw_options.local.direct = false;
  raw_options.local.threads = 1;
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> raw, OpenSource(uri, raw_options));
  FL_ASSIGN_OR_RETURN(std::shared_ptr<Archive> archive,
                      OpenArchiveFromSource(std::move(raw), uri, archive_options));
  std::lock_guard lock(cache.mu);
  if (auto it = cache.open.find(key); it != cache.open.end()) {
    // Opened by another thread meanwhile: share theirs.
    if (std::shared_ptr<Archive> a = it->second.lock()) archive = a;
  }
  cache.open[key] = archive;
  cache.recent = archive;
  cache.recent_at = std::chrono::steady_clock::now();
  return archive;
}

void ReleaseRecentArchive() {
  std::shared_ptr<Archive> drop;
  std::lock_guard lock(Cache().mu);
  drop = std::move(Cache().recent);
}

// ---- URIs ----

bool IsArchiveMemberUri(std::string_view uri) {
  return uri.size() > kArchiveScheme.size() &&
         EqualsIgnoreCase(uri.substr(0, kArchiveScheme.size()), kArchiveScheme) &&
         uri[kArchiveScheme.size()] == ':';
}

Result<ArchiveMemberRef> ParseArchiveMemberUri(std::string_view uri) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("{}: {}; an archive member is named tar:ARCHIVE!/PATH (e.g. "
                    "tar:/models/m.tar.zst!/unet/diffusion_pytorch_model.safetensors)",
                    uri, why));
  };
  if (!IsArchiveMemberUri(uri)) return bad("not a tar: URI");
  const std::string_view rest = uri.substr(kArchiveScheme.size() + 1);
  const size_t bang = rest.find("!/");
  std::string_view archive, member;
  if (bang != std::string_view::npos) {
    archive = rest.substr(0, bang);
    member = rest.substr(bang + 2);
  } else if (rest.ends_with('!')) {
    archive = rest.substr(0, rest.size() - 1);
  } else {
    return bad("no '!/' after the archive");
  }
  if (archive.empty()) return bad("no archive before '!/'");
  ArchiveMemberRef ref;
  ref.archive = std::string(archive);
  // Only '/' and '.' segments ("", "./"): the root folder. Anything else, ".." included, must be
  // a path CheckMemberPath accepts.
  const bool root = member.find_first_not_of("/.") == std::string_view::npos &&
                    member.find("..") == std::string_view::npos;
  if (!root) {
    FL_ASSIGN_OR_RETURN(ref.member, format::CheckMemberPath(member, ref.archive));
  }
  return ref;
}

std::string ArchiveMemberUri(std::string_view archive, std::string_view member) {
  return fmt::format("{}:{}!/{}", kArchiveScheme, archive, member);
}

bool LooksLikeArchive(std::string_view path_or_uri) {
  std::string_view p = path_or_uri;
  if (std::optional<UrlParts> parts = SplitUrl(p);
      parts &&
      (EqualsIgnoreCase(parts->scheme, "http") || EqualsIgnoreCase(parts->scheme, "https"))) {
    p = p.substr(0, std::min(p.find('?'), p.find('#')));
  }
  while (p.ends_with('/')) p.remove_suffix(1);
  return p.ends_with(".tar") || p.ends_with(".tar.zst") || p.ends_with(".TAR") ||
         p.ends_with(".TAR.ZST");
}

Result<std::string> ArchiveLocation(const std::string& path_or_uri) {
  if (IsArchiveMemberUri(path_or_uri)) {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path_or_uri));
    return ref.archive;
  }
  std::string path = path_or_uri;
  if (std::optional<UriScheme> scheme = SchemeOf(path_or_uri); scheme && scheme->has_slashes) {
    if (!EqualsIgnoreCase(scheme->name, "file")) return path_or_uri;
    FL_ASSIGN_OR_RETURN(path, FileUriPath(path_or_uri));
  }
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  if (ec) return ErrnoToStatus(ec.value(), "absolute path of", path);
  std::string out = abs.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

Result<bool> IsPlainZstdArchive(const std::string& path_or_uri, const OpenOptions& options,
                                const SourceOpener& opener) {
  std::string archive = path_or_uri;
  if (IsArchiveMemberUri(path_or_uri)) {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path_or_uri));
    archive = std::move(ref.archive);
  }
  OpenOptions probe = options;
  probe.local.backend = LocalBackend::kThreadPool;
  probe.local.direct = false;
  probe.local.threads = 1;
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> raw,
                      opener ? opener(archive, probe) : OpenSource(archive, probe));
  const uint64_t size = raw->size();
  if (size < 4 + format::kSeekTableFooterSize) return false;
  uint8_t magic[4] = {};
  FL_RETURN_IF_ERROR(ReadExact(*raw, 0, std::as_writable_bytes(std::span(magic))));
  const bool zstd = std::memcmp(magic, kZstdMagic, 4) == 0 ||
                    (magic[3] == 0x18 && magic[2] == 0x4D && magic[1] == 0x2A &&
                     (magic[0] & 0xF0) == 0x50);  // a skippable frame first
  if (!zstd) return false;
  uint8_t footer[format::kSeekTableFooterSize] = {};
  FL_RETURN_IF_ERROR(
      ReadExact(*raw, size - sizeof(footer), std::as_writable_bytes(std::span(footer))));
  const uint32_t footer_magic = uint32_t{footer[5]} | uint32_t{footer[6]} << 8 |
                                uint32_t{footer[7]} << 16 | uint32_t{footer[8]} << 24;
  return footer_magic != format::kSeekableMagic;
}

Result<std::unique_ptr<Source>> OpenArchiveMemberUri(const std::string& uri,
                                                     const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(uri));
  if (ref.member.empty()) {
    return InvalidArgumentError(
        fmt::format("{}: names the archive's root folder, not a file in it", uri));
  }
  FL_ASSIGN_OR_RETURN(std::shared_ptr<Archive> archive, OpenArchive(ref.archive, options));
  return archive->OpenMember(ref.member);
}

Result<SourceCaps> ArchiveMemberCaps(const std::string& uri, const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> member, OpenArchiveMemberUri(uri, options));
  return member->caps();
}

Result<std::unique_ptr<ModelStore>> OpenArchiveModelStore(const std::string& uri,
                                                          const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(uri));
  FL_ASSIGN_OR_RETURN(std::shared_ptr<Archive> archive, OpenArchive(ref.archive, options));
  return std::unique_ptr<ModelStore>(std::make_unique<ArchiveModelStore>(std::move(archive)));
}

Result<ModelLayout> ResolveArchiveModel(const std::string& path_or_uri,
                                        const ResolveOptions& options, const OpenOptions& open) {
  std::string root;
  if (IsArchiveMemberUri(path_or_uri)) {
    FL_ASSIGN_OR_RETURN(ArchiveMemberRef ref, ParseArchiveMemberUri(path_or_uri));
    root = ArchiveMemberUri(ref.archive, ref.member);
  } else {
    FL_ASSIGN_OR_RETURN(std::string location, ArchiveLocation(path_or_uri));
    root = ArchiveMemberUri(location, "");
  }
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ModelStore> store, OpenArchiveModelStore(root, open));
  Result<ModelLayout> layout = ResolveModel(*store, root, options);
  if (layout.ok() || layout.status().code() != StatusCode::kNotFound || !root.ends_with("!/")) {
    return layout;
  }
  // An archive packed as "NAME/...": the model in its one top folder.
  FL_ASSIGN_OR_RETURN(std::vector<ModelStore::Entry> top, store->List(root));
  if (top.size() != 1 || top[0].kind != ModelStore::EntryKind::kFolder) return layout;
  return ResolveModel(*store, JoinModelPath(root, top[0].name), options);
}

}  // namespace flashload
