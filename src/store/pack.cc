#include "store/pack.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "flashload/convert.h"
#include "flashload/header.h"
#include "flashload/writer.h"
#include "io/local_file.h"
#include "store/model_ref.h"
#include "store/seekable_writer.h"
#include "store/tar_writer.h"

namespace flashload::store {
namespace fs = std::filesystem;
using io_internal::LocalFd;

std::string_view ArchiveFormatName(ArchiveFormat format) {
  return format == ArchiveFormat::kTar ? "tar" : "tar.zst";
}

std::string_view ArchiveExtension(ArchiveFormat format) {
  return format == ArchiveFormat::kTar ? ".tar" : ".tar.zst";
}

Result<ArchiveFormat> ParseArchiveFormat(std::string_view text) {
  if (text == "tar") return ArchiveFormat::kTar;
  if (text == "tar.zst" || text == "tzst") return ArchiveFormat::kTarZstd;
  return InvalidArgumentError(fmt::format("archive format '{}': expected tar or tar.zst", text));
}

namespace {

constexpr uint64_t kChunk = uint64_t{8} << 20;
constexpr uint64_t kProgressStep = uint64_t{64} << 20;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

const char* KindOf(fs::file_type t) {
  switch (t) {
    case fs::file_type::symlink:
      return "a symbolic link";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::fifo:
      return "a FIFO (named pipe)";
    case fs::file_type::socket:
      return "a socket";
    default:
      return "not a regular file or folder";
  }
}

Status ListInto(const fs::path& root, const fs::path& rel, std::vector<PackEntry>& out) {
  std::error_code ec;
  fs::directory_iterator it(root / rel, ec);
  if (ec) return ErrnoToStatus(ec.value(), "list folder", (root / rel).string());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return ErrnoToStatus(ec.value(), "list folder", (root / rel).string());
    const fs::path child_rel = rel / it->path().filename();
    const fs::path child = root / child_rel;
    const fs::file_status st = fs::symlink_status(child, ec);
    if (ec) return ErrnoToStatus(ec.value(), "lstat", child.string());
    const std::string rel_text = child_rel.generic_string();
    if (fs::is_directory(st)) {
      out.push_back({rel_text, true, 0});
      FL_RETURN_IF_ERROR(ListInto(root, child_rel, out));
    } else if (fs::is_regular_file(st)) {
      const uint64_t size = fs::file_size(child, ec);
      if (ec) return ErrnoToStatus(ec.value(), "stat", child.string());
      out.push_back({rel_text, false, size});
    } else {
      return InvalidArgumentError(fmt::format(
          "{} is {}: flashload pack takes regular files and folders only{}", child.string(),
          KindOf(st.type()),
          st.type() == fs::file_type::symlink
              ? " (it follows no link, inside the folder or not); replace the link with a copy "
                "of its target"
              : "; move it out of the folder"));
    }
  }
  return Status::Ok();
}

Result<LocalFd> OpenInput(const std::string& path, uint64_t expected_size) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  LocalFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "fstat", path);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != expected_size) {
    return FailedPreconditionError(fmt::format(
        "{} changed while it was packed (now {} bytes, listed with {}); pack it again when "
        "nothing writes to the folder",
        path, static_cast<uint64_t>(st.st_size), expected_size));
  }
  return owned;
}

// Reads exactly dst.size() bytes at `offset`; kDataLoss when the file ends first.
Status ReadExactly(int fd, uint64_t offset, std::span<std::byte> dst, const std::string& path) {
  FL_ASSIGN_OR_RETURN(size_t n, io_internal::PreadFully(fd, offset, dst, 1, path));
  if (n != dst.size()) {
    return DataLossError(fmt::format(
        "{}: the file ends at byte offset {}, before the {} bytes expected there; it changed "
        "while it was packed, or is truncated",
        path, offset + n, dst.size()));
  }
  return Status::Ok();
}

Result<Header> ReadSafetensorsHeader(int fd, uint64_t size, const std::string& path) {
  std::vector<std::byte> prefix(std::min<uint64_t>(size, 4096));
  FL_RETURN_IF_ERROR(ReadExactly(fd, 0, prefix, path));
  FL_ASSIGN_OR_RETURN(uint64_t n, ParseHeaderLength(prefix, size, path));
  std::string json(n, '\0');
  FL_RETURN_IF_ERROR(ReadExactly(
      fd, 8, std::span<std::byte>(reinterpret_cast<std::byte*>(json.data()), json.size()), path));
  return ParseHeaderJson(json, n, size, path);
}

Result<Dtype> PrecisionDtype(std::string_view precision) {
  if (precision == "fp16") return Dtype::kF16;
  if (precision == "bf16") return Dtype::kBF16;
  if (precision == "fp32") return Dtype::kF32;
  return InvalidArgumentError(
      fmt::format("--precision '{}': expected fp16, bf16 or fp32", precision));
}

bool IsPackFloat(Dtype d) { return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16; }

// The conversion of one .safetensors file: its new header and, for each tensor of the new
// layout, the tensor of the input it comes from.
struct ConvertedFile {
  Header input;
  SerializedHeader output;
  std::vector<const TensorInfo*> sources;  // per output.layout entry
  uint64_t size = 0;                       // of the converted file
  uint64_t converted_tensors = 0;
};

Result<std::optional<ConvertedFile>> PlanConversion(int fd, uint64_t size, const std::string& path,
                                                    Dtype target, std::string_view precision) {
  ConvertedFile c;
  FL_ASSIGN_OR_RETURN(c.input, ReadSafetensorsHeader(fd, size, path));
  std::vector<TensorToWrite> tensors;
  tensors.reserve(c.input.tensors.size());
  for (const TensorInfo& t : c.input.tensors) {
    TensorToWrite w;
    w.name = t.name;
    w.dtype = t.dtype;
    if (IsPackFloat(t.dtype) && t.dtype != target) {
      w.dtype = target;
      ++c.converted_tensors;
    }
    w.shape = t.shape;
    w.fill = [](std::span<std::byte>, uint64_t) {};  // the data is streamed, never filled
    tensors.push_back(std::move(w));
  }
  if (c.converted_tensors == 0) return std::optional<ConvertedFile>();
  WriteOptions wo;
  wo.metadata = c.input.metadata.value_or(std::map<std::string, std::string>{});
  (*wo.metadata)["flashload.precision"] = std::string(precision);
  FL_ASSIGN_OR_RETURN(c.output, SerializeHeader(tensors, wo));
  c.size = c.output.bytes.size();
  for (const TensorInfo& t : c.output.layout) {
    const TensorInfo* src = c.input.Find(t.name);
    if (src == nullptr) {
      return InternalError(fmt::format("{}: tensor '{}' lost while converting", path, t.name));
    }
    c.sources.push_back(src);
    c.size = std::max(c.size, c.output.bytes.size() + t.data_end);
  }
  return std::optional<ConvertedFile>(std::move(c));
}

// Owns the temporary file an archive is written to; removes it unless committed.
class TempArchive {
 public:
  static Result<std::unique_ptr<TempArchive>> Create(const std::string& final_path) {
    auto t = std::unique_ptr<TempArchive>(new TempArchive());
    t->final_ = final_path;
    std::string templ = final_path + ".tmp.XXXXXX";
    const int fd = ::mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "create", templ);
    t->fd_ = LocalFd(fd);
    t->path_ = templ;
    if (::fchmod(fd, 0644) != 0) return ErrnoToStatus(errno, "chmod", templ);
    return t;
  }
  ~TempArchive() {
    if (!committed_) {
      fd_ = LocalFd();
      ::unlink(path_.c_str());
    }
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

  Status Commit() {
    if (::fsync(fd_.get()) != 0) return ErrnoToStatus(errno, "fsync", path_);
    const int fd = fd_.get();
    fd_ = LocalFd();  // LocalFd's close; a close error after fsync loses nothing written
    (void)fd;
    if (::rename(path_.c_str(), final_.c_str()) != 0) {
      return ErrnoToStatus(errno, "rename", fmt::format("{} to {}", path_, final_));
    }
    committed_ = true;
    const std::string dir = fs::path(final_).parent_path().string();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);  // best effort: the archive is complete either way
      ::close(dfd);
    }
    return Status::Ok();
  }

 private:
  TempArchive() = default;
  std::string final_;
  std::string path_;
  LocalFd fd_;
  bool committed_ = false;
};

struct OutputPlan {
  std::string path;
  ArchiveFormat format = ArchiveFormat::kTarZstd;
  std::string precision;
};

Result<std::string> InferPrecision(const std::string& dir, const std::vector<PackEntry>& entries) {
  std::set<Dtype> floats;
  for (const PackEntry& e : entries) {
    if (e.directory || !EndsWith(e.path, ".safetensors")) continue;
    const std::string path = dir + "/" + e.path;
    FL_ASSIGN_OR_RETURN(LocalFd fd, OpenInput(path, e.size));
    FL_ASSIGN_OR_RETURN(Header h, ReadSafetensorsHeader(fd.get(), e.size, path));
    for (const TensorInfo& t : h.tensors) {
      if (IsPackFloat(t.dtype)) floats.insert(t.dtype);
    }
  }
  if (floats.size() == 1) {
    switch (*floats.begin()) {
      case Dtype::kF16:
        return std::string("fp16");
      case Dtype::kBF16:
        return std::string("bf16");
      default:
        return std::string("fp32");
    }
  }
  return InvalidArgumentError(fmt::format(
      "{}: cannot name the archive's precision: its .safetensors files hold {}; pass "
      "--precision fp16, bf16 or fp32 (which also converts the tensors)",
      dir, floats.empty() ? "no F32, F16 or BF16 tensor" : "tensors of several float dtypes"));
}

Result<OutputPlan> PlanOutput(const PackOptions& o, const std::vector<PackEntry>& entries) {
  OutputPlan plan;
  plan.precision = o.precision;
  std::error_code ec;
  if (fs::is_directory(o.output, ec)) {
    if (o.name.empty()) {
      return InvalidArgumentError(fmt::format(
          "-o {} is a folder: pass --name ORG/NAME so the archive can be named "
          "models--ORG--NAME--PRECISION.tar.zst there, or give -o a file path ending in .tar.zst "
          "or .tar",
          o.output));
    }
    if (plan.precision.empty()) {
      FL_ASSIGN_OR_RETURN(plan.precision, InferPrecision(o.input_dir, entries));
    }
    FL_ASSIGN_OR_RETURN(ModelRef ref, ParseModelRef(o.name + "@" + plan.precision));
    plan.format = o.format.value_or(ArchiveFormat::kTarZstd);
    plan.path = (fs::path(o.output) / ArchiveName(ref, ArchiveExtension(plan.format))).string();
    return plan;
  }
  std::optional<ArchiveFormat> by_extension;
  if (EndsWith(o.output, ".tar.zst") || EndsWith(o.output, ".tzst")) {
    by_extension = ArchiveFormat::kTarZstd;
  } else if (EndsWith(o.output, ".tar")) {
    by_extension = ArchiveFormat::kTar;
  }
  if (by_extension && o.format && *by_extension != *o.format) {
    return InvalidArgumentError(
        fmt::format("-o {} names a .{} archive but --format says {}; make them agree", o.output,
                    ArchiveFormatName(*by_extension), ArchiveFormatName(*o.format)));
  }
  if (!by_extension && !o.format) {
    return InvalidArgumentError(fmt::format(
        "-o {}: end the archive's name with .tar.zst or .tar (or pass --format), or give an "
        "existing folder with --name",
        o.output));
  }
  plan.format = by_extension ? *by_extension : *o.format;
  plan.path = o.output;
  const fs::path parent = fs::path(o.output).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return NotFoundError(fmt::format("-o {}: the folder {} does not exist; create it first",
                                     o.output, parent.string()));
  }
  return plan;
}

bool IsInside(const fs::path& child, const fs::path& dir) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(child, ec);
  const fs::path d = fs::weakly_canonical(dir, ec);
  auto ci = c.begin();
  for (auto di = d.begin(); di != d.end(); ++di, ++ci) {
    if (di->empty()) continue;  // a trailing separator
    if (ci == c.end() || *ci != *di) return false;
  }
  return true;
}

// Writes the members of the archive through `tar`.
class Packer {
 public:
  Packer(const PackOptions& o, TarWriter& tar, PackSummary& summary, uint64_t total)
      : o_(o), tar_(tar), summary_(summary), total_(total), buffer_(kChunk) {}

  Status AddFile(const PackEntry& e, std::optional<Dtype> target) {
    const std::string path = o_.input_dir + "/" + e.path;
    FL_ASSIGN_OR_RETURN(LocalFd fd, OpenInput(path, e.size));
    if (target && EndsWith(e.path, ".safetensors")) {
      FL_ASSIGN_OR_RETURN(std::optional<ConvertedFile> c,
                          PlanConversion(fd.get(), e.size, path, *target, summary_.precision));
      if (c) return AddConverted(e, fd.get(), path, *c);
    }
    FL_RETURN_IF_ERROR(tar_.BeginFile(e.path, e.size));
    for (uint64_t at = 0; at < e.size;) {
      const uint64_t n = std::min<uint64_t>(kChunk, e.size - at);
      std::span<std::byte> chunk(buffer_.data(), n);
      FL_RETURN_IF_ERROR(ReadExactly(fd.get(), at, chunk, path));
      FL_RETURN_IF_ERROR(tar_.WriteData(chunk));
      at += n;
      Advance(n);
    }
    return tar_.EndFile();
  }

  void Advance(uint64_t n) {
    done_ += n;
    if (o_.progress && done_ - reported_ >= kProgressStep) {
      reported_ = done_;
      o_.progress(done_, total_);
    }
  }
  void Report() {
    if (o_.progress) o_.progress(done_, total_);
  }

 private:
  Status AddConverted(const PackEntry& e, int fd, const std::string& path, const ConvertedFile& c) {
    FL_RETURN_IF_ERROR(tar_.BeginFile(e.path, c.size));
    FL_RETURN_IF_ERROR(tar_.WriteData(AsBytes(c.output.bytes)));
    uint64_t written = c.output.bytes.size();
    std::vector<std::byte> converted;
    for (size_t i = 0; i < c.output.layout.size(); ++i) {
      const TensorInfo& out = c.output.layout[i];
      const TensorInfo& in = *c.sources[i];
      // Gaps the layout leaves between tensors (none with 8-byte alignment and whole bytes, but
      // the writer owns the layout) are zeros.
      const uint64_t start = c.output.bytes.size() + out.data_begin;
      FL_RETURN_IF_ERROR(WriteZeros(start - written));
      written = start;
      const uint64_t in_elem = DtypeBits(in.dtype) / 8;
      const uint64_t out_elem = DtypeBits(out.dtype) / 8;
      const bool convert = in.dtype != out.dtype;
      const uint64_t elems_per_chunk = convert ? kChunk / std::max(in_elem, out_elem) : 0;
      for (uint64_t at = 0; at < in.byte_size();) {
        uint64_t n = std::min<uint64_t>(kChunk, in.byte_size() - at);
        if (convert) n = std::min<uint64_t>(n, elems_per_chunk * in_elem);
        std::span<std::byte> chunk(buffer_.data(), n);
        FL_RETURN_IF_ERROR(
            ReadExactly(fd, c.input.data_offset() + in.data_begin + at, chunk, path));
        if (convert) {
          const uint64_t count = n / in_elem;
          converted.resize(count * out_elem);
          Status s = ConvertElements(in.dtype, out.dtype, chunk.data(), converted.data(), count);
          if (!s.ok()) {
            return s.WithContext(fmt::format("{}: tensor '{}' at byte offset {}", path, in.name,
                                             c.input.data_offset() + in.data_begin + at));
          }
          FL_RETURN_IF_ERROR(tar_.WriteData(converted));
          written += converted.size();
        } else {
          FL_RETURN_IF_ERROR(tar_.WriteData(chunk));
          written += n;
        }
        at += n;
        Advance(n);
      }
    }
    FL_RETURN_IF_ERROR(WriteZeros(c.size - written));
    // Bytes of the input not inside any tensor (its header) still count as packed.
    Advance(e.size - c.input.data_size());
    ++summary_.converted_files;
    summary_.converted_tensors += c.converted_tensors;
    return tar_.EndFile();
  }

  Status WriteZeros(uint64_t n) {
    static const std::vector<std::byte> kZeros(4096);
    while (n > 0) {
      const uint64_t k = std::min<uint64_t>(n, kZeros.size());
      FL_RETURN_IF_ERROR(tar_.WriteData(std::span<const std::byte>(kZeros.data(), k)));
      n -= k;
    }
    return Status::Ok();
  }

  const PackOptions& o_;
  TarWriter& tar_;
  PackSummary& summary_;
  uint64_t total_;
  uint64_t done_ = 0;
  uint64_t reported_ = 0;
  std::vector<std::byte> buffer_;
};

}  // namespace

Result<std::vector<PackEntry>> ListPackEntries(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::is_directory(st)) {
    return InvalidArgumentError(
        fmt::format("{} is not a folder; flashload pack takes a model folder", dir));
  }
  std::vector<PackEntry> entries;
  FL_RETURN_IF_ERROR(ListInto(fs::path(dir), fs::path(), entries));
  // Bytewise order of the '/'-separated paths (std::string compares as unsigned bytes).
  std::sort(entries.begin(), entries.end(),
            [](const PackEntry& a, const PackEntry& b) { return a.path < b.path; });
  return entries;
}

bool IsCompileCachePath(std::string_view path) {
  if (!path.starts_with(kCompileCacheFolder)) return false;
  return path.size() == kCompileCacheFolder.size() || path[kCompileCacheFolder.size()] == '/';
}

bool RemoveCompileCache(std::vector<PackEntry>& entries) {
  const size_t before = entries.size();
  std::erase_if(entries, [](const PackEntry& e) { return IsCompileCachePath(e.path); });
  if (entries.size() == before) return false;
  const std::string_view parent = kCompileCacheFolder.substr(0, kCompileCacheFolder.find('/'));
  const bool parent_holds_more =
      std::any_of(entries.begin(), entries.end(), [&](const PackEntry& e) {
        return e.path.size() > parent.size() && e.path.starts_with(parent) &&
               e.path[parent.size()] == '/';
      });
  if (!parent_holds_more) {
    std::erase_if(entries, [&](const PackEntry& e) { return e.directory && e.path == parent; });
  }
  return true;
}

Result<PackSummary> PackModel(const PackOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  std::optional<Dtype> target;
  if (!o.precision.empty()) {
    FL_ASSIGN_OR_RETURN(target, PrecisionDtype(o.precision));
  }
  FL_ASSIGN_OR_RETURN(std::vector<PackEntry> entries, ListPackEntries(o.input_dir));
  const bool compile_cache_left_out = !o.compile_cache && RemoveCompileCache(entries);
  FL_ASSIGN_OR_RETURN(OutputPlan out, PlanOutput(o, entries));
  if (IsInside(out.path, o.input_dir)) {
    return InvalidArgumentError(fmt::format(
        "the archive {} would be inside the folder being packed ({}); write it elsewhere", out.path,
        o.input_dir));
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(out.path, ec)) && !o.force) {
    return FailedPreconditionError(fmt::format("{} exists; pass --force to replace it", out.path));
  }

  PackSummary summary;
  summary.archive = out.path;
  summary.format = out.format;
  summary.precision = out.precision;
  summary.compile_cache_left_out = compile_cache_left_out;
  uint64_t total = 0;
  for (const PackEntry& e : entries) total += e.size;
  summary.bytes_in = total;

  FL_ASSIGN_OR_RETURN(std::unique_ptr<TempArchive> temp, TempArchive::Create(out.path));
  ByteSink file_sink = FdByteSink(temp->fd(), temp->path());
  std::unique_ptr<SeekableZstdWriter> zstd;
  TarWriter::WriteFn write = file_sink;
  TarWriter::BoundaryFn boundary;
  if (out.format == ArchiveFormat::kTarZstd) {
    SeekableWriterOptions so;
    so.level = o.level;
    so.frame_bytes = o.frame_bytes;
    so.threads = o.threads;
    FL_ASSIGN_OR_RETURN(zstd, SeekableZstdWriter::Create(file_sink, out.path, so));
    SeekableZstdWriter* z = zstd.get();
    write = [z](std::span<const std::byte> b) { return z->Write(b); };
    boundary = [z] { return z->EndFrame(); };
  }
  TarWriter tar(write, boundary, out.path);
  Packer packer(o, tar, summary, total);
  for (const PackEntry& e : entries) {
    if (e.directory) {
      FL_RETURN_IF_ERROR(tar.AddDirectory(e.path));
      ++summary.directories;
    } else {
      FL_RETURN_IF_ERROR(packer.AddFile(e, target));
      ++summary.files;
      if (IsCompileCachePath(e.path)) ++summary.compile_cache_files;
    }
  }
  FL_RETURN_IF_ERROR(tar.Finish());
  summary.tar_bytes = tar.offset();
  summary.bytes_out = tar.offset();
  if (zstd) {
    FL_RETURN_IF_ERROR(zstd->Finish());
    summary.bytes_out = zstd->compressed_bytes();
    summary.frames = zstd->frames();
  }
  FL_RETURN_IF_ERROR(temp->Commit());
  packer.Report();
  summary.members = tar.members();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace flashload::store
