// flashload._core: the native half of the flashload Python package (nanobind).
//
// What it exposes (the Python package builds the safetensors-compatible API on top):
//   File.open(path, ..., lazy)                  one safetensors file. Eager: loaded whole by
//   Load().
//                                               Lazy: only its header is read and validated; the
//                                               first get() loads the whole file once, and rows()
//                                               before that reads only the rows asked for.
//   Array                                      one tensor; exported through DLPack (__dlpack__,
//                                               __dlpack_device__), optionally as raw storage.
//   load_bytes(data)                           a File built from an in-memory safetensors image.
//   serialize(tensors, metadata)               safetensors bytes; serialize_file(...) writes a file
//                                               atomically (WriteSafetensors).
//   SafetensorError                            raised for every flashload error except a missing
//                                               file (FileNotFoundError) and bad options
//                                               (ValueError).
//
// Ownership and lifetime: an Array holds a share of the allocation its tensor was cut from, and
// each DLPack capsule holds its own share, so arrays and the framework tensors made from them stay
// valid after the File is closed or collected. Nothing here writes to loaded memory.
// Threading: loads, reads and serialization run with the GIL released; a load runs on a worker
// thread while the calling thread polls for signals, so Ctrl-C cancels it (KeyboardInterrupt). A
// File may be used from several Python threads: its lazy state is guarded by a mutex, which is
// only ever waited for with the GIL released.
#include <Python.h>
#include <dlpack/dlpack.h>
#include <fcntl.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flashload/communicator.h"
#include "flashload/convert.h"
#include "flashload/deadline.h"
#include "flashload/dist.h"
#include "flashload/dtype.h"
#include "flashload/header.h"
#include "flashload/loader.h"
#include "flashload/model.h"
#include "flashload/source.h"
#include "flashload/status.h"
#include "flashload/tensor.h"
#include "flashload/writer.h"
// The one parser of load settings, shared with the CLI and bench (the load layer).
#include "load/load_flags.h"

namespace nb = nanobind;

namespace flashload::python {
namespace {

// The C++ side of flashload.SafetensorError (translated by the translator in NB_MODULE).
class SafetensorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The Python class a SafetensorError is raised as: the module's own class until the package sets
// its public subclass with _set_error_class() (one that also derives from the reference's
// safetensors.SafetensorError where that is installed). A strong reference, guarded by the GIL.
PyObject* error_class = nullptr;

// Raises the Python exception for a non-OK status. Requires the GIL.
[[noreturn]] void ThrowStatus(const Status& status) {
  const std::string message(status.message());
  if (status.code() == StatusCode::kNotFound) {
    PyErr_SetString(PyExc_FileNotFoundError, message.c_str());
    throw nb::python_error();
  }
  throw SafetensorError(message);
}

// One tensor, exportable through DLPack. `raw` exports the storage as unsigned integers of the
// element width (sub-byte types: the packed bytes, shape [byte_size]) so that consumers without the
// type (numpy: bf16, fp8, bool) can take it and reinterpret it.
class Array {
 public:
  Array(Tensor tensor, bool raw) : tensor_(std::move(tensor)), raw_(raw) {}

  std::string dtype() const { return std::string(DtypeName(tensor_.dtype())); }
  std::vector<uint64_t> shape() const { return tensor_.shape(); }
  uint64_t nbytes() const { return tensor_.byte_size(); }
  // The same tensor, exported as raw storage (see above).
  Array AsRaw() const { return Array(tensor_, true); }

  nb::object Dlpack() const {
    DLManagedTensor* managed = tensor_.ToDlpack();
    if (raw_) {
      const uint32_t bits = DtypeBits(tensor_.dtype());
      DLTensor& t = managed->dl_tensor;
      if (bits < 8) {
        // The exported shape array is the tensor's own; reuse its first slot for the byte count.
        if (tensor_.shape().empty()) {
          managed->deleter(managed);
          throw SafetensorError("a 0-d sub-byte tensor has no byte layout");
        }
        t.ndim = 1;
        t.shape[0] = static_cast<int64_t>(tensor_.byte_size());
        t.dtype = DLDataType{kDLUInt, 8, 1};
      } else {
        t.dtype = DLDataType{kDLUInt, static_cast<uint8_t>(bits), 1};
      }
    }
    PyObject* capsule = PyCapsule_New(managed, "dltensor", &DeleteUnconsumed);
    if (capsule == nullptr) {
      managed->deleter(managed);
      throw nb::python_error();
    }
    return nb::steal(capsule);
  }

  nb::tuple DlpackDevice() const {
    const bool cuda = tensor_.device().type == DeviceType::kCuda;
    return nb::make_tuple(static_cast<int>(cuda ? kDLCUDA : kDLCPU), tensor_.device().index);
  }

 private:
  // A capsule a consumer renamed to "used_dltensor" is theirs to free; one never consumed is ours.
  static void DeleteUnconsumed(PyObject* capsule) {
    if (!PyCapsule_IsValid(capsule, "dltensor")) return;
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
  }

  Tensor tensor_;
  bool raw_;
};

// Runs Load() on a worker thread with the GIL released; the calling thread wakes every 50 ms to
// let Python handle signals, and cancels the load when a handler raises (Ctrl-C). Requires the GIL.
// `test_delay_ms` (tests only) makes every progress report of the engine (about every 64 MiB, and
// at the end) sleep that long, ending early when the load is cancelled: a slow load on purpose.
Result<LoadedModel> LoadInterruptibly(const std::string& path, LoadOptions options,
                                      uint32_t test_delay_ms = 0) {
  std::atomic<bool> cancel{false};
  options.cancel = &cancel;
  if (test_delay_ms > 0) {
    options.progress = [&cancel, test_delay_ms](const Progress&) {
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(test_delay_ms);
      while (!cancel.load() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return !cancel.load();
    };
  }
  auto load = std::async(std::launch::async, [&] { return Load(path, options); });
  for (;;) {
    {
      nb::gil_scoped_release release;
      if (load.wait_for(std::chrono::milliseconds(50)) == std::future_status::ready) break;
    }
    if (PyErr_CheckSignals() != 0) {
      cancel.store(true);
      {
        nb::gil_scoped_release release;
        load.wait();
      }
      throw nb::python_error();
    }
  }
  return load.get();
}

// An uninitialized 4096-byte aligned host buffer of `size` bytes (at least one byte allocated),
// shared by the tensors cut from it.
std::shared_ptr<std::byte> AllocateAligned(uint64_t size) {
  constexpr std::align_val_t kAlign{4096};
  return std::shared_ptr<std::byte>(
      static_cast<std::byte*>(::operator new(size == 0 ? 1 : size, kAlign)),
      [](std::byte* p) { ::operator delete(p, kAlign); });
}

// Whether two headers describe the same tensors at the same offsets (the file did not change).
bool SameLayout(const Header& a, const Header& b) {
  if (a.file_size != b.file_size || a.header_length != b.header_length ||
      a.tensors.size() != b.tensors.size() || a.metadata != b.metadata) {
    return false;
  }
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorInfo& x = a.tensors[i];
    const TensorInfo& y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape ||
        x.data_begin != y.data_begin || x.data_end != y.data_end) {
      return false;
    }
  }
  return true;
}

// Engine options from the Python keyword arguments, checked as the CLI checks its flags
// (ParseLoadFlags); ValueError naming the argument and the value for a bad one.
LoadOptions MakeLoadOptions(const std::string& strategy, uint32_t threads, uint64_t budget_mib,
                            const std::string& device, const std::string& dtype,
                            const std::string& variant = "") {
  LoadFlags flags;
  flags.strategy = strategy;
  flags.threads = threads;
  flags.budget_mib = budget_mib;
  flags.device = device;
  flags.dtype = dtype;
  flags.variant = variant;
  Result<LoadOptions> options = ParseLoadFlags(flags, FlagStyle::kKeyword);
  if (!options.ok()) throw nb::value_error(std::string(options.status().message()).c_str());
  // As safetensors does: a file entirely in the page cache is mapped, and its tensors are
  // copy-on-write views of the cache, instead of copies (host loads without conversion only).
  options->zero_copy_hot = options->device.type == DeviceType::kCpu && dtype.empty();
  return *std::move(options);
}

// One safetensors file (or one component of a model: its shards' tensors in file order), either
// loaded whole or opened lazily (header read and validated, data not yet read).
class File {
 public:
  // A File whose tensors are already in memory.
  File(std::string name, Header header, TensorMap tensors, uint64_t bytes_read = 0)
      : name_(std::move(name)), header_(std::move(header)), state_(std::make_unique<State>()) {
    state_->tensors = std::move(tensors);
    state_->bytes_read = bytes_read;
  }

  // Opens `path` (a path or URI). Eager: loads the whole file now. Lazy: reads and validates the
  // header only; the data is read on first use.
  static File Open(const std::string& path, const std::string& strategy, uint32_t threads,
                   uint64_t budget_mib, bool lazy, const std::string& device,
                   const std::string& dtype, uint32_t test_delay_ms) {
    LoadOptions options = MakeLoadOptions(strategy, threads, budget_mib, device, dtype);
    if (lazy) return OpenHeader(path, std::move(options), test_delay_ms);
    Result<LoadedModel> model = LoadInterruptibly(path, std::move(options), test_delay_ms);
    if (!model.ok()) ThrowStatus(model.status());
    if (model->headers.size() != 1) {
      throw SafetensorError(RedactUrl(path) + ": expected one safetensors file, found " +
                            std::to_string(model->headers.size()));
    }
    Header header = std::move(model->headers.begin()->second);
    return File(path, std::move(header), std::move(model->tensors), model->report.bytes);
  }

  // A File over a copy of an in-memory safetensors image (`safetensors.*.load(bytes)`).
  static File FromBytes(nb::bytes data) {
    const size_t size = data.size();
    // 4096-aligned like the host arenas, so tensors keep the alignment the file laid out.
    std::shared_ptr<std::byte> buffer = AllocateAligned(size);
    std::memcpy(buffer.get(), data.c_str(), size);
    Result<Header> header = [&] {
      nb::gil_scoped_release release;
      return ParseHeaderFromBytes({buffer.get(), size}, "<bytes>");
    }();
    if (!header.ok()) ThrowStatus(header.status());
    TensorMap tensors;
    std::byte* section = buffer.get() + header->data_offset();
    for (const TensorInfo& info : header->tensors) {
      tensors.emplace(info.name, Tensor(info.name, info.dtype, info.shape, Device{},
                                        section + info.data_begin, info.byte_size(), buffer));
    }
    return File("<bytes>", std::move(header).value(), std::move(tensors));
  }

  // Tensor names in name order.
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys = OffsetKeys();
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  // Tensor names in file (data offset) order.
  std::vector<std::string> OffsetKeys() const {
    std::vector<std::string> keys;
    keys.reserve(header_.tensors.size());
    for (const TensorInfo& info : header_.tensors) keys.push_back(info.name);
    return keys;
  }

  const std::optional<std::map<std::string, std::string>>& Metadata() const {
    return header_.metadata;
  }

  bool Contains(const std::string& name) const { return header_.Find(name) != nullptr; }

  // (dtype name, shape) of tensor `name`, from the header (reads nothing).
  nb::tuple Info(const std::string& name) const {
    const TensorInfo& info = Find(name);
    return nb::make_tuple(std::string(DtypeName(LoadedDtype(info))), info.shape);
  }

  // The tensor `name`. From memory when the file (or this tensor) is loaded. Otherwise, for a
  // host load, one engine load of just this tensor (kept for later calls), and once the tensors
  // read one by one add up to a quarter of the file's data, one engine load of all the others
  // (then the whole file is in memory): reading every tensor in turn costs about one load of the
  // file. For a GPU load, the whole file in one load (one device allocation).
  Array Get(const std::string& name, bool raw) {
    const TensorInfo& info = Find(name);
    std::unique_lock<std::mutex> lock = Lock();
    if (const Tensor* t = InMemory(name)) return Array(*t, raw);
    if (state_->options.device.type != DeviceType::kCpu) {
      LoadAllLocked();
      return Array(state_->tensors->at(name), raw);
    }
    Tensor tensor;
    if (info.byte_size() <= kDirectReadBytes && state_->source && Unchanged()) {
      // One positional read: an engine load costs about a millisecond to set up.
      tensor = ReadRunTensor(info, info.shape, 0, info.byte_size(), info.element_count(),
                             LoadedDtype(info));
    } else {
      auto selection = std::make_shared<TensorSelection>();
      selection->tensors[name] = {};
      LoadedModel one = LoadSelected(std::move(selection), state_->options);
      tensor = one.tensors.at(name);
    }
    state_->held.insert_or_assign(name, tensor);
    state_->held_bytes += info.byte_size();
    if (state_->held_bytes * 4 >= DataBytes()) LoadAllLocked();
    return Array(std::move(tensor), raw);
  }

  // Whether tensor `name` is in memory (the whole file loaded, or the tensor read by get()).
  bool InMemoryPy(const std::string& name) {
    std::unique_lock<std::mutex> lock = Lock();
    return InMemory(name) != nullptr;
  }

  // The box [starts[d], stops[d]) of tensor `name` (dimensions past the end of `starts`: whole),
  // in its loaded dtype, in host memory. From memory when the tensor is in memory; otherwise one
  // engine load of a selection holding just this box, which reads only its bytes (runs of bytes
  // closer than a request costs are read as one) and adds them to bytes_read().
  Array Box(const std::string& name, const std::vector<uint64_t>& starts,
            const std::vector<uint64_t>& stops, bool raw) {
    const TensorInfo& info = Find(name);
    if (starts.size() != stops.size() || starts.size() > info.shape.size()) {
      throw nb::value_error(("box of tensor " + name + ": " + std::to_string(starts.size()) +
                             " starts and " + std::to_string(stops.size()) + " stops for " +
                             std::to_string(info.shape.size()) + " dimensions")
                                .c_str());
    }
    std::vector<uint64_t> shape = info.shape;
    TensorPart part;
    bool empty = false;
    for (size_t d = 0; d < starts.size(); ++d) {
      if (starts[d] > stops[d] || stops[d] > info.shape[d]) {
        throw nb::value_error(("box of tensor " + name + ": indices " + std::to_string(starts[d]) +
                               ".." + std::to_string(stops[d]) + " out of range for dimension " +
                               std::to_string(d) + " of size " + std::to_string(info.shape[d]))
                                  .c_str());
      }
      shape[d] = stops[d] - starts[d];
      empty = empty || shape[d] == 0;
      part.dims.push_back({IndexRange{starts[d], stops[d]}});
    }
    const Dtype loaded = LoadedDtype(info);
    if (empty) {
      std::shared_ptr<std::byte> none = AllocateAligned(0);
      std::byte* data = none.get();
      return Array(Tensor(name, loaded, std::move(shape), Device{}, data, 0, std::move(none)), raw);
    }
    std::unique_lock<std::mutex> lock = Lock();
    if (InMemory(name) != nullptr) {
      throw SafetensorError("File " + RedactUrl(name_) + ": tensor " + name +
                            " is in memory; index it there (get())");
    }
    // A box that is one run of bytes (single indices, then one range, then whole dimensions) is
    // one positional read of exactly that run.
    size_t k = 0;
    while (k < starts.size() && stops[k] - starts[k] == 1) ++k;
    bool run = true;
    for (size_t d = k + 1; d < starts.size(); ++d) {
      run = run && starts[d] == 0 && stops[d] == info.shape[d];
    }
    if (run && state_->source) {
      uint64_t first_element = 0;
      uint64_t elements = 1;
      for (size_t d = 0; d < info.shape.size(); ++d) {
        first_element = first_element * info.shape[d] + (d < starts.size() ? starts[d] : 0);
        elements *= shape[d];
      }
      const uint64_t bits = DtypeBits(info.dtype);
      if ((first_element * bits) % 8 == 0 && (elements * bits) % 8 == 0) {
        return ReadRun(info, std::move(shape), first_element * bits / 8, elements * bits / 8,
                       elements, loaded, raw);
      }
    }
    auto selection = std::make_shared<TensorSelection>();
    selection->tensors[name] = std::move(part);
    LoadOptions options = state_->options;
    options.device = Device{};  // a box lands in host memory, as rows() do
    LoadedModel box = LoadSelected(std::move(selection), options);
    return Array(box.tensors.at(name), raw);
  }

  // Rows [start, stop) of tensor `name` along its first dimension (a 0-d tensor: the whole tensor;
  // start and stop are ignored). From memory once the file is loaded; before that, one positional
  // read of exactly those rows' bytes.
  Array Rows(const std::string& name, uint64_t start, uint64_t stop, bool raw) {
    const TensorInfo& info = Find(name);
    std::vector<uint64_t> shape = info.shape;
    uint64_t first = 0;
    uint64_t length = info.byte_size();
    uint64_t first_row = 0;
    uint64_t rows = 0;
    uint64_t elements = info.element_count();
    const Dtype loaded = LoadedDtype(info);
    if (!shape.empty()) {
      if (start > stop || stop > shape[0]) {
        throw nb::value_error(("rows " + std::to_string(start) + ".." + std::to_string(stop) +
                               " out of range for tensor " + name + " with " +
                               std::to_string(shape[0]) + " rows")
                                  .c_str());
      }
      uint64_t row_elements = 1;
      for (size_t i = 1; i < shape.size(); ++i) row_elements *= shape[i];
      const uint64_t row_bits = row_elements * DtypeBits(info.dtype);
      first_row = start;
      rows = stop - start;
      elements = rows * row_elements;
      if (row_bits % 8 != 0) {
        throw SafetensorError("File " + RedactUrl(name_) + ": rows of tensor " + name + " (" +
                              std::string(DtypeName(info.dtype)) + ", " +
                              std::to_string(row_elements) +
                              " elements per row) are not whole "
                              "bytes; read it whole with get_tensor()");
      }
      first = start * (row_bits / 8);
      length = (stop - start) * (row_bits / 8);
      shape[0] = stop - start;
    }
    std::unique_lock<std::mutex> lock = Lock();
    if (const Tensor* in_memory = InMemory(name)) {
      // Loaded: a view, in the loaded dtype (the conversion, if any, is done).
      const Tensor& whole = *in_memory;
      const uint64_t row_bytes =
          info.shape.empty() || info.shape[0] == 0 ? 0 : whole.byte_size() / info.shape[0];
      const uint64_t offset = info.shape.empty() ? 0 : first_row * row_bytes;
      const uint64_t bytes = info.shape.empty() ? whole.byte_size() : rows * row_bytes;
      std::byte* data = static_cast<std::byte*>(const_cast<void*>(whole.data())) + offset;
      return Array(
          Tensor(name, whole.dtype(), std::move(shape), whole.device(), data, bytes, whole.owner()),
          raw);
    }
    return ReadRun(info, std::move(shape), first, length, elements, loaded, raw);
  }

  // Requires the lock and the file not loaded. Bytes [first, first + length) of tensor `info`'s
  // data, holding `elements` elements of shape `shape`, by one positional read of just those
  // bytes (added to bytes_read()), converted on the host to `loaded` when that differs.
  Array ReadRun(const TensorInfo& info, std::vector<uint64_t> shape, uint64_t first,
                uint64_t length, uint64_t elements, Dtype loaded, bool raw) {
    return Array(ReadRunTensor(info, std::move(shape), first, length, elements, loaded), raw);
  }
  Tensor ReadRunTensor(const TensorInfo& info, std::vector<uint64_t> shape, uint64_t first,
                       uint64_t length, uint64_t elements, Dtype loaded) {
    const std::string& name = info.name;
    std::shared_ptr<std::byte> buffer = AllocateAligned(length);
    const uint64_t offset = header_.data_offset() + info.data_begin + first;
    Status status;
    {
      nb::gil_scoped_release release;
      status = ReadExact(*state_->source, offset, {buffer.get(), static_cast<size_t>(length)});
    }
    if (!status.ok()) ThrowStatus(status);
    state_->bytes_read += length;
    if (loaded != info.dtype) {
      // Converted on the host, with the code and rounding of the engine's conversions.
      const uint64_t out_bytes = elements * (DtypeBits(loaded) / 8);
      std::shared_ptr<std::byte> converted = AllocateAligned(std::max<uint64_t>(out_bytes, 1));
      Status st = ConvertElements(info.dtype, loaded, buffer.get(), converted.get(), elements);
      if (!st.ok()) ThrowStatus(st);
      std::byte* data = converted.get();
      return Tensor(name, loaded, std::move(shape), Device{}, data, out_bytes,
                    std::move(converted));
    }
    std::byte* data = buffer.get();
    return Tensor(name, info.dtype, std::move(shape), Device{}, data, length, std::move(buffer));
  }

  // Loads the whole file once (no-op when it is loaded). Raises when the file changed on storage
  // since it was opened.
  // Tensors read one by one before (get()) are kept, and only the others are read.
  void LoadAll() {
    std::unique_lock<std::mutex> lock = Lock();
    LoadAllLocked();
  }

  const std::string& name() const { return name_; }
  uint64_t header_length() const { return header_.header_length; }
  uint64_t bytes_read() const { return state_->bytes_read; }
  bool loaded() const { return state_->tensors.has_value(); }

 private:
  // get() reads a tensor up to this size with one positional read, a larger one with the engine.
  static constexpr uint64_t kDirectReadBytes = uint64_t{8} << 20;

  // What stat() says of a local file, to tell whether the path still names the file opened.
  struct FileIdentity {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileIdentity&) const = default;
  };
  static std::optional<FileIdentity> Identify(const std::string& path) {
    if (path.find("://") != std::string::npos || path.rfind("tar:", 0) == 0) return std::nullopt;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    return FileIdentity{st.st_dev, st.st_ino, st.st_size,
                        int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec};
  }
  // The fraction of the bytes of local file `path` from `offset` to its end that are in the page
  // cache (mincore); 0 for a URI or when it cannot be told.
  static double Resident(const std::string& path, uint64_t offset) {
    if (path.find("://") != std::string::npos || path.rfind("tar:", 0) == 0) return 0;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    double fraction = 0;
    struct stat st;
    if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > offset) {
      const uint64_t size = static_cast<uint64_t>(st.st_size);
      void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        const uint64_t first = offset / page;
        const uint64_t pages = (size + page - 1) / page;
        std::vector<unsigned char> in_core(pages - first);
        if (::mincore(static_cast<char*>(map) + first * page, size - first * page,
                      in_core.data()) == 0) {
          uint64_t resident = 0;
          for (unsigned char c : in_core) resident += c & 1;
          fraction = static_cast<double>(resident) / static_cast<double>(in_core.size());
        }
        ::munmap(map, size);
      }
    }
    ::close(fd);
    return fraction;
  }

  // Requires the lock. Whether `name_` is a local file still the same as when it was opened (the
  // open source reads the file opened; a file replaced since must be read anew and checked).
  bool Unchanged() const {
    return state_->identity.has_value() && Identify(name_) == state_->identity;
  }

  struct State {
    std::mutex mu;                         // guards the members below once the File is shared
    std::optional<FileIdentity> identity;  // a local file, when opened lazily
    std::unique_ptr<Source> source;        // lazy, not yet loaded: the file, header read
    std::optional<TensorMap> tensors;      // set once loaded (every tensor in memory)
    TensorMap held;                        // before that: tensors read one by one by get()
    uint64_t held_bytes = 0;               // their stored bytes
    LoadOptions options;                   // for the whole-file load
    uint32_t test_delay_ms = 0;
    uint64_t bytes_read = 0;  // tensor data bytes read (header reads not counted)
  };

  File(std::string name, Header header, std::unique_ptr<State> state)
      : name_(std::move(name)), header_(std::move(header)), state_(std::move(state)) {}

  static File OpenHeader(const std::string& path, LoadOptions options, uint32_t test_delay_ms) {
    ParseOptions parse;
    parse.header_limit = options.header_limit;
    auto state = std::make_unique<State>();
    state->options = std::move(options);
    state->test_delay_ms = test_delay_ms;
    Result<Header> header = [&]() -> Result<Header> {
      nb::gil_scoped_release release;
      LocalOpenOptions open;
      open.backend = LocalBackend::kThreadPool;
      open.threads = 1;
      state->identity = Identify(path);
      FL_ASSIGN_OR_RETURN(state->source, OpenSource(path, open));
      return ReadHeaderFrom(*state->source, parse);
    }();
    if (!header.ok()) ThrowStatus(header.status());
    return File(path, std::move(header).value(), std::move(state));
  }

  // Requires the lock. Loads every tensor not in memory yet (the whole file when none is) and
  // makes the file loaded; no-op when it is.
  void LoadAllLocked() {
    if (state_->tensors) return;
    if (state_->held.empty()) {
      LoadedModel model = LoadSelected(nullptr, state_->options);
      state_->tensors = std::move(model.tensors);
    } else {
      auto selection = std::make_shared<TensorSelection>();
      for (const TensorInfo& t : header_.tensors) {
        if (!state_->held.contains(t.name)) selection->tensors[t.name] = {};
      }
      if (state_->options.zero_copy_hot && state_->held_bytes * 10 <= DataBytes() * 3 &&
          Resident(name_, header_.data_offset()) >= 0.99) {
        // All in the page cache, and little read yet: one load of the whole file maps it
        // (zero-copy views) instead of copying the rest; the tensors read one by one stay valid
        // where they are held. bytes_read counts the whole file again (at most 1.3 times it).
        LoadedModel model = LoadSelected(nullptr, state_->options);
        state_->tensors = std::move(model.tensors);
        state_->held.clear();
        state_->source.reset();
        return;
      }
      TensorMap all = std::move(state_->held);
      if (!selection->tensors.empty()) {
        LoadedModel rest = LoadSelected(std::move(selection), state_->options);
        for (auto& [name, tensor] : rest.tensors) all.insert_or_assign(name, std::move(tensor));
      }
      state_->tensors = std::move(all);
      state_->held.clear();
    }
    state_->source.reset();
  }

  // Requires the lock. One engine load of `selection` (null: every tensor, whole) with `options`;
  // adds the bytes it read to bytes_read(). Raises when the load fails or the file changed on
  // storage since it was opened.
  LoadedModel LoadSelected(std::shared_ptr<const TensorSelection> selection, LoadOptions options) {
    options.selection = std::move(selection);
    Result<LoadedModel> model = LoadInterruptibly(name_, std::move(options), state_->test_delay_ms);
    if (!model.ok()) ThrowStatus(model.status());
    if (model->headers.size() != 1 || !SameLayout(model->headers.begin()->second, header_)) {
      throw SafetensorError("File " + RedactUrl(name_) +
                            " changed on storage since it was opened (its header is not the same "
                            "any more); open it again");
    }
    state_->bytes_read += model->report.bytes;
    return *std::move(model);
  }

  // Requires the lock. Tensor `name` when it is in memory, else null.
  const Tensor* InMemory(const std::string& name) const {
    const TensorMap& map = state_->tensors ? *state_->tensors : state_->held;
    auto it = map.find(name);
    return it == map.end() ? nullptr : &it->second;
  }

  // Stored bytes of every tensor of the file.
  uint64_t DataBytes() const {
    uint64_t bytes = 0;
    for (const TensorInfo& t : header_.tensors) bytes += t.byte_size();
    return bytes;
  }

  // The dtype tensor `info` has once loaded: its loaded tensor's, or what the load's conversion
  // spec makes of its stored dtype.
  Dtype LoadedDtype(const TensorInfo& info) const {
    if (const Tensor* t = InMemory(info.name)) return t->dtype();
    if (state_->options.dtype.empty()) return info.dtype;
    Result<ConvertSpec> spec = ParseConvertSpec(state_->options.dtype);
    if (!spec.ok()) return info.dtype;
    Result<Dtype> to = TargetDtype(info.name, info.dtype, *spec);
    return to.ok() ? *to : info.dtype;
  }

  const TensorInfo& Find(const std::string& name) const {
    const TensorInfo* info = header_.Find(name);
    if (info == nullptr) {
      throw SafetensorError("File " + RedactUrl(name_) + " does not contain tensor " + name);
    }
    return *info;
  }

  // Locks the state, waiting with the GIL released (another thread may hold the lock while it
  // needs the GIL to poll for signals).
  std::unique_lock<std::mutex> Lock() {
    std::unique_lock<std::mutex> lock(state_->mu, std::defer_lock);
    if (!lock.try_lock()) {
      nb::gil_scoped_release release;
      lock.lock();
    }
    return lock;
  }

  std::string name_;
  Header header_;
  std::unique_ptr<State> state_;
};

// Loads a whole model (file, sharded checkpoint or diffusers folder) in one engine run and returns
// one File per component ("model" for a model without components), tensor names unprefixed. Local
// paths and URIs alike (http(s)://, s3:// folders and indexes resolve as local ones do).
std::map<std::string, File> LoadModel(const std::string& path, const std::string& strategy,
                                      uint32_t threads, uint64_t budget_mib,
                                      const std::string& variant, const std::string& device,
                                      const std::string& dtype, uint32_t test_delay_ms) {
  std::map<std::string, File> files;
  LoadOptions options = MakeLoadOptions(strategy, threads, budget_mib, device, dtype, variant);
  Result<LoadedModel> model = LoadInterruptibly(path, std::move(options), test_delay_ms);
  if (!model.ok()) ThrowStatus(model.status());
  std::map<std::string, Header> headers;
  std::map<std::string, TensorMap> tensors;
  for (const ModelFile& f : model->layout.files) {
    const Header& h = model->headers.at(f.path);
    Header& merged = headers[f.component];
    merged.tensors.insert(merged.tensors.end(), h.tensors.begin(), h.tensors.end());
    if (!merged.metadata) merged.metadata = h.metadata;
    TensorMap& out = tensors[f.component];
    for (const TensorInfo& t : h.tensors) {
      const std::string qualified = f.component.empty() ? t.name : f.component + "/" + t.name;
      out.emplace(t.name, model->tensors.at(qualified));
    }
  }
  for (auto& [component, header] : headers) {
    const std::string key = component.empty() ? "model" : component;
    uint64_t bytes = 0;
    for (const TensorInfo& t : header.tensors) bytes += t.byte_size();
    files.emplace(key, File(component.empty() ? path : path + "/" + component, std::move(header),
                            std::move(tensors[component]), bytes));
  }
  return files;
}

// Holds a C-contiguous buffer of a Python object for as long as it lives.
class HeldBuffer {
 public:
  explicit HeldBuffer(nb::handle object) {
    if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
  }
  HeldBuffer(const HeldBuffer&) = delete;
  HeldBuffer& operator=(const HeldBuffer&) = delete;
  ~HeldBuffer() { PyBuffer_Release(&view_); }
  std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(view_.buf), static_cast<size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

// The tensors of a save call: a list of (name, dtype name, shape, contiguous buffer of the bytes).
struct TensorsToWrite {
  std::vector<std::unique_ptr<HeldBuffer>> buffers;
  std::vector<TensorToWrite> tensors;
};

TensorsToWrite ParseTensorsToWrite(nb::list items) {
  TensorsToWrite out;
  out.tensors.reserve(items.size());
  for (nb::handle item : items) {
    nb::tuple t = nb::cast<nb::tuple>(item);
    if (t.size() != 4) throw nb::value_error("expected (name, dtype, shape, buffer)");
    TensorToWrite w;
    w.name = nb::cast<std::string>(t[0]);
    const std::string dtype = nb::cast<std::string>(t[1]);
    const std::optional<Dtype> parsed = ParseDtype(dtype);
    if (!parsed) throw SafetensorError("unknown safetensors dtype '" + dtype + "'");
    w.dtype = *parsed;
    w.shape = nb::cast<std::vector<uint64_t>>(t[2]);
    out.buffers.push_back(std::make_unique<HeldBuffer>(t[3]));
    w.data = out.buffers.back()->bytes();
    out.tensors.push_back(std::move(w));
  }
  return out;
}

nb::bytes Serialize(nb::list items, std::optional<std::map<std::string, std::string>> metadata) {
  TensorsToWrite input = ParseTensorsToWrite(items);
  WriteOptions options;
  options.metadata = std::move(metadata);
  Result<SerializedHeader> header = SerializeHeader(input.tensors, options);
  if (!header.ok()) ThrowStatus(header.status());
  uint64_t total = header->bytes.size();
  for (const TensorInfo& info : header->layout)
    total = std::max(total, header->bytes.size() + info.data_end);
  PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(total));
  if (out == nullptr) throw nb::python_error();
  nb::bytes result = nb::steal<nb::bytes>(out);
  char* dst = PyBytes_AsString(out);
  {
    nb::gil_scoped_release release;
    std::map<std::string_view, const TensorToWrite*> by_name;
    for (const TensorToWrite& t : input.tensors) by_name.emplace(t.name, &t);
    std::memcpy(dst, header->bytes.data(), header->bytes.size());
    char* section = dst + header->bytes.size();
    for (const TensorInfo& info : header->layout) {
      const TensorToWrite& t = *by_name.at(info.name);
      if (!t.data.empty()) std::memcpy(section + info.data_begin, t.data.data(), t.data.size());
    }
  }
  return result;
}

void SerializeFile(nb::list items, const std::string& path,
                   std::optional<std::map<std::string, std::string>> metadata) {
  TensorsToWrite input = ParseTensorsToWrite(items);
  WriteOptions options;
  options.metadata = std::move(metadata);
  Status status;
  {
    nb::gil_scoped_release release;
    status = WriteSafetensors(path, input.tensors, options);
  }
  if (!status.ok()) ThrowStatus(status);
}

// ---- tensor-parallel loading through a Python communicator ----------------------------------------

// A Communicator whose collectives are methods of a Python object (flashload.distributed's
// TorchDistributedCommunicator, or any object with the same shape):
//   rank, size, name                                   attributes, read once at construction
//   agree(code: int, message: str, timeout_s) -> (code, message)
//   all_gather(data: bytes, timeout_s) -> list[bytes]   (one per rank, by rank)
//   all_to_all(send: list[memoryview], recv: list[memoryview], timeout_s) -> None
// LoadSharded() runs with the GIL released; each collective takes the GIL for its call. A Python
// exception becomes a Status: TimeoutError kDeadlineExceeded, KeyboardInterrupt and SystemExit
// kCancelled (kept, and raised again by the caller once LoadSharded() has returned), anything else
// kUnavailable, the message naming the communicator, the rank, the collective and the exception.
// The memoryviews of all_to_all borrow the loader's buffers for the call only: they are released
// when the call returns (an array still holding one makes the release fail silently; its memory
// must not be used after the call).
// Thread-safety: as Communicator; construct and destroy with the GIL held.
class PyCommunicator final : public Communicator {
 public:
  // Requires the GIL. Raises TypeError/AttributeError (as Python does) for a malformed object.
  explicit PyCommunicator(nb::handle object)
      : object_(nb::borrow(object)),
        rank_(nb::cast<int>(object.attr("rank"))),
        size_(nb::cast<int>(object.attr("size"))),
        name_(nb::cast<std::string>(nb::str(object.attr("name")))) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  Status Agree(const Status& local, Deadline deadline) override {
    nb::gil_scoped_acquire gil;
    try {
      nb::object out = object_.attr("agree")(static_cast<int>(local.code()),
                                             std::string(local.message()), Seconds(deadline));
      nb::tuple t = nb::cast<nb::tuple>(out);
      if (t.size() != 2) throw nb::type_error("agree() must return (code, message)");
      const int code = nb::cast<int>(t[0]);
      if (code < 0 || code > static_cast<int>(StatusCode::kInternal)) {
        return InternalError(Where("agree") + " returned the unknown status code " +
                             std::to_string(code));
      }
      return Status(static_cast<StatusCode>(code), nb::cast<std::string>(t[1]));
    } catch (nb::python_error& e) {
      return FromPython(e, "agree");
    } catch (const nb::cast_error&) {
      return InternalError(Where("agree") + " returned something other than (int, str)");
    } catch (const nb::builtin_exception& e) {
      return InternalError(Where("agree") + ": " + e.what());
    }
  }

  Result<std::vector<std::string>> AllGather(std::string_view mine, Deadline deadline) override {
    nb::gil_scoped_acquire gil;
    try {
      nb::object out =
          object_.attr("all_gather")(nb::bytes(mine.data(), mine.size()), Seconds(deadline));
      std::vector<std::string> all;
      for (nb::handle item : out) {
        nb::bytes b = nb::cast<nb::bytes>(item);
        all.emplace_back(b.c_str(), b.size());
      }
      if (all.size() != static_cast<size_t>(size_)) {
        return InternalError(Where("all_gather") + " returned " + std::to_string(all.size()) +
                             " items for " + std::to_string(size_) + " ranks");
      }
      return all;
    } catch (nb::python_error& e) {
      return FromPython(e, "all_gather");
    } catch (const nb::cast_error&) {
      return InternalError(Where("all_gather") + " returned something other than a list of bytes");
    }
  }

  Status AllToAll(std::span<const std::span<const std::byte>> send,
                  std::span<const std::span<std::byte>> recv, Deadline deadline) override {
    nb::gil_scoped_acquire gil;
    if (send.size() != static_cast<size_t>(size_) || recv.size() != static_cast<size_t>(size_)) {
      return InvalidArgumentError(Where("all_to_all") + ": " + std::to_string(send.size()) +
                                  " send and " + std::to_string(recv.size()) +
                                  " receive buffers for " + std::to_string(size_) + " ranks");
    }
    static char empty = 0;  // a memoryview needs an address even for no bytes
    nb::list send_views;
    nb::list recv_views;
    for (const std::span<const std::byte>& s : send) {
      char* p = s.empty() ? &empty : const_cast<char*>(reinterpret_cast<const char*>(s.data()));
      send_views.append(nb::steal(
          Check(PyMemoryView_FromMemory(p, static_cast<Py_ssize_t>(s.size()), PyBUF_READ))));
    }
    for (const std::span<std::byte>& r : recv) {
      char* p = r.empty() ? &empty : reinterpret_cast<char*>(r.data());
      recv_views.append(nb::steal(
          Check(PyMemoryView_FromMemory(p, static_cast<Py_ssize_t>(r.size()), PyBUF_WRITE))));
    }
    Status status;
    try {
      object_.attr("all_to_all")(send_views, recv_views, Seconds(deadline));
    } catch (nb::python_error& e) {
      status = FromPython(e, "all_to_all");
    }
    // The buffers are the loader's: no view of them may outlive the call.
    for (nb::handle views : {nb::handle(send_views), nb::handle(recv_views)}) {
      for (nb::handle v : nb::borrow<nb::list>(views)) {
        PyObject* released = PyObject_CallMethod(v.ptr(), "release", nullptr);
        if (released == nullptr) PyErr_Clear();
        Py_XDECREF(released);
      }
    }
    return status;
  }

  // KeyboardInterrupt or SystemExit raised inside a collective, to raise again once LoadSharded()
  // has returned (requires the GIL). False when there is none.
  bool RestoreInterrupt() {
    if (!interrupt_type_.is_valid()) return false;
    PyErr_Restore(interrupt_type_.release().ptr(), interrupt_value_.release().ptr(),
                  interrupt_traceback_.release().ptr());
    return true;
  }

 private:
  static PyObject* Check(PyObject* o) {
    if (o == nullptr) throw nb::python_error();
    return o;
  }

  // Seconds left until `deadline` (at least 0); a large number for an infinite one.
  static double Seconds(Deadline deadline) {
    if (deadline.infinite()) return 365.0 * 24 * 3600;
    const auto left = deadline.when() - Deadline::Clock::now();
    return std::max(0.0, std::chrono::duration<double>(left).count());
  }

  std::string Where(const char* collective) const {
    return "communicator " + name_ + ", rank " + std::to_string(rank_) + ": " + collective + "()";
  }

  // Requires the GIL; consumes the Python error held by `e`.
  Status FromPython(nb::python_error& e, const char* collective) {
    const std::string what = Where(collective) + " raised " +
                             nb::cast<std::string>(nb::str(e.type().attr("__name__"))) + ": " +
                             nb::cast<std::string>(nb::str(e.value()));
    if (e.matches(PyExc_KeyboardInterrupt) || e.matches(PyExc_SystemExit)) {
      if (!interrupt_type_.is_valid()) {
        interrupt_type_ = nb::borrow(e.type());
        interrupt_value_ = nb::borrow(e.value());
        interrupt_traceback_ = nb::borrow(e.traceback());
      }
      return CancelledError(what);
    }
    if (e.matches(PyExc_TimeoutError)) {
      return DeadlineExceededError(what +
                                   " (a rank did not reach the collective in time: see the other "
                                   "ranks' errors, or raise timeout_s)");
    }
    return UnavailableError(what);
  }

  nb::object object_;
  const int rank_;
  const int size_;
  const std::string name_;
  nb::object interrupt_type_;
  nb::object interrupt_value_;
  nb::object interrupt_traceback_;
};

// A rank's report as a dict (the fields of RankReport, without the nested LoadReport).
nb::dict RankReportDict(const RankReport& r) {
  nb::dict d;
  d["rank"] = r.rank;
  d["world"] = r.world;
  d["communicator"] = r.communicator;
  d["mode"] = r.mode;
  d["mode_reason"] = r.mode_reason;
  d["rules"] = r.rules;
  d["tensors"] = r.tensors;
  d["split"] = r.split;
  d["shard_bytes"] = r.shard_bytes;
  d["bytes_read"] = r.bytes_read;
  d["bytes_sent"] = r.bytes_sent;
  d["bytes_received"] = r.bytes_received;
  d["rounds"] = r.rounds;
  d["seconds"] = r.seconds;
  d["read_seconds"] = r.read_seconds;
  d["share_seconds"] = r.share_seconds;
  d["covering_reads"] = r.covering_reads;
  d["covering_bytes"] = r.covering_bytes;
  d["summary"] = DescribeRankReport(r);
  return d;
}

// LoadSharded() on a Python communicator: ([(name, Array)] in file order, [report dict per rank]).
// Runs with the GIL released (the communicator takes it for each collective).
nb::tuple LoadShardedPy(const std::string& path, nb::handle communicator, const std::string& shard,
                        const std::string& mode, uint64_t share_window_mib, double timeout_s,
                        const std::string& strategy, uint32_t threads, uint64_t budget_mib,
                        const std::string& variant, const std::string& device,
                        const std::string& dtype) {
  TensorParallelOptions o;
  o.load = MakeLoadOptions(strategy, threads, budget_mib, device, dtype, variant);
  o.shard = shard;
  Result<ShardMode> parsed = ParseShardMode(mode);
  if (!parsed.ok()) throw nb::value_error(std::string(parsed.status().message()).c_str());
  o.mode = *parsed;
  o.share_window_bytes = share_window_mib << 20;
  if (!(timeout_s > 0)) throw nb::value_error("timeout_s must be positive");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::min(timeout_s, 1e9) * 1000));
  PyCommunicator comm(communicator);
  Result<ShardedModel> model = InternalError("not loaded");
  {
    nb::gil_scoped_release release;
    model = LoadSharded(path, comm, o);
  }
  if (!model.ok()) {
    if (comm.RestoreInterrupt()) throw nb::python_error();
    if (model.status().code() == StatusCode::kDeadlineExceeded) {
      PyErr_SetString(PyExc_TimeoutError, std::string(model.status().message()).c_str());
      throw nb::python_error();
    }
    ThrowStatus(model.status());
  }
  // File order: the headers' tensors, file by file; names Load() qualifies (a diffusers
  // component's "<component>/<name>") after those, in name order.
  nb::list tensors;
  std::set<std::string> listed;
  for (const auto& [file, header] : model->headers) {
    for (const TensorInfo& t : header.tensors) {
      auto it = model->tensors.find(t.name);
      if (it == model->tensors.end() || !listed.insert(t.name).second) continue;
      tensors.append(nb::make_tuple(t.name, Array(it->second, false)));
    }
  }
  for (const auto& [name, tensor] : model->tensors) {
    if (!listed.contains(name)) tensors.append(nb::make_tuple(name, Array(tensor, false)));
  }
  nb::list reports;
  for (const RankReport& r : model->reports) reports.append(RankReportDict(r));
  return nb::make_tuple(tensors, reports);
}

}  // namespace
}  // namespace flashload::python

NB_MODULE(_core, m) {
  using flashload::python::Array;
  using flashload::python::File;
  m.doc() = "flashload native module: loads and writes safetensors files; see flashload.safe_open";

  nb::exception<flashload::python::SafetensorError> native_error(m, "SafetensorError",
                                                                 PyExc_Exception);
  flashload::python::error_class = native_error.inc_ref().ptr();
  // Registered after nb::exception's own translator, so it is tried first.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const flashload::python::SafetensorError& e) {
      PyErr_SetString(flashload::python::error_class, e.what());
    }
  });
  m.def(
      "_set_error_class",
      [native_error](nb::handle cls) {
        if (!PyType_Check(cls.ptr()) || PyObject_IsSubclass(cls.ptr(), native_error.ptr()) != 1) {
          PyErr_Clear();
          throw nb::type_error("_set_error_class: expected a subclass of _core.SafetensorError");
        }
        PyObject* previous = flashload::python::error_class;
        flashload::python::error_class = cls.inc_ref().ptr();
        Py_XDECREF(previous);
      },
      nb::arg("cls"),
      "Makes native errors raise `cls` (a subclass of SafetensorError) from now on; the package "
      "sets its public class at import.");
#ifdef FLASHLOAD_HAVE_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif

  nb::class_<Array>(m, "Array",
                    "One loaded tensor; exported without a copy through DLPack. Holds a share of "
                    "the loaded memory, which stays valid after its file is closed.")
      .def_prop_ro("dtype", &Array::dtype, "safetensors dtype name, e.g. 'BF16'")
      .def_prop_ro("shape", &Array::shape)
      .def_prop_ro("nbytes", &Array::nbytes)
      .def("as_raw", &Array::AsRaw,
           "The same tensor exported as unsigned storage of the element width (sub-byte types: "
           "the packed bytes); no copy.")
      .def(
          "__dlpack__",
          [](const Array& a, nb::args, nb::kwargs kwargs) {
            if (kwargs.contains("dl_device")) {
              nb::object device = kwargs["dl_device"];
              if (!device.is_none() && !device.equal(a.DlpackDevice())) {
                throw nb::buffer_error("flashload arrays cannot be exported to another device");
              }
            }
            return a.Dlpack();
          },
          "DLPack capsule (legacy 'dltensor'); stream, max_version and copy are accepted and "
          "ignored: the data is never copied, and a load returns only after every copy and "
          "conversion into it has completed on the device, so it is ready for any stream.")
      .def("__dlpack_device__", &Array::DlpackDevice);

  // The engine options' defaults and their description, from the CLI's own (LoadFlags).
  const flashload::LoadFlags defaults;
  m.attr("default_budget_mib") = defaults.budget_mib;
  // Docstrings must outlive the module: static.
  static const std::string engine_options =
      "`strategy` (auto, direct, buffered, mmap, network or mapped; default " + defaults.strategy +
      "), `threads` (pread workers; 0: "
      "automatic) and `budget_mib` (MiB of reads in flight plus staging, at least 1; default " +
      std::to_string(defaults.budget_mib) +
      ") are engine options, checked as the CLI's flags are (ValueError naming the argument).";
  static const std::string open_doc =
      "Opens the file (or URI) at `path`: loads it whole (GIL released; Ctrl-C "
      "cancels), or with lazy=True reads and validates only its header. `device`: "
      "'cpu', or 'cuda:N' to load into that GPU (one device allocation, pinned "
      "staging). `dtype`: a conversion spec ('bf16', 'F32=F16,lm_head.*:keep'; '' "
      "keeps stored dtypes) applied on the way. " +
      engine_options +
      " _test_delay_ms is for tests only: each engine progress report (about every 64 "
      "MiB and at the end) sleeps that long, to make a load slow on purpose.";
  static const std::string load_model_doc =
      "Loads a file, sharded checkpoint or diffusers folder in one engine run: {component: "
      "File} ('model' for a model without components). GIL released; Ctrl-C cancels. " +
      engine_options + " _test_delay_ms: tests only, as in File.open.";

  nb::class_<File>(m, "File",
                   "One safetensors file: loaded whole by flashload's engine, or opened lazily "
                   "(header only) and loaded on first use.")
      .def_static("open", &File::Open, nb::arg("path"), nb::arg("strategy") = defaults.strategy,
                  nb::arg("threads") = defaults.threads,
                  nb::arg("budget_mib") = defaults.budget_mib, nb::arg("lazy") = false,
                  nb::arg("device") = defaults.device, nb::arg("dtype") = defaults.dtype,
                  nb::arg("_test_delay_ms") = 0, open_doc.c_str())
      .def_static("from_bytes", &File::FromBytes, nb::arg("data"),
                  "Parses and copies an in-memory safetensors image.")
      .def("keys", &File::Keys, "Tensor names, sorted.")
      .def("offset_keys", &File::OffsetKeys, "Tensor names in file order.")
      .def("metadata", &File::Metadata, "__metadata__, or None.")
      .def("__contains__", &File::Contains)
      .def("info", &File::Info, nb::arg("name"),
           "(dtype name, shape) of tensor `name`, from the header; reads no data.")
      .def("get", &File::Get, nb::arg("name"), nb::arg("raw") = false,
           "The tensor `name` (raw: as unsigned storage of the element width). Before the file is "
           "loaded, a host load reads just this tensor, and once the tensors read this way add "
           "up to a quarter of the file's data, all the others in one load; a GPU load reads the "
           "whole file.")
      .def("rows", &File::Rows, nb::arg("name"), nb::arg("start"), nb::arg("stop"),
           nb::arg("raw") = false,
           "Rows [start, stop) of tensor `name` along its first dimension (a 0-d tensor: whole). "
           "Served from memory once the file is loaded, else by one read of just those bytes.")
      .def("box", &File::Box, nb::arg("name"), nb::arg("starts"), nb::arg("stops"),
           nb::arg("raw") = false,
           "The box [starts[d], stops[d]) of tensor `name` (later dimensions whole) in host "
           "memory, read by one engine load of just its bytes (added to bytes_read). Raises when "
           "the tensor is in memory already (index get() then).")
      .def("in_memory", &File::InMemoryPy, nb::arg("name"),
           "Whether tensor `name` is in memory (the file loaded, or the tensor read by get()).")
      .def("load_all", &File::LoadAll,
           "Loads every tensor not in memory yet (the whole file when none is), once. GIL "
           "released; Ctrl-C cancels.")
      .def_prop_ro("name", &File::name)
      .def_prop_ro("header_length", &File::header_length)
      .def_prop_ro("loaded", &File::loaded, "Whether the whole file is in memory.")
      .def_prop_ro("bytes_read", &File::bytes_read,
                   "Bytes of tensor data read from storage so far (header reads not counted).");

  m.def("load_model", &flashload::python::LoadModel, nb::arg("path"),
        nb::arg("strategy") = defaults.strategy, nb::arg("threads") = defaults.threads,
        nb::arg("budget_mib") = defaults.budget_mib, nb::arg("variant") = defaults.variant,
        nb::arg("device") = defaults.device, nb::arg("dtype") = defaults.dtype,
        nb::arg("_test_delay_ms") = 0, load_model_doc.c_str());
  static const std::string load_sharded_doc =
      "Tensor-parallel load of a file, sharded checkpoint or folder: every rank of `communicator` "
      "calls it with the same arguments and gets its shard of each tensor "
      "(torch.tensor_split(t, world, dim)[rank] along the dimension the `shard` rules name, or the "
      "whole tensor when replicated). `communicator`: an object with rank, size, name and the "
      "methods agree(code, message, timeout_s) -> (code, message), all_gather(bytes, timeout_s) "
      "-> [bytes], all_to_all(send views, recv views, timeout_s) (flashload.distributed). "
      "`shard`: 'llama', 'none' or a rules file; `mode`: 'auto', 'local' (each rank reads its "
      "shards) or 'share' (the job reads the model once and the ranks exchange); "
      "`share_window_mib`: bytes read per round of 'share' (0: budget_mib); `timeout_s`: how long "
      "a rank waits for the others at each step. Returns ([(name, Array)] in file order, [report "
      "dict per rank]). A failure on any rank raises on every rank (SafetensorError, or "
      "FileNotFoundError, naming the rank); a rank that does not arrive in time makes the others "
      "raise TimeoutError. GIL released while loading. " +
      engine_options;
  m.def("load_sharded", &flashload::python::LoadShardedPy, nb::arg("path"), nb::arg("communicator"),
        nb::arg("shard") = "llama", nb::arg("mode") = "auto", nb::arg("share_window_mib") = 0,
        nb::arg("timeout_s") = 300.0, nb::arg("strategy") = defaults.strategy,
        nb::arg("threads") = defaults.threads, nb::arg("budget_mib") = defaults.budget_mib,
        nb::arg("variant") = defaults.variant, nb::arg("device") = defaults.device,
        nb::arg("dtype") = defaults.dtype, load_sharded_doc.c_str());
  m.def(
      "redact_url", [](const std::string& uri) { return flashload::RedactUrl(uri); },
      nb::arg("uri"),
      "`uri` as messages show it: no user info, no credential in the query (local paths as "
      "they are).");
  m.def("release_cached_memory", &flashload::ReleaseCachedMemory,
        "Frees the memory kept for the next load of the process: pinned staging of GPU loads and "
        "host memory freed by earlier loads (kept populated). Returns the bytes freed.");
  m.def(
      "model_files",
      [](const std::string& path, const std::string& variant) {
        flashload::ResolveOptions options;
        options.variant = variant;
        flashload::Result<flashload::ModelLayout> layout = [&] {
          nb::gil_scoped_release release;
          return flashload::ResolveModel(path, options);
        }();
        if (!layout.ok()) flashload::python::ThrowStatus(layout.status());
        using Kind = flashload::ModelLayout::Kind;
        const char* kind = layout->kind == Kind::kDiffusers      ? "diffusers"
                           : layout->kind == Kind::kShardedIndex ? "sharded"
                           : layout->kind == Kind::kFolder       ? "folder"
                                                                 : "file";
        std::vector<std::string> files;
        for (const flashload::ModelFile& f : layout->files) files.push_back(f.path);
        return std::make_pair(std::string(kind), files);
      },
      nb::arg("path"), nb::arg("variant") = "",
      "(kind, files in load order) of the model a local path names, resolved as loads resolve it "
      "(kind: 'diffusers', 'sharded', 'folder' or 'file'). Raises SafetensorError as a load "
      "would.");
  m.def("serialize", &flashload::python::Serialize, nb::arg("tensors"),
        nb::arg("metadata") = nb::none(),
        "safetensors bytes of [(name, dtype, shape, buffer)], laid out as the reference does.");
  m.def("serialize_file", &flashload::python::SerializeFile, nb::arg("tensors"), nb::arg("path"),
        nb::arg("metadata") = nb::none(),
        "Writes [(name, dtype, shape, buffer)] to `path` atomically.");
  m.def(
      "read_object",
      [](const std::string& uri, uint64_t max_bytes) {
        // ThrowStatus sets the Python error: it runs with the GIL held, after each release.
        flashload::Result<std::unique_ptr<flashload::Source>> opened =
            flashload::InternalError("not opened");
        {
          nb::gil_scoped_release release;
          opened = flashload::OpenSource(uri);
        }
        if (!opened.ok()) flashload::python::ThrowStatus(opened.status());
        std::unique_ptr<flashload::Source> source = std::move(*opened);
        const uint64_t size = source->size();
        if (size > max_bytes) {
          flashload::python::ThrowStatus(flashload::ResourceExhaustedError(
              flashload::RedactUrl(uri) + ": " + std::to_string(size) + " bytes, more than the " +
              std::to_string(max_bytes) +
              " this read allows; raise max_bytes if the object is expected to be that large"));
        }
        nb::bytes data =
            nb::steal<nb::bytes>(PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size)));
        if (!data.is_valid()) throw nb::python_error();
        std::byte* dst = reinterpret_cast<std::byte*>(PyBytes_AS_STRING(data.ptr()));
        flashload::Status status;
        {
          // The bytes object is not shared yet: filling it needs no GIL.
          nb::gil_scoped_release release;
          status = flashload::ReadExact(*source, 0, std::span<std::byte>(dst, size));
        }
        if (!status.ok()) flashload::python::ThrowStatus(status);
        return data;
      },
      nb::arg("uri"), nb::arg("max_bytes") = uint64_t{1} << 32,
      "The whole object `uri` names (a path, file://, http(s)://, s3:// or an archive member "
      "tar:<archive>!/<member>) as bytes, read through the source registry. FileNotFoundError "
      "when it does not exist; SafetensorError for other errors and for an object larger than "
      "max_bytes.");
}
