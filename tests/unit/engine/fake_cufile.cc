// A stand-in for libcufile.so with the entry points flashload resolves, for testing the
// GPUDirect Storage path without a GPU. "Device" memory is host memory here (the tests pair it
// with a CpuCopyEngine whose device memory is host memory), so cuFileRead is a pread into it.
//
// Controlled by the tests through fake_cufile_set(key, value) / fake_cufile_get(key):
//   nvfs_major, nvfs_minor   version in cuFileDriverGetProperties (0.0: compatibility mode)
//   driver_open_error        cuFileDriverOpen fails with this cuFile error (0: succeeds)
//   refuse_register          cuFileHandleRegister fails (cuFile error 5008)
//   refuse_buffers           cuFileBufRegister fails (cuFile error 5012)
//   fail_read_at             a read covering this file offset fails (-1: none)
//   fail_with_errno          that failure is -1 with errno EIO (else the negated cuFile error 5011)
//   short_reads              each read returns at most half of what was asked (>= 4096 bytes)
// Counters (read only): handles, buffers (live registrations), reads, misplaced_reads (a non-zero
// buffer offset on a base that is not a registered buffer, or a base inside one that is not its
// start: both misuses of the cuFile API), not_direct_fds (registrations of descriptors opened
// without O_DIRECT).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace {

struct Err {
  int err;
  int cu_err;
};
struct Descr {
  int type;
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};
struct Handle {
  int fd;  // a descriptor of the same file without O_DIRECT (the tests' buffers are unaligned)
};

std::mutex mu;
std::map<std::string, long long>& Values() {
  static std::map<std::string, long long> values{{"nvfs_major", 2}, {"fail_read_at", -1}};
  return values;
}
std::map<const char*, size_t>& Buffers() {
  static std::map<const char*, size_t> buffers;
  return buffers;
}

long long Get(const std::string& key) {
  std::lock_guard lock(mu);
  auto it = Values().find(key);
  return it == Values().end() ? 0 : it->second;
}
void Add(const std::string& key, long long d) {
  std::lock_guard lock(mu);
  Values()[key] += d;
}

}  // namespace

extern "C" {

void fake_cufile_set(const char* key, long long value) {
  std::lock_guard lock(mu);
  Values()[key] = value;
}

long long fake_cufile_get(const char* key) { return Get(key); }

Err cuFileDriverOpen() { return Err{static_cast<int>(Get("driver_open_error")), 0}; }

Err cuFileDriverGetProperties(void* props) {
  unsigned v[2] = {static_cast<unsigned>(Get("nvfs_major")),
                   static_cast<unsigned>(Get("nvfs_minor"))};
  std::memcpy(props, v, sizeof(v));
  return Err{0, 0};
}

Err cuFileHandleRegister(void** handle, Descr* descr) {
  if (Get("refuse_register") != 0) return Err{5008, 0};
  if (descr == nullptr || descr->type != 1) return Err{5020, 0};
  const int flags = fcntl(descr->handle.fd, F_GETFL);
  if (flags < 0) return Err{5020, 0};
  if ((flags & O_DIRECT) == 0) Add("not_direct_fds", 1);
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", descr->handle.fd);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Err{5020, 0};
  *handle = new Handle{fd};
  Add("handles", 1);
  return Err{0, 0};
}

void cuFileHandleDeregister(void* handle) {
  auto* h = static_cast<Handle*>(handle);
  close(h->fd);
  delete h;
  Add("handles", -1);
}

ssize_t cuFileRead(void* handle, void* base, size_t size, off_t file_offset, off_t base_offset) {
  Add("reads", 1);
  {
    std::lock_guard lock(mu);
    const char* b = static_cast<const char*>(base);
    bool registered_base = Buffers().count(b) != 0;
    bool inside = false;
    for (const auto& [p, n] : Buffers()) {
      if (b > p && b < p + n) inside = true;
    }
    if ((base_offset != 0 && !registered_base) || inside) Values()["misplaced_reads"] += 1;
  }
  const long long fail_at = Get("fail_read_at");
  if (fail_at >= 0 && fail_at >= file_offset && fail_at < file_offset + (off_t)size) {
    if (Get("fail_with_errno") != 0) {
      errno = EIO;
      return -1;
    }
    return -5011;
  }
  size_t want = size;
  if (Get("short_reads") != 0 && size > 4096) want = size / 2 > 4096 ? size / 2 : 4096;
  auto* h = static_cast<Handle*>(handle);
  return pread(h->fd, static_cast<char*>(base) + base_offset, want, file_offset);
}

Err cuFileBufRegister(const void* base, size_t length, int) {
  if (Get("refuse_buffers") != 0) return Err{5012, 0};
  std::lock_guard lock(mu);
  Buffers()[static_cast<const char*>(base)] = length;
  Values()["buffers"] += 1;
  return Err{0, 0};
}

Err cuFileBufDeregister(const void* base) {
  std::lock_guard lock(mu);
  if (Buffers().erase(static_cast<const char*>(base)) == 0) return Err{5012, 0};
  Values()["buffers"] -= 1;
  return Err{0, 0};
}

}  // extern "C"
