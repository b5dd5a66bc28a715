// flashload_slowfs: a read-only FUSE file system that mirrors a source folder and reproduces the
// pathology of GCSFuse-like network file systems, for tests and benchmarks of flashload's FUSE
// path.
//
//   flashload_slowfs SOURCE_DIR MOUNTPOINT [--latency-ms=N] [--refuse-direct]
//                    [--bandwidth-per-fd=BYTES_PER_S] [--max-read=BYTES] [-f] [-o OPT,...]
//   fusermount3 -u MOUNTPOINT
//
// - Every read request sleeps --latency-ms (default 5) before it is answered.
// - Requests on one open file (one FUSE file handle, i.e. one open() by the client) are served one
//   at a time: a mutex per handle is held across the sleep and the read. Different descriptors
//   proceed in parallel (libfuse's multi-threaded loop).
// - --bandwidth-per-fd caps each handle: a read of n bytes also sleeps n / rate.
// - --refuse-direct: open() with O_DIRECT fails with EINVAL, as some FUSE file systems do.
// - --max-read: passed to the kernel as -o max_read (libfuse's default otherwise).
// The kernel page cache stays on (no direct_io) so mmap works, and kernel_cache stays off, so each
// open() starts cold. Mounted read-only; symbolic links are followed inside the source folder.
#define FUSE_USE_VERSION 35

#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace flashload {
namespace {

struct SlowFsOptions {
  std::string source;
  std::chrono::microseconds latency{5000};
  uint64_t bandwidth_per_fd = 0;  // bytes/s; 0: uncapped
  bool refuse_direct = false;
};

// One open() of a client: the source descriptor and the lock that serializes its requests.
struct Handle {
  int fd = -1;
  std::mutex mu;
};

SlowFsOptions g_options;
int g_source_fd = -1;

// FUSE paths start with '/'; the source is opened relative to the source folder's descriptor.
const char* Relative(const char* path) { return path[1] == '\0' ? "." : path + 1; }

Handle* HandleOf(const fuse_file_info* fi) { return reinterpret_cast<Handle*>(fi->fh); }

void* Init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->kernel_cache = 0;
  cfg->direct_io = 0;
  cfg->use_ino = 1;
  return nullptr;
}

int GetAttr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (fi != nullptr && fi->fh != 0) {
    return fstat(HandleOf(fi)->fd, st) == 0 ? 0 : -errno;
  }
  return fstatat(g_source_fd, Relative(path), st, 0) == 0 ? 0 : -errno;
}

int ReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t offset, fuse_file_info* fi,
            fuse_readdir_flags flags) {
  int fd = openat(g_source_fd, Relative(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    close(fd);
    return -err;
  }
  while (dirent* entry = readdir(dir)) {
    struct stat st {};
    st.st_ino = entry->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(entry->d_type));
    if (fill(buf, entry->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  closedir(dir);
  return 0;
}

int Open(const char* path, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  if (g_options.refuse_direct && (fi->flags & O_DIRECT) != 0) return -EINVAL;
  // The source is read through the page cache of the source file system; O_DIRECT only shapes the
  // requests this file system receives.
  int fd = openat(g_source_fd, Relative(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  auto* handle = new Handle;
  handle->fd = fd;
  fi->fh = reinterpret_cast<uint64_t>(handle);
  fi->keep_cache = 0;
  fi->direct_io = 0;
  return 0;
}

int Read(const char* path, char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  Handle* handle = HandleOf(fi);
  std::lock_guard<std::mutex> lock(handle->mu);
  auto due = std::chrono::steady_clock::now() + g_options.latency;
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(handle->fd, buf + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (g_options.bandwidth_per_fd > 0) {
    due += std::chrono::microseconds(done * 1000000 / g_options.bandwidth_per_fd);
  }
  std::this_thread::sleep_until(due);
  return static_cast<int>(done);
}

int Release(const char* path, fuse_file_info* fi) {
  Handle* handle = HandleOf(fi);
  close(handle->fd);
  delete handle;
  fi->fh = 0;
  return 0;
}

int StatFs(const char* path, struct statvfs* st) {
  return fstatvfs(g_source_fd, st) == 0 ? 0 : -errno;
}

// Parses "--name=VALUE" or "--name VALUE"; advances *i past a separate value.
bool TakeValue(int argc, char** argv, int* i, std::string_view name, std::string* value) {
  std::string_view arg = argv[*i];
  if (arg.substr(0, name.size()) != name) return false;
  if (arg.size() > name.size() && arg[name.size()] == '=') {
    *value = std::string(arg.substr(name.size() + 1));
    return true;
  }
  if (arg.size() == name.size() && *i + 1 < argc) {
    *value = argv[++*i];
    return true;
  }
  return false;
}

bool ParseUint(const std::string& text, uint64_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || text[0] == '-') return false;
  *out = v;
  return true;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s SOURCE_DIR MOUNTPOINT [--latency-ms=N] [--refuse-direct]\n"
               "       [--bandwidth-per-fd=BYTES_PER_S] [--max-read=BYTES] [-f] [-o OPT,...]\n"
               "unmount with: fusermount3 -u MOUNTPOINT\n",
               argv0);
  return 2;
}

int Main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::vector<std::string> fuse_args = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string value;
    std::string_view arg = argv[i];
    uint64_t number = 0;
    if (arg == "-h" || arg == "--help") return Usage(argv[0]);
    if (arg == "--refuse-direct") {
      g_options.refuse_direct = true;
    } else if (TakeValue(argc, argv, &i, "--latency-ms", &value)) {
      if (!ParseUint(value, &number)) {
        std::fprintf(stderr, "flashload_slowfs: --latency-ms needs a whole number, got '%s'\n",
                     value.c_str());
        return 2;
      }
      g_options.latency = std::chrono::milliseconds(number);
    } else if (TakeValue(argc, argv, &i, "--bandwidth-per-fd", &value)) {
      if (!ParseUint(value, &number)) {
        std::fprintf(stderr, "flashload_slowfs: --bandwidth-per-fd needs bytes/s, got '%s'\n",
                     value.c_str());
        return 2;
      }
      g_options.bandwidth_per_fd = number;
    } else if (TakeValue(argc, argv, &i, "--max-read", &value)) {
      if (!ParseUint(value, &number) || number == 0) {
        std::fprintf(stderr, "flashload_slowfs: --max-read needs a byte count, got '%s'\n",
                     value.c_str());
        return 2;
      }
      fuse_args.push_back("-omax_read=" + std::to_string(number));
    } else if (arg.substr(0, 2) == "--") {
      std::fprintf(stderr, "flashload_slowfs: unknown option '%s'\n", argv[i]);
      return Usage(argv[0]);
    } else if (arg == "-o" && i + 1 < argc) {
      fuse_args.push_back(argv[i]);
      fuse_args.push_back(argv[++i]);
    } else if (!arg.empty() && arg[0] == '-') {
      fuse_args.push_back(argv[i]);
    } else {
      positional.emplace_back(arg);
    }
  }
  if (positional.size() != 2) return Usage(argv[0]);
  char* source = realpath(positional[0].c_str(), nullptr);
  if (source == nullptr) {
    std::fprintf(stderr, "flashload_slowfs: source folder '%s': %s\n", positional[0].c_str(),
                 std::strerror(errno));
    return 1;
  }
  g_options.source = source;
  std::free(source);
  g_source_fd = open(g_options.source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (g_source_fd < 0) {
    std::fprintf(stderr, "flashload_slowfs: cannot open source folder '%s': %s\n",
                 g_options.source.c_str(), std::strerror(errno));
    return 1;
  }
  fuse_args.push_back(positional[1]);
  fuse_args.push_back("-oro,fsname=flashload_slowfs,subtype=slowfs");

  static const fuse_operations ops = [] {
    fuse_operations o{};
    o.init = Init;
    o.getattr = GetAttr;
    o.readdir = ReadDir;
    o.open = Open;
    o.read = Read;
    o.release = Release;
    o.statfs = StatFs;
    return o;
  }();
  std::vector<char*> raw;
  for (auto& a : fuse_args) raw.push_back(a.data());
  raw.push_back(nullptr);
  int rc = fuse_main(static_cast<int>(raw.size() - 1), raw.data(), &ops, nullptr);
  close(g_source_fd);
  return rc;
}

}  // namespace
}  // namespace flashload

int main(int argc, char** argv) { return flashload::Main(argc, argv); }
