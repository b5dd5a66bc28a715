#include "store/convert.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <span>

#include "flashload/convert.h"
#include "flashload/model.h"
#include "flashload/writer.h"
#include "format/json_text.h"
#include "format/torch_checkpoint.h"
#include "format/zip_dir.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;
using format_internal::Quote;

// A file mapped read-only for the life of the conversion.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open", path);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "fstat", path);
    }
    auto f = std::unique_ptr<MappedFile>(new MappedFile);
    f->size_ = static_cast<uint64_t>(st.st_size);
    if (f->size_ > 0) {
      void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return ErrnoToStatus(err, "mmap", path);
      }
      ::madvise(p, f->size_, MADV_SEQUENTIAL);
      f->data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
    return f;
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  MappedFile() = default;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

// One tensor ready to write: where its elements are and what they become.
struct TensorPlan {
  TorchTensor tensor;
  const std::byte* storage = nullptr;  // first byte of the tensor's storage view
  Dtype out_dtype = Dtype::kF32;
  uint64_t out_bytes = 0;
};

// One checkpoint parsed and checked, its file mapped.
struct PreparedCheckpoint {
  std::string input;
  std::string output;
  std::unique_ptr<MappedFile> file;
  std::vector<TensorPlan> tensors;
  ConvertedFile report;
};

uint64_t ElementBytes(Dtype d) { return DtypeBits(d) / 8; }

bool Convertible(Dtype d) {
  return d == Dtype::kF32 || d == Dtype::kF64 || d == Dtype::kF16 || d == Dtype::kBF16;
}

std::string RandomSuffix() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%08x%08x", rd(), rd());
  return buf;
}

// The storages of a zip checkpoint: `<archive>/data/<key>` entries.
Status ResolveZip(PreparedCheckpoint& ckpt, const ConvertOptions& options, TorchCheckpoint& out) {
  const std::span<const std::byte> file = ckpt.file->bytes();
  FL_ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ParseZipDirectory(file, ckpt.input));
  std::string prefix;
  for (const ZipEntry& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.substr(slash + 1) == "data.pkl") {
      prefix = e.name.substr(0, slash + 1);
      break;
    }
  }
  if (prefix.empty())
    return DataLossError("zip " + ckpt.input +
                         " holds no <archive>/data.pkl: it is not a PyTorch checkpoint");
  if (auto it = std::find_if(entries.begin(), entries.end(),
                             [&](const ZipEntry& e) { return e.name == prefix + "byteorder"; });
      it != entries.end() && it->method == 0) {
    std::string_view order(reinterpret_cast<const char*>(file.data() + it->data_offset), it->size);
    if (order != "little")
      return UnimplementedError("checkpoint " + ckpt.input + " was saved " + std::string(order) +
                                "-endian; only little-endian checkpoints convert");
  }
  const std::string pkl_name = prefix + "data.pkl";
  FL_ASSIGN_OR_RETURN(const ZipEntry* pkl, FindStoredEntry(entries, pkl_name, ckpt.input));
  if (pkl->size > options.max_pickle_bytes)
    return ResourceExhaustedError("checkpoint " + ckpt.input + ": " + pkl_name + " is " +
                                  std::to_string(pkl->size) + " bytes, over the limit of " +
                                  std::to_string(options.max_pickle_bytes));
  const std::string label = pkl_name + " in " + ckpt.input;
  FL_ASSIGN_OR_RETURN(PickleTree tree, ParsePickle(file.subspan(pkl->data_offset, pkl->size), label,
                                                   options.pickle_limits));
  FL_ASSIGN_OR_RETURN(out, ReadTorchCheckpoint(tree, label));
  std::map<std::string, std::span<const std::byte>> storages;
  for (const TorchTensor& t : out.tensors) {
    if (storages.contains(t.storage_key)) continue;
    const std::string entry = prefix + "data/" + t.storage_key;
    Result<const ZipEntry*> e = FindStoredEntry(entries, entry, ckpt.input);
    if (!e.ok()) {
      return Status(e.status().code(), "tensor " + Quote(t.name) + " (byte " +
                                           std::to_string(t.offset) + " of " + label +
                                           ") names storage " + Quote(t.storage_key) + ": " +
                                           std::string(e.status().message()));
    }
    storages[t.storage_key] = file.subspan((*e)->data_offset, (*e)->size);
  }
  ckpt.report.format = "zip";
  for (TorchTensor& t : out.tensors) {
    ckpt.tensors.push_back({t, nullptr, t.dtype, 0});
    ckpt.tensors.back().storage = storages[t.storage_key].data();
    // Remember the real size of the storage in the unused out_bytes field until planning.
    ckpt.tensors.back().out_bytes = storages[t.storage_key].size();
  }
  return Status::Ok();
}

// The storages of a legacy checkpoint: after the key list, per key an 8-byte element count and
// the elements.
Status ResolveLegacy(PreparedCheckpoint& ckpt, const ConvertOptions& options,
                     TorchCheckpoint& out) {
  const std::span<const std::byte> file = ckpt.file->bytes();
  FL_ASSIGN_OR_RETURN(
      LegacyLayout layout,
      ReadLegacyPickles(file.first(std::min<uint64_t>(file.size(), options.max_pickle_bytes)),
                        ckpt.input, options.pickle_limits));
  FL_ASSIGN_OR_RETURN(out, ReadTorchCheckpoint(layout.main, ckpt.input + " (main pickle)"));
  std::map<std::string, uint64_t> element_bytes;
  for (const TorchTensor& t : out.tensors) {
    auto [it, inserted] = element_bytes.emplace(t.storage_key, t.storage_element_bytes);
    if (!inserted && it->second != t.storage_element_bytes)
      return DataLossError("checkpoint " + ckpt.input + ": storage " + Quote(t.storage_key) +
                           " is named with two element sizes (tensor " + Quote(t.name) +
                           " at byte " + std::to_string(t.offset) + ")");
  }
  std::map<std::string, std::span<const std::byte>> storages;
  uint64_t at = layout.storages_offset;
  for (const std::string& key : layout.storage_keys) {
    auto el = element_bytes.find(key);
    if (el == element_bytes.end())
      return DataLossError("checkpoint " + ckpt.input + ": storage " + Quote(key) + " at byte " +
                           std::to_string(at) +
                           " is used by no tensor, so its size cannot be known");
    if (file.size() - at < 8)
      return DataLossError("checkpoint " + ckpt.input + " ends at byte " + std::to_string(at) +
                           " before storage " + Quote(key) + "; the file is truncated");
    uint64_t count = 0;
    for (int i = 7; i >= 0; --i) count = (count << 8) | static_cast<uint8_t>(file[at + i]);
    at += 8;
    if (count > (file.size() - at) / el->second)
      return DataLossError("checkpoint " + ckpt.input + ": storage " + Quote(key) + " at byte " +
                           std::to_string(at - 8) + " declares " + std::to_string(count) +
                           " elements of " + std::to_string(el->second) +
                           " bytes, past the end "
                           "of the file (" +
                           std::to_string(file.size()) +
                           " bytes); the file is "
                           "truncated or crafted");
    storages[key] = file.subspan(at, count * el->second);
    at += count * el->second;
  }
  ckpt.report.format = "legacy";
  for (TorchTensor& t : out.tensors) {
    auto s = storages.find(t.storage_key);
    if (s == storages.end())
      return DataLossError("checkpoint " + ckpt.input + ": tensor " + Quote(t.name) + " at byte " +
                           std::to_string(t.offset) + " names storage " + Quote(t.storage_key) +
                           ", which the file does not hold");
    ckpt.tensors.push_back({t, s->second.data(), t.dtype, s->second.size()});
  }
  return Status::Ok();
}

Status PlanTensors(PreparedCheckpoint& ckpt, const ConvertOptions& options) {
  const uint64_t file_size = ckpt.file->bytes().size();
  uint64_t total = 0;
  for (TensorPlan& p : ckpt.tensors) {
    const TorchTensor& t = p.tensor;
    const uint64_t storage_size = p.out_bytes;
    auto where = [&] {
      return "checkpoint " + ckpt.input + ": tensor " + Quote(t.name) + " (byte " +
             std::to_string(t.offset) + " of its pickle), storage " + Quote(t.storage_key);
    };
    if (t.view_begin > storage_size || t.view_bytes > storage_size - t.view_begin)
      return DataLossError(where() + " declares " + std::to_string(t.view_bytes) +
                           " bytes (from byte " + std::to_string(t.view_begin) +
                           ") but the file holds " + std::to_string(storage_size) +
                           "; the checkpoint is truncated or crafted");
    FL_ASSIGN_OR_RETURN(ViewExtent extent, TensorExtent(t, ckpt.input));
    if (extent.last > t.view_bytes)
      return DataLossError(where() + ": its view (offset " + std::to_string(t.storage_offset) +
                           ", sizes and strides) reaches byte " + std::to_string(extent.last) +
                           " of a storage of " + std::to_string(t.view_bytes) +
                           " bytes; the checkpoint is corrupt or crafted");
    p.storage += t.view_begin;
    p.out_dtype = t.dtype;
    if (options.dtype && Convertible(t.dtype) && t.dtype != *options.dtype) {
      p.out_dtype = *options.dtype;
      ++ckpt.report.converted_tensors;
    }
    uint64_t count = 1;
    for (uint64_t d : t.shape) {
      if (d != 0 && count > UINT64_MAX / d)
        return DataLossError(where() + ": its size overflows 64 bits");
      count *= d;
    }
    const uint64_t el = ElementBytes(p.out_dtype);
    if (count > UINT64_MAX / el) return DataLossError(where() + ": its size overflows 64 bits");
    p.out_bytes = count * el;
    // Views with stride 0 repeat bytes; refuse outputs far larger than the checkpoint (a crafted
    // file could otherwise ask for exabytes).
    const uint64_t cap = 16 * file_size + (uint64_t{64} << 20);
    if (p.out_bytes > cap || total > cap - p.out_bytes)
      return ResourceExhaustedError(where() + ": the tensors would take more than " +
                                    std::to_string(cap) +
                                    " bytes, 16 times the checkpoint; "
                                    "its views repeat storage bytes (stride 0) too often");
    total += p.out_bytes;
  }
  ckpt.report.tensors = ckpt.tensors.size();
  ckpt.report.bytes = total;

  // Storages shared by several tensors.
  std::map<std::string, std::vector<const TensorPlan*>> by_key;
  for (const TensorPlan& p : ckpt.tensors) by_key[p.tensor.storage_key].push_back(&p);
  for (const TensorPlan& p : ckpt.tensors) {
    auto it = by_key.find(p.tensor.storage_key);
    if (it == by_key.end() || it->second.size() < 2) continue;
    SharedStorage s;
    s.storage_key = p.tensor.storage_key;
    s.identical = true;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const TensorPlan* q : it->second) {
      const TorchTensor& a = it->second[0]->tensor;
      const TorchTensor& b = q->tensor;
      s.tensors.push_back(b.name);
      if (a.view_begin + a.storage_offset * ElementBytes(a.dtype) !=
              b.view_begin + b.storage_offset * ElementBytes(b.dtype) ||
          a.shape != b.shape || a.strides != b.strides || a.dtype != b.dtype)
        s.identical = false;
      ViewExtent e = TensorExtent(b, ckpt.input).value();
      if (e.last > e.first) ranges.push_back({b.view_begin + e.first, b.view_begin + e.last});
    }
    if (!s.identical) {
      std::sort(ranges.begin(), ranges.end());
      for (size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].first < ranges[i - 1].second) s.overlapping = true;
    }
    ckpt.report.shared.push_back(std::move(s));
    by_key.erase(it);
  }
  return Status::Ok();
}

Result<PreparedCheckpoint> Prepare(const std::string& input, const std::string& output,
                                   const ConvertOptions& options) {
  PreparedCheckpoint ckpt;
  ckpt.input = input;
  ckpt.output = output;
  ckpt.report.input = input;
  ckpt.report.output = output;
  FL_ASSIGN_OR_RETURN(ckpt.file, MappedFile::Open(input));
  TorchCheckpoint read;
  const std::span<const std::byte> bytes = ckpt.file->bytes();
  if (LooksLikeZip(bytes)) {
    FL_RETURN_IF_ERROR(ResolveZip(ckpt, options, read));
  } else if (LooksLikeLegacyTorch(bytes)) {
    FL_RETURN_IF_ERROR(ResolveLegacy(ckpt, options, read));
  } else {
    return DataLossError(input +
                         " is not a PyTorch checkpoint (neither the zip format of "
                         "torch.save nor its legacy format); nothing to convert");
  }
  ckpt.report.unwrapped_key = read.unwrapped_key;
  ckpt.report.skipped_entries = read.skipped_entries;
  ckpt.report.skipped_names = read.skipped_names;
  FL_RETURN_IF_ERROR(PlanTensors(ckpt, options));
  return ckpt;
}

// Copies the elements [first, first + n) of the tensor, in row-major order, to `dst` (in the
// stored dtype).
void Gather(const TensorPlan& p, uint64_t first, uint64_t n, std::byte* dst) {
  const TorchTensor& t = p.tensor;
  const uint64_t el = ElementBytes(t.dtype);
  const std::byte* base = p.storage + t.storage_offset * el;
  if (IsContiguous(t)) {
    std::memcpy(dst, base + first * el, n * el);
    return;
  }
  const size_t rank = t.shape.size();
  std::vector<uint64_t> index(rank);
  uint64_t rest = first;
  for (size_t i = rank; i-- > 0;) {
    index[i] = rest % t.shape[i];
    rest /= t.shape[i];
  }
  uint64_t src = 0;
  for (size_t i = 0; i < rank; ++i) src += index[i] * t.strides[i];
  for (uint64_t k = 0; k < n; ++k) {
    std::memcpy(dst + k * el, base + src * el, el);
    for (size_t i = rank; i-- > 0;) {
      if (++index[i] < t.shape[i]) {
        src += t.strides[i];
        break;
      }
      src -= (t.shape[i] - 1) * t.strides[i];
      index[i] = 0;
    }
  }
}

// Fills `dst` with the output bytes [offset, offset + dst.size()) of the tensor.
Status Fill(const TensorPlan& p, std::span<std::byte> dst, uint64_t offset) {
  const Dtype from = p.tensor.dtype;
  const Dtype to = p.out_dtype;
  const uint64_t in_el = ElementBytes(from);
  const uint64_t out_el = ElementBytes(to);
  const uint64_t first = offset / out_el;
  const uint64_t last = (offset + dst.size() + out_el - 1) / out_el;
  const uint64_t n = last - first;
  if (from == to && offset % out_el == 0 && dst.size() % out_el == 0) {
    Gather(p, first, n, dst.data());
    return Status::Ok();
  }
  thread_local std::vector<std::byte> in, mid, out;
  in.resize(n * in_el);
  Gather(p, first, n, in.data());
  const std::byte* converted = in.data();
  if (from != to) {
    const std::byte* src = in.data();
    Dtype src_dtype = from;
    if (from == Dtype::kF64) {  // through F32, as torch's .to() rounds
      mid.resize(n * 4);
      for (uint64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, in.data() + i * 8, 8);
        const float f = static_cast<float>(d);
        std::memcpy(mid.data() + i * 4, &f, 4);
      }
      src = mid.data();
      src_dtype = Dtype::kF32;
    }
    out.resize(n * out_el);
    FL_RETURN_IF_ERROR(ConvertElements(src_dtype, to, src, out.data(), n));
    converted = out.data();
  }
  std::memcpy(dst.data(), converted + (offset - first * out_el), dst.size());
  return Status::Ok();
}

Status Write(PreparedCheckpoint& ckpt, const ConvertOptions& options, uint64_t& done,
             uint64_t total) {
  std::vector<TensorToWrite> tensors;
  tensors.reserve(ckpt.tensors.size());
  Status fill_error;
  for (const TensorPlan& p : ckpt.tensors) {
    TensorToWrite w;
    w.name = p.tensor.name;
    w.dtype = p.out_dtype;
    w.shape = p.tensor.shape;
    w.fill = [&p, &fill_error, &done, total, &options](std::span<std::byte> dst, uint64_t offset) {
      Status s = Fill(p, dst, offset);
      if (!s.ok() && fill_error.ok()) fill_error = s;
      done += dst.size();
      if (options.progress) options.progress(done, total);
    };
    tensors.push_back(std::move(w));
  }
  WriteOptions wo;
  wo.alignment = options.alignment;
  wo.metadata = std::map<std::string, std::string>{{"format", "pt"}};
  Status s = WriteSafetensors(ckpt.output, tensors, wo);
  if (s.ok() && !fill_error.ok()) {
    ::unlink(ckpt.output.c_str());
    return InternalError("converting " + ckpt.input + ": " + fill_error.ToString());
  }
  return s.WithContext("writing " + ckpt.output + " from " + ckpt.input);
}

void AddToReport(ConvertReport& report, const ConvertedFile& f) {
  report.tensors += f.tensors;
  report.bytes += f.bytes;
  report.shared_storages += f.shared.size();
  report.skipped_entries += f.skipped_entries;
  report.files.push_back(f);
}

bool IsCheckpointExtension(const std::string& name) {
  for (const char* ext : {".bin", ".pt", ".pth", ".ckpt"})
    if (name.ends_with(ext)) return true;
  return false;
}

// Pickles of training state, not weights: left out of a converted folder.
bool IsTrainingState(const std::string& name) {
  return name == "training_args.bin" || name == "optimizer.pt" || name == "scheduler.pt" ||
         name == "scaler.pt" || (name.starts_with("rng_state") && name.ends_with(".pth"));
}

std::string IndexJson(const std::map<std::string, std::string>& weight_map, uint64_t total) {
  std::string json =
      "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) + "},\n  \"weight_map\": {";
  bool first = true;
  for (const auto& [tensor, shard] : weight_map) {
    json += first ? "\n    " : ",\n    ";
    first = false;
    format_internal::AppendJsonString(json, tensor);
    json += ": ";
    format_internal::AppendJsonString(json, shard);
  }
  json += "\n  }\n}\n";
  return json;
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  size_t at = 0;
  while (at < text.size()) {
    const ssize_t n = ::write(fd, text.data() + at, text.size() - at);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "write", path, static_cast<int64_t>(at));
    }
    at += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "fsync", path);
  }
  if (::close(fd) != 0) return ErrnoToStatus(errno, "close", path);
  return Status::Ok();
}

Result<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return ErrnoToStatus(ec.value(), "stat", path);
  if (size > (uint64_t{64} << 20))
    return ResourceExhaustedError(path + " is " + std::to_string(size) +
                                  " bytes; an index file over 64 MiB is not one to rewrite");
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) return IoError("read " + path + ": failed");
  return text;
}

// Removes a temporary folder (best effort) unless released.
class TempFolder {
 public:
  explicit TempFolder(std::string path) : path_(std::move(path)) {}
  ~TempFolder() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

Status Replace(const std::string& from, const std::string& to, bool force) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(to))) {
    if (!force)
      return FailedPreconditionError(to + " appeared while converting; pass --force to replace it");
    const std::string old = to + ".old." + RandomSuffix();
    if (::rename(to.c_str(), old.c_str()) != 0) return ErrnoToStatus(errno, "rename", to);
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int err = errno;
      ::rename(old.c_str(), to.c_str());
      return ErrnoToStatus(err, "rename", from);
    }
    fs::remove_all(old, ec);
    return Status::Ok();
  }
  if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoToStatus(errno, "rename", from);
  return Status::Ok();
}

Result<ConvertReport> ConvertFolder(const std::string& in, const std::string& out,
                                    const ConvertOptions& options) {
  ConvertReport report;
  // What to do with each file, by path relative to `in`.
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file()) files.push_back(fs::relative(it->path(), in).generic_string());
  }
  if (ec) return ErrnoToStatus(ec.value(), "list", in);
  std::sort(files.begin(), files.end());

  const std::string temp =
      (fs::path(out).parent_path() / (fs::path(out).filename().string() + ".tmp." + RandomSuffix()))
          .string();
  if (!fs::create_directory(temp, ec)) return ErrnoToStatus(ec.value(), "mkdir", temp);
  TempFolder guard(temp);

  std::vector<PreparedCheckpoint> checkpoints;
  std::vector<std::string> indexes;
  std::set<std::string> outputs;  // relative output names, to catch clashes
  auto claim = [&](const std::string& rel, const std::string& from) -> Status {
    if (!outputs.insert(rel).second)
      return FailedPreconditionError("converting " + in + ": " + from + " would become " + rel +
                                     ", which another file of the folder already becomes; "
                                     "remove one of them");
    return Status::Ok();
  };
  for (const std::string& rel : files) {
    const fs::path p(rel);
    const std::string name = p.filename().string();
    const std::string parent = p.parent_path().generic_string();
    auto join = [&](const std::string& n) { return parent.empty() ? n : parent + "/" + n; };
    if (name.ends_with(".bin.index.json")) {
      indexes.push_back(rel);
      FL_RETURN_IF_ERROR(claim(join(SafetensorsNameFor(name)), rel));
    } else if (IsTrainingState(name)) {
      report.left_out.push_back(rel);
    } else if (IsCheckpointExtension(name)) {
      const std::string out_rel = join(SafetensorsNameFor(name));
      FL_RETURN_IF_ERROR(claim(out_rel, rel));
      fs::create_directories(fs::path(temp) / parent, ec);
      FL_ASSIGN_OR_RETURN(PreparedCheckpoint c,
                          Prepare(in + "/" + rel, temp + "/" + out_rel, options));
      c.report.input = rel;
      c.report.output = out_rel;
      checkpoints.push_back(std::move(c));
    } else {
      FL_RETURN_IF_ERROR(claim(rel, rel));
      fs::create_directories(fs::path(temp) / parent, ec);
      if (!fs::copy_file(in + "/" + rel, temp + "/" + rel, ec))
        return ErrnoToStatus(ec.value(), "copy", in + "/" + rel);
      report.copied.push_back(rel);
    }
  }
  if (checkpoints.empty())
    return NotFoundError(in + " holds no PyTorch checkpoint (.bin, .pt, .pth, .ckpt) to convert");

  uint64_t total = 0, done = 0;
  for (const PreparedCheckpoint& c : checkpoints) total += c.report.bytes;
  for (PreparedCheckpoint& c : checkpoints) {
    FL_RETURN_IF_ERROR(Write(c, options, done, total));
    AddToReport(report, c.report);
  }

  // Indexes: the weight map of each, pointing at the new shard names, checked against what the
  // shards hold.
  for (const std::string& rel : indexes) {
    FL_ASSIGN_OR_RETURN(std::string json, ReadSmallFile(in + "/" + rel));
    FL_ASSIGN_OR_RETURN(auto weight_map, ParseIndexJson(json, in + "/" + rel));
    const std::string parent = fs::path(rel).parent_path().generic_string();
    auto join = [&](const std::string& n) { return parent.empty() ? n : parent + "/" + n; };
    std::map<std::string, std::string> rewritten;
    std::map<std::string, std::vector<std::string>> shard_tensors;
    uint64_t index_total = 0;
    for (const auto& [tensor, shard] : weight_map) {
      const std::string shard_out = SafetensorsNameFor(shard);
      rewritten[tensor] = shard_out;
      if (shard_tensors.contains(shard_out)) continue;
      auto c = std::find_if(
          checkpoints.begin(), checkpoints.end(),
          [&](const PreparedCheckpoint& c) { return c.report.output == join(shard_out); });
      if (c == checkpoints.end())
        return NotFoundError("index " + in + "/" + rel + " names shard " + Quote(shard) +
                             " (for tensor " + Quote(tensor) + "), which the folder does not hold");
      std::vector<std::string>& names = shard_tensors[shard_out];
      for (const TensorPlan& t : c->tensors) names.push_back(t.tensor.name);
      index_total += c->report.bytes;
    }
    FL_RETURN_IF_ERROR(CheckWeightMap(in + "/" + rel, rewritten, shard_tensors));
    const std::string out_rel = join(SafetensorsNameFor(fs::path(rel).filename().string()));
    FL_RETURN_IF_ERROR(WriteTextFile(temp + "/" + out_rel, IndexJson(rewritten, index_total)));
    report.indexes.push_back(out_rel);
  }
  for (ConvertedFile& f : report.files) f.output = out + "/" + f.output;
  FL_RETURN_IF_ERROR(Replace(temp, out, options.force));
  guard.Release();
  return report;
}

}  // namespace

std::string SafetensorsNameFor(const std::string& checkpoint_name) {
  std::string stem = checkpoint_name;
  std::string suffix = ".safetensors";
  if (stem.ends_with(".bin.index.json")) {
    stem.resize(stem.size() - std::strlen(".bin.index.json"));
    suffix = ".safetensors.index.json";
  } else {
    for (const char* ext : {".bin", ".pt", ".pth", ".ckpt"}) {
      if (stem.ends_with(ext)) {
        stem.resize(stem.size() - std::strlen(ext));
        break;
      }
    }
  }
  // transformers names its weights pytorch_model*.bin but model*.safetensors.
  if (stem.starts_with("pytorch_model")) stem = "model" + stem.substr(std::strlen("pytorch_model"));
  return stem + suffix;
}

Result<ConvertReport> Convert(const std::string& in, const std::string& out,
                              const ConvertOptions& options) {
  if (options.dtype && *options.dtype != Dtype::kF16 && *options.dtype != Dtype::kBF16)
    return InvalidArgumentError("convert: --dtype must be fp16 or bf16, not " +
                                std::string(DtypeName(*options.dtype)));
  std::error_code ec;
  const fs::file_status in_status = fs::status(in, ec);
  if (!fs::exists(in_status)) return NotFoundError("convert: " + in + " does not exist");
  if (fs::exists(fs::symlink_status(out)) && !options.force)
    return FailedPreconditionError("convert: " + out +
                                   " exists; pass --force to replace it, or choose another name");
  if (fs::exists(fs::symlink_status(out)) && fs::equivalent(in, out, ec))
    return FailedPreconditionError("convert: the output " + out + " is the input itself");
  if (fs::is_directory(in_status)) {
    if (fs::exists(out) && !fs::is_directory(out))
      return FailedPreconditionError("convert: " + in + " is a folder but " + out +
                                     " is a file; choose a folder name");
    // Replacing a folder that holds the input, or writing into the input, would destroy it.
    const std::string a = fs::weakly_canonical(in, ec).generic_string() + "/";
    const std::string b = fs::weakly_canonical(out, ec).generic_string() + "/";
    if (a.starts_with(b) || b.starts_with(a))
      return FailedPreconditionError("convert: the output folder " + out + " and the input " + in +
                                     " contain one another; choose an output beside the input");
    return ConvertFolder(in, out, options);
  }
  if (fs::is_directory(out))
    return FailedPreconditionError("convert: " + out +
                                   " is a folder; name the .safetensors file "
                                   "to write");
  FL_ASSIGN_OR_RETURN(PreparedCheckpoint ckpt, Prepare(in, out, options));
  ConvertReport report;
  uint64_t done = 0;
  FL_RETURN_IF_ERROR(Write(ckpt, options, done, ckpt.report.bytes));
  AddToReport(report, ckpt.report);
  return report;
}

}  // namespace flashload::store
