#include "store/cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "common/url.h"
#include "format/json_text.h"
#include "io/read_text.h"
#include "io/s3_url.h"
#include "io/sigv4.h"
#include "store/model_ref.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMaxManifestBytes = 16 << 20;

std::string StripSlashes(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return std::string(s);
}

std::string LastComponent(std::string_view s) {
  const std::string base = StripSlashes(s);
  const size_t slash = base.rfind('/');
  return slash == std::string::npos ? base : base.substr(slash + 1);
}

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A relative, '/'-separated name with no empty, "." or ".." component, not ours: names starting
// with ".flashload" are reserved (the entry's manifest, temporaries), except what the model's
// compile cache folder holds, which travels with the model.
bool IsSafeName(std::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  if (name.starts_with(".flashload") && !name.starts_with(".flashload/compile-cache/")) {
    return false;
  }
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    const std::string_view part = name.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (part.find('\0') != std::string_view::npos) return false;
    start = end + 1;
  }
  return true;
}

// An flock held on <cache>/<entry>.lock for the life of the object.
class EntryLock {
 public:
  ~EntryLock() {
    if (fd_ >= 0) close(fd_);  // releases the flock
  }
  // Waits for the lock; polls, so that `cancel` (Ctrl-C) ends the wait with kCancelled.
  Status Acquire(const std::string& path, const std::atomic<bool>* cancel) {
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return ErrnoToStatus(errno, "open (cache lock)", path);
    for (;;) {
      if (flock(fd_, LOCK_EX | LOCK_NB) == 0) return Status();
      if (errno != EWOULDBLOCK && errno != EINTR) {
        return ErrnoToStatus(errno, "flock (cache lock)", path);
      }
      if (cancel != nullptr && cancel->load()) {
        return CancelledError(fmt::format(
            "{}: cancelled while waiting for another pull of this entry to finish", path));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

 private:
  int fd_ = -1;
};

// Removes `path` and everything under it; errors are ignored (a leftover is cleaned up later).
void RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

Status MakeFolders(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) {
    return ErrnoToStatus(ec.value(), "create folder", path)
        .WithContext("check FLASHLOAD_CACHE or --cache, and that the folder is writable");
  }
  return Status();
}

// A partial folder, removed unless Release()d.
class PartialFolder {
 public:
  ~PartialFolder() {
    if (!path_.empty()) RemoveTree(path_);
  }
  Status Create(const std::string& partial_root, const std::string& entry) {
    static std::atomic<uint64_t> counter{0};
    FL_RETURN_IF_ERROR(MakeFolders(partial_root));
    for (int attempt = 0; attempt < 100; ++attempt) {
      const std::string p =
          fmt::format("{}/{}.{}.{}", partial_root, entry, getpid(), counter.fetch_add(1));
      if (mkdir(p.c_str(), 0755) == 0) {
        path_ = p;
        return Status();
      }
      if (errno != EEXIST) return ErrnoToStatus(errno, "mkdir (partial download)", p);
    }
    return IoError(fmt::format("{}: no free partial folder name for {}", partial_root, entry));
  }
  const std::string& path() const { return path_; }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Result<Manifest> ReadEntryManifest(const std::string& entry_dir) {
  const std::string path = entry_dir + "/" + std::string(kEntryManifestName);
  Result<Manifest> manifest = [&]() -> Result<Manifest> {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(path));
    FL_ASSIGN_OR_RETURN(std::string text, ReadTextFile(*source, kMaxManifestBytes));
    return ParseManifest(text, path);
  }();
  if (manifest.ok()) return manifest;
  return Status(manifest.status().code(),
                fmt::format("{}; the cache entry {} cannot be trusted: remove it (rm -rf) and pull "
                            "again",
                            manifest.status().message(), entry_dir));
}

// fsync() of every folder under `root` (root included), so that the folders a download created
// survive a crash once the entry is renamed into place.
Status SyncTree(const std::string& root) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory()) FL_RETURN_IF_ERROR(SyncFolder(it->path().string()));
  }
  if (ec) return ErrnoToStatus(ec.value(), "list folder", root);
  return SyncFolder(root);
}

// Re-hashes every file of an entry against its manifest.
Status RehashEntry(const std::string& entry_dir, const Manifest& manifest,
                   const TransferOptions& options, uint64_t* bytes) {
  for (const ManifestFile& f : manifest.files) {
    const std::string path = entry_dir + "/" + f.name;
    FL_ASSIGN_OR_RETURN(TransferResult hashed, HashObject(path, options));
    *bytes += hashed.bytes;
    if (hashed.bytes != f.size || hashed.sha256 != f.sha256) {
      return DataLossError(fmt::format(
          "{}: does not match the cache manifest (size {} bytes, SHA-256 {}; expected {} bytes, "
          "SHA-256 {}): the entry is damaged",
          path, hashed.bytes, hashed.sha256, f.size, f.sha256));
    }
  }
  return Status();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::string ManifestJson(const Manifest& manifest) {
  std::string out = fmt::format("{{\"format\": {}, \"created_by\": \"flashload\"", kManifestFormat);
  if (!manifest.source.empty()) {
    out += ", \"source\": ";
    format_internal::AppendJsonString(out, manifest.source);
    out += fmt::format(", \"verified\": {}", manifest.verified ? "true" : "false");
  }
  out += ",\n \"files\": [";
  for (size_t i = 0; i < manifest.files.size(); ++i) {
    const ManifestFile& f = manifest.files[i];
    out += i == 0 ? "\n  {\"name\": " : ",\n  {\"name\": ";
    format_internal::AppendJsonString(out, f.name);
    out += fmt::format(", \"size\": {}, \"sha256\": \"{}\"}}", f.size, f.sha256);
  }
  out += "\n ]}\n";
  return out;
}

Result<Manifest> ParseManifest(std::string_view json, std::string_view what) {
  simdjson::dom::parser parser;
  simdjson::dom::object root;
  if (parser.parse(json.data(), json.size(), true).get_object().get(root) != simdjson::SUCCESS) {
    return DataLossError(fmt::format(
        "{}: not a JSON object ({} bytes); push the model again to rewrite its manifest", what,
        json.size()));
  }
  int64_t format = 0;
  if (root["format"].get_int64().get(format) != simdjson::SUCCESS || format != kManifestFormat) {
    return DataLossError(fmt::format(
        "{}: \"format\" must be {} (this flashload reads manifest format {} only); upgrade "
        "flashload or push the model again",
        what, kManifestFormat, kManifestFormat));
  }
  Manifest manifest;
  std::string_view source;
  if (root["source"].get_string().get(source) == simdjson::SUCCESS) manifest.source = source;
  bool verified = true;
  if (root["verified"].get_bool().get(verified) == simdjson::SUCCESS) manifest.verified = verified;
  simdjson::dom::array files;
  if (root["files"].get_array().get(files) != simdjson::SUCCESS) {
    return DataLossError(fmt::format("{}: no \"files\" array", what));
  }
  std::set<std::string> seen;
  size_t index = 0;
  for (simdjson::dom::element e : files) {
    ManifestFile f;
    std::string_view name, sha;
    uint64_t size = 0;
    if (e["name"].get_string().get(name) != simdjson::SUCCESS || !IsSafeName(name)) {
      return DataLossError(fmt::format(
          "{}: files[{}]: \"name\" must be a relative path without '.', '..' or empty components",
          what, index));
    }
    if (e["size"].get_uint64().get(size) != simdjson::SUCCESS) {
      return DataLossError(fmt::format("{}: files[{}] ('{}'): \"size\" must be an unsigned integer",
                                       what, index, name));
    }
    if (e["sha256"].get_string().get(sha) != simdjson::SUCCESS || !IsHex64(sha)) {
      return DataLossError(fmt::format(
          "{}: files[{}] ('{}'): \"sha256\" must be 64 lower-case hex digits", what, index, name));
    }
    if (!seen.insert(std::string(name)).second) {
      return DataLossError(fmt::format("{}: files[{}]: '{}' is listed twice", what, index, name));
    }
    f.name = name;
    f.size = size;
    f.sha256 = sha;
    manifest.files.push_back(std::move(f));
    ++index;
  }
  if (manifest.files.empty()) {
    return DataLossError(fmt::format("{}: the manifest lists no files", what));
  }
  return manifest;
}

std::string CacheEntryName(std::string_view url) {
  const std::string base = StripSlashes(url);
  std::string name = LastComponent(base);
  for (char& c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (name.size() > 160) name.resize(160);
  if (name.empty() || name.front() == '.') name.insert(0, "x");
  return fmt::format("{}-{}", name, Sha256Hex(base).substr(0, 12));
}

Result<std::string> ResolvePullUrl(std::string_view url_or_ref) {
  if (LooksLikeModelRef(url_or_ref)) {
    FL_ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(url_or_ref));
    FL_ASSIGN_OR_RETURN(std::string store_url, StoreUrlFromEnv());
    return ArchiveUrl(ref, store_url);
  }
  FL_ASSIGN_OR_RETURN(const Location where, LocationOf(url_or_ref));
  if (where == Location::kLocal) {
    return InvalidArgumentError(fmt::format(
        "'{}' is neither an s3:// or http(s):// URL nor a model reference ORG/NAME@PRECISION",
        url_or_ref));
  }
  return std::string(url_or_ref);
}

Result<PullResult> Pull(std::string_view url_or_ref, const PullOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FL_ASSIGN_OR_RETURN(const std::string url, ResolvePullUrl(url_or_ref));
  std::string cache = options.cache_dir;
  if (cache.empty()) {
    FL_ASSIGN_OR_RETURN(cache, CacheDirFromEnv());
  }
  cache = StripSlashes(cache);
  if (cache.empty()) cache = "/";
  FL_RETURN_IF_ERROR(MakeFolders(cache));

  FL_ASSIGN_OR_RETURN(const Location where, LocationOf(url));
  // An http(s):// URL with a query (a presigned URL, typically) names its object by its path: the
  // query changes from one signature to the next, and no manifest can be derived from it.
  std::string identity = url;
  bool has_query = false;
  if (where == Location::kHttp) {
    const std::optional<UrlParts> parts = SplitUrl(url);
    if (parts && (parts->has_query || parts->has_fragment)) {
      has_query = true;
      identity =
          url.substr(0, url.size() - parts->after_authority.size()) + std::string(parts->path);
    }
  }
  const bool folder = identity.ends_with('/');
  if (folder && has_query) {
    return InvalidArgumentError(fmt::format(
        "{}: a folder URL cannot carry a query string; pull the folder from its plain URL, or its "
        "objects one by one",
        RedactUrl(url)));
  }
  const std::string base = StripSlashes(identity);
  const std::string entry = CacheEntryName(identity);
  const std::string unverified_note =
      has_query ? "unverified: no manifest is looked up for a URL with a query string"
                : "unverified: no manifest on the server";
  PullResult result;
  result.url = url;
  result.entry_dir = cache + "/" + entry;

  EntryLock lock;
  FL_RETURN_IF_ERROR(lock.Acquire(result.entry_dir + ".lock", options.transfer.cancel));

  std::error_code ec;
  if (fs::is_directory(result.entry_dir, ec)) {
    FL_ASSIGN_OR_RETURN(result.manifest, ReadEntryManifest(result.entry_dir));
    result.verified = result.manifest.verified;
    if (!result.verified) result.note = unverified_note;
    result.path =
        folder ? result.entry_dir : result.entry_dir + "/" + result.manifest.files.front().name;
    if (options.verify) {
      result.rehashed = true;
      Status s = RehashEntry(result.entry_dir, result.manifest, options.transfer, &result.bytes);
      if (!s.ok()) {
        // Move the damaged entry out of sight first (one rename), then delete it.
        const std::string doomed = fmt::format("{}/.partial/{}.damaged.{}", cache, entry, getpid());
        FL_RETURN_IF_ERROR(MakeFolders(cache + "/.partial"));
        if (rename(result.entry_dir.c_str(), doomed.c_str()) == 0) RemoveTree(doomed);
        return Status(s.code(), fmt::format("{}; the entry {} was removed: pull it again",
                                            s.message(), result.entry_dir));
      }
    }
    result.seconds = SecondsSince(start);
    return result;
  }

  // Leftovers of interrupted pulls of this entry: nobody else can be writing them (we hold the
  // lock).
  const std::string partial_root = cache + "/.partial";
  for (const auto& leftover : fs::directory_iterator(partial_root, ec)) {
    if (leftover.path().filename().string().starts_with(entry + ".")) {
      RemoveTree(leftover.path().string());
    }
  }
  PartialFolder partial;
  FL_RETURN_IF_ERROR(partial.Create(partial_root, entry));

  const std::string manifest_url = base + std::string(kManifestSuffix);
  Manifest manifest;
  bool have_manifest = false;
  if (!has_query) {
    Result<std::unique_ptr<Source>> source = OpenSource(manifest_url, options.transfer.open);
    if (source.ok()) {
      FL_ASSIGN_OR_RETURN(std::string text, ReadTextFile(**source, kMaxManifestBytes));
      FL_ASSIGN_OR_RETURN(manifest, ParseManifest(text, RedactUrl(manifest_url)));
      have_manifest = true;
    } else if (source.status().code() != StatusCode::kNotFound) {
      return source.status().WithContext(fmt::format("reading the manifest of {}", RedactUrl(url)));
    } else if (folder) {
      return FailedPreconditionError(fmt::format(
          "{}: no manifest at {}; a folder is pulled from the manifest `flashload push` writes: "
          "push the folder with flashload, or pull its objects one by one",
          RedactUrl(url), RedactUrl(manifest_url)));
    }
  }
  if (have_manifest && !folder && manifest.files.size() != 1) {
    return DataLossError(fmt::format("{}: the manifest of an object must list one file, not {}",
                                     RedactUrl(manifest_url), manifest.files.size()));
  }

  uint64_t total = 0;
  for (const ManifestFile& f : manifest.files) total += f.size;
  uint64_t done_before = 0;
  TransferOptions transfer = options.transfer;
  if (options.transfer.progress) {
    transfer.progress = [&](uint64_t done, uint64_t size) {
      options.transfer.progress(done_before + done, have_manifest ? total : size);
    };
  }
  if (!have_manifest) manifest.files.push_back({LastComponent(base), 0, ""});
  for (ManifestFile& f : manifest.files) {
    // s3:// keys are taken literally; an http(s):// path needs its bytes percent-encoded.
    const std::string src = !folder                  ? url
                            : where == Location::kS3 ? base + "/" + f.name
                                                     : base + "/" + UriEncode(f.name, true);
    const std::string dst = partial.path() + "/" + f.name;
    if (f.name.find('/') != std::string::npos) {
      FL_RETURN_IF_ERROR(MakeFolders(fs::path(dst).parent_path().string()));
    }
    TransferResult copied;
    if (have_manifest && f.size == 0) {
      // Nothing to fetch (and some S3-compatible stores answer a ranged GET of an empty object
      // with a bare 416): the empty file is the whole object, checked against the manifest below.
      FL_RETURN_IF_ERROR(PutBytes(dst, {}, TransferOptions{}));
      copied.sha256 = std::string(kEmptyPayloadSha256);
    } else {
      FL_ASSIGN_OR_RETURN(copied, CopyObject(src, dst, transfer));
    }
    done_before += copied.bytes;
    result.bytes += copied.bytes;
    if (!have_manifest) {
      f.size = copied.bytes;
      f.sha256 = copied.sha256;
    } else if (copied.bytes != f.size || copied.sha256 != f.sha256) {
      return DataLossError(fmt::format(
          "{}: downloaded {} bytes with SHA-256 {}, but the manifest {} says {} bytes with SHA-256 "
          "{}; the object on the server is damaged or was replaced without its manifest: nothing "
          "was kept; push the model again",
          RedactUrl(src), copied.bytes, copied.sha256, RedactUrl(manifest_url), f.size, f.sha256));
    }
  }
  manifest.source = RedactUrl(url);
  manifest.verified = have_manifest;
  const std::string json = ManifestJson(manifest);
  TransferOptions local;
  FL_RETURN_IF_ERROR(
      PutBytes(partial.path() + "/" + std::string(kEntryManifestName), AsBytes(json), local));
  FL_RETURN_IF_ERROR(SyncTree(partial.path()));
  if (rename(partial.path().c_str(), result.entry_dir.c_str()) != 0) {
    return ErrnoToStatus(errno, fmt::format("rename {} to", partial.path()), result.entry_dir);
  }
  partial.Release();
  FL_RETURN_IF_ERROR(SyncFolder(cache));

  result.downloaded = true;
  result.verified = have_manifest;
  if (!have_manifest) result.note = unverified_note;
  result.manifest = std::move(manifest);
  result.path =
      folder ? result.entry_dir : result.entry_dir + "/" + result.manifest.files.front().name;
  result.seconds = SecondsSince(start);
  return result;
}

Result<PushResult> Push(const std::string& local, const std::string& dst,
                        const TransferOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FL_ASSIGN_OR_RETURN(const Location to, LocationOf(dst));
  if (to != Location::kS3) {
    return InvalidArgumentError(fmt::format(
        "{}: push writes to s3:// (s3://bucket/prefix/ or s3://bucket/prefix/name); use `flashload "
        "cp` for other copies",
        RedactUrl(dst)));
  }
  std::error_code ec;
  const fs::file_status st = fs::status(local, ec);
  if (ec || !fs::exists(st)) {
    return NotFoundError(fmt::format("{}: no such file or folder to push", local));
  }
  const std::string name = LastComponent(local);
  FL_ASSIGN_OR_RETURN(const S3Location where, ParseS3Uri(dst));
  // "s3://bucket/prefix/" and "s3://bucket" take the local name.
  const std::string target =
      where.is_prefix() ? (dst.ends_with('/') ? dst : dst + "/") + name : dst;
  PushResult result;

  // (local path, relative name) of each file to upload.
  std::vector<std::pair<std::string, std::string>> files;
  std::string object_base;  // the key prefix of the files (folder) or the object (file)
  if (fs::is_directory(st)) {
    object_base = StripSlashes(target);
    for (auto it = fs::recursive_directory_iterator(local, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const fs::path& p = it->path();
      if (it->is_symlink()) {
        return InvalidArgumentError(fmt::format(
            "{}: is a symbolic link; push uploads regular files only: copy what it points to "
            "into the folder",
            p.string()));
      }
      if (it->is_regular_file()) {
        files.emplace_back(p.string(), fs::relative(p, local).generic_string());
      }
    }
    if (ec) return ErrnoToStatus(ec.value(), "list folder", local);
    if (files.empty()) {
      return InvalidArgumentError(fmt::format("{}: the folder holds no files to push", local));
    }
    std::sort(files.begin(), files.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
    for (const auto& [path, rel] : files) {
      if (!IsSafeName(rel)) {
        return InvalidArgumentError(
            fmt::format("{}: the name '{}' cannot be listed in a manifest (names starting with "
                        "'.flashload' are reserved, except the compile cache's, under "
                        "'.flashload/compile-cache/'); rename it",
                        path, rel));
      }
    }
    result.url = object_base + "/";
  } else {
    if (!fs::is_regular_file(st)) {
      return InvalidArgumentError(fmt::format("{}: not a regular file or folder", local));
    }
    object_base = target;
    files.emplace_back(local, LastComponent(target));
    result.url = target;
  }
  uint64_t total = 0;
  for (const auto& f : files) total += fs::file_size(f.first, ec);
  uint64_t done_before = 0;
  TransferOptions transfer = options;
  if (options.progress) {
    transfer.progress = [&](uint64_t done, uint64_t) {
      options.progress(done_before + done, total);
    };
  }
  for (const auto& [path, rel] : files) {
    const std::string key =
        fs::is_directory(st) ? fmt::format("{}/{}", object_base, rel) : object_base;
    FL_ASSIGN_OR_RETURN(TransferResult copied, CopyObject(path, key, transfer));
    done_before += copied.bytes;
    result.bytes += copied.bytes;
    result.parts += copied.parts;
    result.manifest.files.push_back({rel, copied.bytes, copied.sha256});
  }
  result.manifest_url = StripSlashes(object_base) + std::string(kManifestSuffix);
  const std::string json = ManifestJson(result.manifest);
  FL_RETURN_IF_ERROR(PutBytes(result.manifest_url, AsBytes(json), options));
  result.seconds = SecondsSince(start);
  return result;
}

}  // namespace flashload::store
