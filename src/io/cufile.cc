#include "io/cufile.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "io/local_file.h"
#include "io/read_pool.h"

namespace flashload {

// The cuFile types flashload passes, with the layout of cufile.h.
struct CuFileError {
  int err;     // CUfileOpError: 0 success, 5000 + n cuFile errors
  int cu_err;  // CUresult, when err is CU_FILE_CUDA_DRIVER_ERROR
};
struct CuFileDescr {
  int type;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};
constexpr int kHandleTypeOpaqueFd = 1;

struct CuFileApi {
  void* library = nullptr;
  std::string name;
  CuFileError (*driver_open)() = nullptr;
  CuFileError (*driver_get_properties)(void* props) = nullptr;  // optional
  CuFileError (*handle_register)(void** handle, CuFileDescr* descr) = nullptr;
  void (*handle_deregister)(void* handle) = nullptr;
  ssize_t (*read)(void* handle, void* base, size_t size, off_t file_offset,
                  off_t base_offset) = nullptr;
  CuFileError (*buf_register)(const void* base, size_t length, int flags) = nullptr;
  CuFileError (*buf_deregister)(const void* base) = nullptr;
};

namespace {

std::string ErrorText(CuFileError e) {
  if (e.err == 0) return "success";
  if (e.cu_err != 0) return fmt::format("cuFile error {} (CUDA driver error {})", e.err, e.cu_err);
  return fmt::format("cuFile error {}", e.err);
}

// cuFileRead's failure value: -1 with errno, or the negated cuFile error.
std::string ReadErrorText(ssize_t r, int saved_errno) {
  if (r == -1) return std::strerror(saved_errno);
  return fmt::format("cuFile error {}", -r);
}

template <typename F>
bool Resolve(void* lib, const char* symbol, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, symbol));
  return fn != nullptr;
}

// What the driver properties say of nvidia-fs: its version, 0.0 when it is not loaded. Read from
// the start of CUfileDrvProps (nvfs.major_version, nvfs.minor_version) into a generously sized
// zeroed buffer, so a later, larger layout cannot overflow it.
std::pair<unsigned, unsigned> NvfsVersion(const CuFileApi& api, bool* known) {
  *known = false;
  if (api.driver_get_properties == nullptr) return {0, 0};
  alignas(16) unsigned char props[4096] = {};
  if (api.driver_get_properties(props).err != 0) return {0, 0};
  *known = true;
  unsigned v[2];
  std::memcpy(v, props, sizeof(v));
  return {v[0], v[1]};
}

class CuFileSource final : public io_internal::PooledSource {
 public:
  CuFileSource(std::string path, int fd, uint64_t size, void* handle,
               std::shared_ptr<const CuFileApi> api, BindDeviceFn bind_device,
               const CuFileSourceOptions& options)
      : path_(std::move(path)),
        fd_(fd),
        size_(size),
        handle_(handle),
        api_(std::move(api)),
        bind_device_(std::move(bind_device)),
        options_(options),
        bound_(std::max<uint32_t>(options.threads, 1), 0),
        pool_(std::make_unique<io_internal::ReadPool>(
            static_cast<uint32_t>(bound_.size()),
            [this](const ReadRequest& r, uint32_t worker) { return Read(r, worker); }, path_)) {}

  ~CuFileSource() override {
    // Joins the workers first: the handle and descriptor go only after every read.
    pool_.reset();
    api_->handle_deregister(handle_);
    ::close(fd_);
  }

  const std::string& name() const override { return path_; }
  uint64_t size() const override { return size_; }
  SourceCaps caps() const override {
    SourceCaps c;
    c.direct_io = true;
    c.alignment = 4096;
    c.max_in_flight = static_cast<uint32_t>(bound_.size());
    c.preferred_chunk = options_.preferred_chunk;
    return c;
  }
  std::string_view backend() const override { return "cufile"; }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions&) const override {
    return FailedPreconditionError(fmt::format(
        "{}: a GPUDirect Storage source reads only into device memory, through Submit() "
        "(asked for {} bytes at byte offset {})",
        path_, dst.size(), offset));
  }

 protected:
  io_internal::ReadPool& pool() override { return *pool_; }

 private:
  Result<size_t> Read(const ReadRequest& r, uint32_t worker) {
    if (!bound_[worker]) {
      Status st = bind_device_();
      if (!st.ok()) return st.WithContext(fmt::format("{}: binding a cuFile reader", path_));
      bound_[worker] = 1;
    }
    const uint64_t end = std::min(r.offset + r.length, size_);
    uint64_t done = 0;
    while (r.offset + done < end) {
      const uint64_t want = end - r.offset - done;
      auto [base, within] = options_.buffers != nullptr
                                ? options_.buffers->Locate(r.dst + done, want)
                                : std::pair<void*, uint64_t>{r.dst + done, 0};
      errno = 0;
      const ssize_t n = api_->read(handle_, base, want, static_cast<off_t>(r.offset + done),
                                   static_cast<off_t>(within));
      const int saved = errno;
      if (n < 0) {
        if (n == -1 && saved == EINTR) continue;
        return IoError(fmt::format("{}: cuFileRead of {} bytes at byte offset {} failed: {}", path_,
                                   want, r.offset + done, ReadErrorText(n, saved)));
      }
      if (n == 0) break;  // end of file: the engine reports truncation with the tensor named
      done += static_cast<uint64_t>(n);
    }
    return done;
  }

  const std::string path_;
  const int fd_;
  const uint64_t size_;
  void* const handle_;
  const std::shared_ptr<const CuFileApi> api_;
  const BindDeviceFn bind_device_;
  const CuFileSourceOptions options_;
  std::vector<char> bound_;  // per worker: BindThread done (each worker touches only its own)
  std::unique_ptr<io_internal::ReadPool> pool_;  // last: its workers use everything above
};

}  // namespace

Status CuFileBuffers::Add(void* p, uint64_t bytes) {
  if (p == nullptr || bytes == 0) return Status();
  const CuFileError e = api_->buf_register(p, bytes, 0);
  if (e.err != 0) {
    return FailedPreconditionError(
        fmt::format("cuFileBufRegister of {} bytes refused ({})", bytes, ErrorText(e)));
  }
  regions_.emplace_back(static_cast<std::byte*>(p), bytes);
  std::sort(regions_.begin(), regions_.end());
  return Status();
}

void CuFileBuffers::Clear() {
  for (const auto& [p, n] : regions_) api_->buf_deregister(p);
  regions_.clear();
}

std::pair<void*, uint64_t> CuFileBuffers::Locate(const void* p, uint64_t bytes) const {
  const auto* b = static_cast<const std::byte*>(p);
  auto it = std::upper_bound(regions_.begin(), regions_.end(), b,
                             [](const std::byte* x, const auto& r) { return x < r.first; });
  if (it != regions_.begin()) {
    --it;
    if (b >= it->first && b + bytes <= it->first + it->second) {
      return {it->first, static_cast<uint64_t>(b - it->first)};
    }
  }
  return {const_cast<std::byte*>(b), 0};
}

CuFileDriver::~CuFileDriver() = default;

std::shared_ptr<CuFileDriver> CuFileDriver::Open(const std::vector<std::string>& libraries) {
  std::shared_ptr<CuFileDriver> d(new CuFileDriver());
  std::string errors;
  void* lib = nullptr;
  std::string name;
  for (const std::string& candidate : libraries) {
    // RTLD_NOLOAD first: a library already loaded by this process is reused as is.
    lib = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (lib == nullptr) lib = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) {
      name = candidate;
      break;
    }
    const char* err = dlerror();
    errors += fmt::format("{}{}", errors.empty() ? "" : "; ", err != nullptr ? err : candidate);
  }
  if (lib == nullptr) {
    d->reason_ = fmt::format("pinned staging: GPUDirect Storage unavailable ({})", errors);
    return d;
  }
  // The library stays loaded for the life of the process (no dlclose): cuFile keeps threads and
  // driver state that outlive any one load.
  auto api = std::make_shared<CuFileApi>();
  api->library = lib;
  api->name = name;
  const char* missing = nullptr;
  if (!Resolve(lib, "cuFileDriverOpen", api->driver_open)) missing = "cuFileDriverOpen";
  if (!Resolve(lib, "cuFileHandleRegister", api->handle_register)) missing = "cuFileHandleRegister";
  if (!Resolve(lib, "cuFileHandleDeregister", api->handle_deregister)) {
    missing = "cuFileHandleDeregister";
  }
  if (!Resolve(lib, "cuFileRead", api->read)) missing = "cuFileRead";
  if (!Resolve(lib, "cuFileBufRegister", api->buf_register)) missing = "cuFileBufRegister";
  if (!Resolve(lib, "cuFileBufDeregister", api->buf_deregister)) missing = "cuFileBufDeregister";
  Resolve(lib, "cuFileDriverGetProperties", api->driver_get_properties);
  if (missing != nullptr) {
    d->reason_ =
        fmt::format("pinned staging: {} lacks the cuFile API ({} not found)", name, missing);
    return d;
  }
  const CuFileError opened = api->driver_open();
  if (opened.err != 0) {
    d->reason_ =
        fmt::format("pinned staging: cuFileDriverOpen ({}) failed: {}", name, ErrorText(opened));
    return d;
  }
  d->api_ = api;
  if (const char* force = std::getenv("CUFILE_FORCE_COMPAT_MODE");
      force != nullptr && (std::strcmp(force, "true") == 0 || std::strcmp(force, "1") == 0)) {
    d->reason_ = fmt::format(
        "pinned staging: cuFile ({}) is in compatibility mode (CUFILE_FORCE_COMPAT_MODE), which "
        "reads through the page cache",
        name);
    return d;
  }
  bool known = false;
  const auto [major, minor] = NvfsVersion(*api, &known);
  if (!known) {
    d->reason_ = fmt::format(
        "pinned staging: cuFile ({}) cannot say whether the nvidia-fs driver is loaded "
        "(cuFileDriverGetProperties unavailable or failed)",
        name);
    return d;
  }
  if (major == 0 && minor == 0) {
    d->reason_ = fmt::format(
        "pinned staging: cuFile ({}) is in compatibility mode (the nvidia-fs driver is not "
        "loaded), which reads through the page cache",
        name);
    return d;
  }
  d->direct_ = true;
  d->reason_ = fmt::format("GPUDirect Storage: cuFile ({}), nvidia-fs {}.{}", name, major, minor);
  return d;
}

std::shared_ptr<CuFileDriver> CuFileDriver::Shared() {
  static std::once_flag once;
  static std::shared_ptr<CuFileDriver> driver;
  std::call_once(once, [] { driver = Open(DefaultLibraries()); });
  return driver;
}

Result<std::unique_ptr<Source>> CuFileDriver::OpenSource(const std::string& path,
                                                         BindDeviceFn bind_device,
                                                         const CuFileSourceOptions& options) const {
  if (!direct_ || !api_) return FailedPreconditionError(reason_);
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return NotFoundError(fmt::format("{}: no such file", path));
    return FailedPreconditionError(fmt::format(
        "pinned staging: {} cannot be opened with O_DIRECT ({})", path, std::strerror(e)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return IoError(fmt::format("{}: fstat failed: {}", path, std::strerror(e)));
  }
  FL_RETURN_IF_ERROR(bind_device());
  CuFileDescr descr{};
  descr.type = kHandleTypeOpaqueFd;
  descr.handle.fd = fd;
  void* handle = nullptr;
  const CuFileError reg = api_->handle_register(&handle, &descr);
  if (reg.err != 0) {
    ::close(fd);
    return FailedPreconditionError(
        fmt::format("pinned staging: cuFileHandleRegister refused {} ({})", path, ErrorText(reg)));
  }
  return std::unique_ptr<Source>(std::make_unique<CuFileSource>(
      path, fd, static_cast<uint64_t>(st.st_size), handle, api_, std::move(bind_device), options));
}

std::shared_ptr<CuFileBuffers> CuFileDriver::NewBuffers() const {
  if (!direct_ || !api_) return nullptr;
  return std::make_shared<CuFileBuffers>(api_);
}

}  // namespace flashload
