// flashload._core: the native half of the flashload Python package (nanobind).
//
// What it exposes (the Python package builds the safetensors-compatible API on top):
//   File(path, strategy, threads, budget_mib)  one safetensors file, loaded whole by Load() when
//                                               constructed; keys, offset keys, metadata, tensors.
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
// Threading: loads and serialization run with the GIL released; a load runs on a worker thread
// while the calling thread polls for signals, so Ctrl-C cancels it (KeyboardInterrupt).
#include <Python.h>
#include <dlpack/dlpack.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/header.h"
#include "flashload/loader.h"
#include "flashload/model.h"
#include "flashload/status.h"
#include "flashload/tensor.h"
#include "flashload/writer.h"

namespace nb = nanobind;

namespace flashload::python {
namespace {

// The C++ side of flashload.SafetensorError (translated by nanobind).
class SafetensorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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
// let Python handle signals, and cancels the load when a handler raises (Ctrl-C).
Result<LoadedModel> LoadInterruptibly(const std::string& path, LoadOptions options) {
  std::atomic<bool> cancel{false};
  options.cancel = &cancel;
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

// Engine options from the Python keyword arguments; ValueError for bad ones.
LoadOptions MakeLoadOptions(const std::string& strategy, uint32_t threads, uint64_t budget_mib) {
  LoadOptions options;
  const std::optional<Strategy> parsed = ParseStrategy(strategy);
  if (!parsed) {
    throw nb::value_error(
        ("unknown strategy '" + strategy + "' (expected auto, direct, buffered or mmap)").c_str());
  }
  if (budget_mib == 0) throw nb::value_error("budget_mib must be at least 1");
  options.strategy = *parsed;
  options.threads = threads;
  options.memory_budget = budget_mib << 20;
  return options;
}

// One loaded safetensors file (or one component of a model: its shards' tensors in file order).
class File {
 public:
  File(std::string name, Header header, TensorMap tensors)
      : name_(std::move(name)), header_(std::move(header)), tensors_(std::move(tensors)) {}

  static File Open(const std::string& path, const std::string& strategy, uint32_t threads,
                   uint64_t budget_mib) {
    Result<LoadedModel> model =
        LoadInterruptibly(path, MakeLoadOptions(strategy, threads, budget_mib));
    if (!model.ok()) ThrowStatus(model.status());
    if (model->headers.size() != 1) {
      throw SafetensorError(path + ": expected one safetensors file, found " +
                            std::to_string(model->headers.size()));
    }
    Header header = std::move(model->headers.begin()->second);
    return File(path, std::move(header), std::move(model->tensors));
  }

  // A File over a copy of an in-memory safetensors image (`safetensors.*.load(bytes)`).
  static File FromBytes(nb::bytes data) {
    const size_t size = data.size();
    // 4096-aligned like the host arenas, so tensors keep the alignment the file laid out.
    constexpr std::align_val_t kAlign{4096};
    std::shared_ptr<std::byte> buffer(
        static_cast<std::byte*>(::operator new(size == 0 ? 1 : size, kAlign)),
        [](std::byte* p) { ::operator delete(p, kAlign); });
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
    std::vector<std::string> keys;
    keys.reserve(tensors_.size());
    for (const auto& [name, tensor] : tensors_) keys.push_back(name);
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

  bool Contains(const std::string& name) const { return tensors_.contains(name); }

  Array Get(const std::string& name, bool raw) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      throw SafetensorError("File " + name_ + " does not contain tensor " + name);
    }
    return Array(it->second, raw);
  }

  const std::string& name() const { return name_; }
  uint64_t header_length() const { return header_.header_length; }

 private:
  std::string name_;
  Header header_;
  TensorMap tensors_;
};

// Loads a whole model (file, sharded checkpoint or diffusers folder) in one engine run and returns
// one File per component ("model" for a model without components), tensor names unprefixed.
std::map<std::string, File> LoadModel(const std::string& path, const std::string& strategy,
                                      uint32_t threads, uint64_t budget_mib,
                                      const std::string& variant) {
  LoadOptions options = MakeLoadOptions(strategy, threads, budget_mib);
  options.variant = variant;
  Result<LoadedModel> model = LoadInterruptibly(path, std::move(options));
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
  std::map<std::string, File> files;
  for (auto& [component, header] : headers) {
    const std::string key = component.empty() ? "model" : component;
    files.emplace(key, File(component.empty() ? path : path + "/" + component, std::move(header),
                            std::move(tensors[component])));
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

}  // namespace
}  // namespace flashload::python

NB_MODULE(_core, m) {
  using flashload::python::Array;
  using flashload::python::File;
  m.doc() = "flashload native module: loads and writes safetensors files; see flashload.safe_open";

  nb::exception<flashload::python::SafetensorError>(m, "SafetensorError", PyExc_Exception);

  nb::class_<Array>(m, "Array",
                    "One loaded tensor; exported without a copy through DLPack. Holds a share of "
                    "the loaded memory, which stays valid after its file is closed.")
      .def_prop_ro("dtype", &Array::dtype, "safetensors dtype name, e.g. 'BF16'")
      .def_prop_ro("shape", &Array::shape)
      .def_prop_ro("nbytes", &Array::nbytes)
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
          "ignored (host memory, never copied).")
      .def("__dlpack_device__", &Array::DlpackDevice);

  nb::class_<File>(m, "File", "One safetensors file, loaded whole by flashload's engine.")
      .def_static("open", &File::Open, nb::arg("path"), nb::arg("strategy") = "auto",
                  nb::arg("threads") = 0, nb::arg("budget_mib") = 256,
                  "Loads the file at `path` (GIL released; Ctrl-C cancels).")
      .def_static("from_bytes", &File::FromBytes, nb::arg("data"),
                  "Parses and copies an in-memory safetensors image.")
      .def("keys", &File::Keys, "Tensor names, sorted.")
      .def("offset_keys", &File::OffsetKeys, "Tensor names in file order.")
      .def("metadata", &File::Metadata, "__metadata__, or None.")
      .def("__contains__", &File::Contains)
      .def("get", &File::Get, nb::arg("name"), nb::arg("raw") = false,
           "The tensor `name` (raw: as unsigned storage of the element width).")
      .def_prop_ro("name", &File::name)
      .def_prop_ro("header_length", &File::header_length);

  m.def("load_model", &flashload::python::LoadModel, nb::arg("path"), nb::arg("strategy") = "auto",
        nb::arg("threads") = 0, nb::arg("budget_mib") = 256, nb::arg("variant") = "",
        "Loads a file, sharded checkpoint or diffusers folder in one engine run: {component: "
        "File} ('model' for a model without components). GIL released; Ctrl-C cancels.");
  m.def("serialize", &flashload::python::Serialize, nb::arg("tensors"),
        nb::arg("metadata") = nb::none(),
        "safetensors bytes of [(name, dtype, shape, buffer)], laid out as the reference does.");
  m.def("serialize_file", &flashload::python::SerializeFile, nb::arg("tensors"), nb::arg("path"),
        nb::arg("metadata") = nb::none(),
        "Writes [(name, dtype, shape, buffer)] to `path` atomically.");
}
