#include "flashload/model_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <set>

#include "format/json_text.h"
#include "format/layout_rules.h"
#include "io/local_file.h"
#include "io/read_text.h"

namespace flashload {
namespace {

namespace fs = std::filesystem;
using format::EndsWith;
using format::IsIndexName;
using format::IsWeightsName;
using format::kIndexSuffix;
using format::kWeightsSuffix;
using format_internal::Quote;

const char* KindOfNonFile(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

// The local file system. Types are checked with stat/lstat before anything is opened, and text is
// read with O_NONBLOCK, so a FIFO never blocks a resolution.
class LocalStore final : public ModelStore {
 public:
  Result<EntryKind> Stat(const std::string& path) const override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const int err = errno;
      if (err == ELOOP) {
        return InvalidArgumentError(fmt::format(
            "{}: a symbolic link loop (ELOOP: too many levels of symbolic links); point the link "
            "at the real file or folder",
            path));
      }
      if (err != ENOENT && err != ENOTDIR) return ErrnoToStatus(err, "stat", path);
      struct stat link {};
      if (::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
        std::error_code ec;
        const fs::path target = fs::read_symlink(path, ec);
        return NotFoundError(fmt::format(
            "{}: a symbolic link to {}, which does not exist (a dangling link, as an interrupted "
            "download into a hub cache leaves); download the model again or remove the link",
            path, ec ? std::string("an unreadable target") : target.string()));
      }
      return EntryKind::kMissing;
    }
    if (S_ISREG(st.st_mode)) return EntryKind::kFile;
    if (S_ISDIR(st.st_mode)) return EntryKind::kFolder;
    return InvalidArgumentError(
        fmt::format("{} is {}, not a regular file or folder; point flashload at the weights", path,
                    KindOfNonFile(st.st_mode)));
  }
  Result<std::vector<Entry>> List(const std::string& folder) const override {
    std::vector<Entry> out;
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(folder, ec)) {
      std::error_code kind_ec;
      const EntryKind kind = e.is_regular_file(kind_ec) ? EntryKind::kFile
                             : e.is_directory(kind_ec)  ? EntryKind::kFolder
                                                        : EntryKind::kMissing;
      out.push_back({e.path().filename().string(), kind});
    }
    if (ec) return ErrnoToStatus(ec.value(), "list", folder);
    return out;
  }
  Result<std::string> ReadText(const std::string& path) const override {
    // OpenLocal refuses a FIFO, a device or a folder without waiting on it (O_NONBLOCK).
    Result<io_internal::LocalFile> file = io_internal::OpenLocal(path, /*direct=*/false);
    if (!file.ok()) {
      // A dangling link is named as one.
      if (file.status().code() == StatusCode::kNotFound) FL_RETURN_IF_ERROR(Stat(path).status());
      return file.status();
    }
    const int fd = file->fd.get();
    return ReadTextFile(path, file->size, [&](uint64_t offset, std::span<std::byte> dst) {
      return io_internal::PreadFully(fd, offset, dst, /*alignment=*/1, path);
    });
  }
  std::string Canonical(const std::string& path) const override {
    return fs::absolute(path).lexically_normal().string();
  }
};

std::string Listing(const std::vector<std::string>& names) {
  if (names.empty()) return "nothing";
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string Parent(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Status AddIndex(const ModelStore& store, const std::string& index, const std::string& component,
                ModelLayout& layout) {
  FL_ASSIGN_OR_RETURN(const std::string text, store.ReadText(index));
  FL_ASSIGN_OR_RETURN(auto weight_map, ParseIndexJson(text, index));
  std::set<std::string> shards;
  auto& abs_map = layout.weight_maps[component];
  const std::string dir = Parent(index);
  for (const auto& [tensor, shard] : weight_map) {
    const std::string abs = store.Canonical(JoinModelPath(dir, shard));
    shards.insert(abs);
    abs_map.emplace(tensor, abs);
  }
  for (const std::string& shard : shards) {
    Result<ModelStore::EntryKind> stat = store.Stat(shard);
    if (!stat.ok()) return stat.status().WithContext(fmt::format("{}: names shard", index));
    const ModelStore::EntryKind kind = *stat;
    if (kind != ModelStore::EntryKind::kFile) {
      return NotFoundError(
          fmt::format("{}: names shard {}, which is missing", index, Quote(BaseName(shard))));
    }
    layout.files.push_back({component, shard});
  }
  return Status::Ok();
}

// Resolves a folder holding one index or one weights file. Returns false (no error) when the folder
// holds no weights at all and `allow_empty`.
Result<bool> ResolveFolder(const ModelStore& store, const std::string& dir,
                           const std::string& component, const std::string& variant,
                           bool allow_empty, ModelLayout& layout) {
  std::vector<std::string> indexes, weights, others, broken_indexes, broken_weights;
  FL_ASSIGN_OR_RETURN(const std::vector<ModelStore::Entry> entries, store.List(dir));
  for (const ModelStore::Entry& e : entries) {
    const std::string& name = e.name;
    if (e.kind == ModelStore::EntryKind::kMissing &&
        (IsIndexName(name, variant) || EndsWith(name, kWeightsSuffix))) {
      // An index or weights file that cannot be read (a dangling link, a FIFO): never skipped, or
      // a folder with a broken index would load whatever shard is there. An index's own shards
      // are checked by AddIndex, which names the index.
      (IsIndexName(name, variant) ? broken_indexes : broken_weights).push_back(name);
      continue;
    }
    if (e.kind != ModelStore::EntryKind::kFile) continue;
    if (IsIndexName(name, variant)) {
      indexes.push_back(name);
    } else if (IsWeightsName(name, variant)) {
      weights.push_back(name);
    } else if (EndsWith(name, ".bin") || EndsWith(name, ".pt") || EndsWith(name, ".ckpt") ||
               EndsWith(name, kWeightsSuffix)) {
      others.push_back(name);
    }
  }
  // Stat() says what the entry is (and errors); kFile means it became a file since it was listed.
  const auto broken = [&](const std::string& name) -> Status {
    FL_ASSIGN_OR_RETURN(const ModelStore::EntryKind kind, store.Stat(JoinModelPath(dir, name)));
    if (kind == ModelStore::EntryKind::kFile) {
      return UnavailableError(fmt::format("{}: changed while the folder was being read; retry",
                                          JoinModelPath(dir, name)));
    }
    return NotFoundError(
        fmt::format("{}: listed in the folder but gone; retry once the "
                    "download is complete",
                    JoinModelPath(dir, name)));
  };
  std::sort(broken_indexes.begin(), broken_indexes.end());
  std::sort(broken_weights.begin(), broken_weights.end());
  if (!broken_indexes.empty()) return broken(broken_indexes.front());
  std::sort(indexes.begin(), indexes.end());
  std::sort(weights.begin(), weights.end());
  std::sort(others.begin(), others.end());
  if (indexes.size() > 1) {
    // Prefer the conventional names when a folder holds several indexes.
    for (std::string_view preferred : {"model", "diffusion_pytorch_model"}) {
      const std::string name =
          variant.empty() ? fmt::format("{}{}", preferred, kIndexSuffix)
                          : fmt::format("{}.safetensors.index.{}.json", preferred, variant);
      if (std::find(indexes.begin(), indexes.end(), name) != indexes.end()) {
        indexes = {name};
        break;
      }
    }
    if (indexes.size() > 1) {
      return InvalidArgumentError(
          fmt::format("{}: several indexes ({}); name the one to load", dir, Listing(indexes)));
    }
  }
  if (indexes.size() == 1) {
    FL_RETURN_IF_ERROR(AddIndex(store, JoinModelPath(dir, indexes[0]), component, layout));
    return true;
  }
  if (!broken_weights.empty()) return broken(broken_weights.front());
  if (weights.size() == 1) {
    layout.files.push_back({component, store.Canonical(JoinModelPath(dir, weights[0]))});
    return true;
  }
  const std::string what =
      variant.empty() ? std::string("*.safetensors") : fmt::format("*.{}.safetensors", variant);
  if (weights.size() > 1) {
    return NotFoundError(fmt::format(
        "{}: {} {} files ({}) but no *.safetensors.index.json saying which tensor is in which", dir,
        weights.size(), what, Listing(weights)));
  }
  if (allow_empty && others.empty()) return false;
  std::string hint;
  if (std::any_of(others.begin(), others.end(),
                  [](const std::string& n) { return !EndsWith(n, kWeightsSuffix); })) {
    hint = ": PyTorch checkpoints must be converted to safetensors first";
  }
  return NotFoundError(
      fmt::format("{}: no {} weights or index (found {}){}", dir, what, Listing(others), hint));
}

Status ResolveDiffusers(const ModelStore& store, const std::string& root,
                        const ResolveOptions& options, ModelLayout& layout) {
  const std::string index = JoinModelPath(root, "model_index.json");
  FL_ASSIGN_OR_RETURN(const std::string text, store.ReadText(index));
  FL_ASSIGN_OR_RETURN(const std::vector<std::string> components,
                      format::ParseModelIndexComponents(text, index));
  for (const std::string& component : components) {
    const std::string dir = JoinModelPath(root, component);
    FL_ASSIGN_OR_RETURN(const ModelStore::EntryKind kind, store.Stat(dir));
    if (kind != ModelStore::EntryKind::kFolder) {
      return NotFoundError(fmt::format("{}: lists component {} but the folder {} is missing", index,
                                       Quote(component), dir));
    }
    FL_RETURN_IF_ERROR(
        ResolveFolder(store, dir, component, options.variant, true, layout).status());
  }
  if (layout.files.empty()) {
    return NotFoundError(fmt::format("{}: no component folder holds safetensors weights{}", root,
                                     options.variant.empty()
                                         ? std::string()
                                         : fmt::format(" for variant {}", Quote(options.variant))));
  }
  return Status::Ok();
}

}  // namespace

const ModelStore& LocalModelStore() {
  static const LocalStore store;
  return store;
}

std::string JoinModelPath(const std::string& folder, const std::string& name) {
  if (folder.empty()) return name;
  if (folder.back() == '/') return folder + name;
  return folder + "/" + name;
}

Result<ModelLayout> ResolveModel(const std::string& path, const ResolveOptions& options) {
  return ResolveModel(LocalModelStore(), path, options);
}

Result<ModelLayout> ResolveModel(const ModelStore& store, const std::string& path,
                                 const ResolveOptions& options) {
  ModelLayout layout;
  layout.root = path;
  FL_ASSIGN_OR_RETURN(const ModelStore::EntryKind kind, store.Stat(path));
  if (kind == ModelStore::EntryKind::kMissing) {
    return NotFoundError(fmt::format("{}: no such file or folder", path));
  }
  if (kind == ModelStore::EntryKind::kFile) {
    if (EndsWith(path, ".json")) {
      layout.kind = ModelLayout::Kind::kShardedIndex;
      FL_RETURN_IF_ERROR(AddIndex(store, path, "", layout));
    } else {
      layout.kind = ModelLayout::Kind::kSingleFile;
      layout.files.push_back({"", store.Canonical(path)});
    }
    return layout;
  }
  FL_ASSIGN_OR_RETURN(const ModelStore::EntryKind index_kind,
                      store.Stat(JoinModelPath(path, "model_index.json")));
  if (index_kind == ModelStore::EntryKind::kFile) {
    layout.kind = ModelLayout::Kind::kDiffusers;
    FL_RETURN_IF_ERROR(ResolveDiffusers(store, path, options, layout));
    return layout;
  }
  FL_RETURN_IF_ERROR(ResolveFolder(store, path, "", options.variant, false, layout).status());
  layout.kind =
      layout.weight_maps.empty() ? ModelLayout::Kind::kFolder : ModelLayout::Kind::kShardedIndex;
  return layout;
}

}  // namespace flashload
