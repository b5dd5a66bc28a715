#include "cli/baselines.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <simdjson.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "flashload/header.h"
#include "io/page_cache.h"

namespace flashload::cli {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Keeps the compiler from proving a buffer dead and dropping the copy into it.
inline void Escape(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

BaselineResult Named(std::string name, std::string detail) {
  BaselineResult r;
  r.name = std::move(name);
  r.detail = std::move(detail);
  return r;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct OpenFile {
  Fd fd;
  uint64_t size;
};

// Opens `path` read-only (and close-on-exec) with `flags` added, and takes its size. With O_DIRECT,
// a file system that refuses it is kFailedPrecondition.
Result<OpenFile> OpenForRead(const std::string& path, int flags = 0) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | flags));
  if (fd.get() < 0) {
    if (errno == EINVAL && (flags & O_DIRECT) != 0) {
      return FailedPreconditionError(
          fmt::format("{}: the file system does not support O_DIRECT", path));
    }
    return ErrnoToStatus(errno, "open", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, "fstat", path);
  return OpenFile{std::move(fd), static_cast<uint64_t>(st.st_size)};
}

// Bytes a baseline delivered, kept until its checksum is taken.
struct OwnedBytes {
  std::unique_ptr<std::byte[]> data;
  uint64_t size;
};

// XXH3-64 of `parts`, in order.
uint64_t Xxh3Of(const std::vector<OwnedBytes>& parts) {
  XXH3_state_t* h = XXH3_createState();
  XXH3_64bits_reset(h);
  for (const OwnedBytes& p : parts) XXH3_64bits_update(h, p.data.get(), p.size);
  const uint64_t digest = XXH3_64bits_digest(h);
  XXH3_freeState(h);
  return digest;
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, FreeDeleter>;

Result<AlignedBuffer> AllocAligned(uint64_t bytes) {
  const uint64_t rounded = std::max<uint64_t>(4096, (bytes + 4095) & ~uint64_t{4095});
  void* p = std::aligned_alloc(4096, rounded);
  if (p == nullptr) return ResourceExhaustedError(fmt::format("cannot allocate {} bytes", bytes));
  return AlignedBuffer(static_cast<std::byte*>(p));
}

int64_t ProcStatusKb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::strtoll(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return -1;
}

// The process's anonymous memory in transparent huge pages (kB), -1 when /proc does not say.
int64_t AnonHugePagesKb() {
  std::ifstream f("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("AnonHugePages:", 0) == 0) return std::strtoll(line.c_str() + 14, nullptr, 10);
  }
  return -1;
}

// Reads the `len` bytes at `offset` of an O_DIRECT descriptor into `dst` (aligned). Requests are
// rounded up to 4 KiB, as O_DIRECT wants; the file's end makes the last one come back short.
Status ReadDirect(int fd, std::byte* dst, uint64_t len, uint64_t offset, const std::string& path) {
  const uint64_t request = (len + 4095) & ~uint64_t{4095};
  uint64_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, dst + done, request - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoToStatus(errno, "pread (O_DIRECT)", path, offset + done);
    if (n == 0)
      return IoError(fmt::format("{}: unexpected end of file at {}", path, offset + done));
    done += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// One pass over `files` with `depth` threads reading `block` bytes at a time, sequentially.
Result<double> DirectPass(std::span<const std::string> files, uint32_t depth, uint64_t block,
                          XXH3_state_t* hash) {
  const auto start = Clock::now();
  for (const std::string& path : files) {
    FL_ASSIGN_OR_RETURN(const OpenFile file, OpenForRead(path, O_DIRECT));
    const Fd& fd = file.fd;
    const uint64_t size = file.size;
    // verify: one buffer of the file's size; otherwise one block per thread, discarded like fio.
    AlignedBuffer whole;
    if (hash) {
      FL_ASSIGN_OR_RETURN(whole, AllocAligned(size + block));
    }
    std::atomic<uint64_t> next{0};
    std::mutex mu;
    Status first_error;
    auto worker = [&] {
      AlignedBuffer own;
      if (!hash) {
        auto b = AllocAligned(block);
        if (!b.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          first_error = b.status();
          return;
        }
        own = std::move(*b);
      }
      for (uint64_t off; (off = next.fetch_add(block)) < size;) {
        std::byte* dst = hash ? whole.get() + off : own.get();
        Status s = ReadDirect(fd.get(), dst, std::min(block, size - off), off, path);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.ok()) first_error = s;
          next.store(size);
          return;
        }
        Escape(dst);
      }
    };
    std::vector<std::thread> threads;
    for (uint32_t i = 0; i < depth; ++i) threads.emplace_back(worker);
    for (std::thread& t : threads) t.join();
    FL_RETURN_IF_ERROR(first_error);
    if (hash) XXH3_64bits_update(hash, whole.get(), size);
  }
  return SecondsSince(start);
}

bool FindExecutable(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', pos), dirs.size());
    const std::string candidate = dirs.substr(pos, end - pos) + "/" + name;
    if (end > pos && ::access(candidate.c_str(), X_OK) == 0) return true;
    pos = end + 1;
  }
  return false;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs one fio job; returns its read bandwidth in bytes/s.
Result<double> RunFio(const std::string& path, uint32_t depth) {
  char json_path[] = "/tmp/flashload-fio-XXXXXX";
  const int json_fd = ::mkstemp(json_path);
  if (json_fd < 0) return ErrnoToStatus(errno, "mkstemp", json_path);
  ::close(json_fd);
  std::string fio_name;  // fio splits --filename at ':'
  for (char c : path) fio_name += c == ':' ? std::string("\\:") : std::string(1, c);
  const std::string cmd = fmt::format(
      "fio --name=flashload --readonly --rw=read --direct=1 --ioengine=io_uring --bs=1M "
      "--iodepth={} --invalidate=0 --filename={} --output-format=json --output={} 2>&1",
      depth, ShellQuote(fio_name), ShellQuote(json_path));
  std::string console;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    ::unlink(json_path);
    return ErrnoToStatus(errno, "popen", "fio");
  }
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) console.append(buf, n);
  const int rc = ::pclose(pipe);
  std::ifstream f(json_path);
  std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ::unlink(json_path);
  if (rc != 0) {
    return IoError(fmt::format("fio on {} (iodepth {}) failed: {}", path, depth,
                               console.empty() ? out : console));
  }
  const size_t brace = out.find('{');  // fio may print notes before the JSON
  if (brace == std::string::npos) {
    return DataLossError(fmt::format("fio on {}: no JSON in its output: {}", path, out));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(out.data() + brace, out.size() - brace).get(doc)) {
    return DataLossError(fmt::format("fio on {}: unreadable JSON output", path));
  }
  int64_t bw = 0;
  if (doc["jobs"].at(0)["read"]["bw_bytes"].get(bw) || bw <= 0) {
    return DataLossError(fmt::format("fio on {}: no read bw_bytes in its output", path));
  }
  return static_cast<double>(bw);
}

}  // namespace

Result<double> ResidentFractionOf(std::span<const std::string> files) {
  double resident = 0, total = 0;
  for (const std::string& path : files) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
    FL_ASSIGN_OR_RETURN(const double f, ResidentFraction(path));
    resident += f * static_cast<double>(st.st_size);
    total += static_cast<double>(st.st_size);
  }
  return total > 0 ? resident / total : 1.0;
}

Result<double> EvictFiles(std::span<const std::string> files) {
  for (const std::string& path : files) FL_RETURN_IF_ERROR(EvictFromPageCache(path));
  return ResidentFractionOf(files);
}

PeakRssMeter::PeakRssMeter() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  if (!clear.good()) return;
  const int64_t kb = ProcStatusKb("VmRSS");
  start_rss_ = kb < 0 ? -1 : kb * 1024;
}

int64_t PeakRssMeter::PeakDeltaBytes() const {
  if (start_rss_ < 0) return -1;
  const int64_t hwm = ProcStatusKb("VmHWM");
  return hwm < 0 ? -1 : std::max<int64_t>(0, hwm * 1024 - start_rss_);
}

Result<BaselineResult> MmapCopyBaseline(std::span<const std::string> files,
                                        const BaselineOptions& options) {
  BaselineResult r = Named("mmap+copy", "mmap, per-tensor new + memcpy, 1 thread");
  std::vector<OwnedBytes> tensors;  // the loaded model, in file order
  PeakRssMeter rss;
  const auto start = Clock::now();
  for (const std::string& path : files) {
    FL_ASSIGN_OR_RETURN(const OpenFile opened, OpenForRead(path));
    const uint64_t size = opened.size;
    if (size == 0) return DataLossError(fmt::format("{}: empty file", path));
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, opened.fd.get(), 0);
    if (map == MAP_FAILED) return ErrnoToStatus(errno, "mmap", path);
    struct Unmap {
      void* p;
      uint64_t n;
      ~Unmap() { ::munmap(p, n); }
    } unmap{map, size};
    const auto* bytes = static_cast<const std::byte*>(map);
    const std::span<const std::byte> file(bytes, size);
    FL_ASSIGN_OR_RETURN(const uint64_t n, ParseHeaderLength(file, size, path));
    FL_ASSIGN_OR_RETURN(
        const Header header,
        ParseHeaderJson(std::string_view(reinterpret_cast<const char*>(bytes) + 8, n), n, size,
                        path));
    const std::byte* data = bytes + header.data_offset();
    for (const TensorInfo& t : header.tensors) {
      OwnedBytes c{std::unique_ptr<std::byte[]>(new std::byte[t.byte_size()]), t.byte_size()};
      std::memcpy(c.data.get(), data + t.data_begin, t.byte_size());
      Escape(c.data.get());
      r.bytes += t.byte_size();
      tensors.push_back(std::move(c));
    }
  }
  r.seconds = SecondsSince(start);
  r.peak_rss_delta = rss.PeakDeltaBytes();
  if (options.verify) r.checksum = Xxh3Of(tensors);
  return r;
}

Result<BaselineResult> BufferedReadBaseline(std::span<const std::string> files,
                                            const BaselineOptions& options) {
  BaselineResult r = Named("read", "read() of each whole file into one buffer, 1 thread");
  std::vector<OwnedBytes> buffers;  // each file whole, in order
  PeakRssMeter rss;
  const auto start = Clock::now();
  for (const std::string& path : files) {
    FL_ASSIGN_OR_RETURN(const OpenFile file, OpenForRead(path));
    const uint64_t size = file.size;
    std::unique_ptr<std::byte[]> buf(new std::byte[size]);
    uint64_t done = 0;
    while (done < size) {
      const ssize_t n = ::read(file.fd.get(), buf.get() + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoToStatus(errno, "read", path, done);
      if (n == 0) return IoError(fmt::format("{}: file shrank while reading, at {}", path, done));
      done += static_cast<uint64_t>(n);
    }
    Escape(buf.get());
    r.bytes += size;
    buffers.push_back({std::move(buf), size});
  }
  r.seconds = SecondsSince(start);
  r.peak_rss_delta = rss.PeakDeltaBytes();
  if (options.verify) r.checksum = Xxh3Of(buffers);
  return r;
}

Result<BaselineResult> DirectReadLimit(std::span<const std::string> files,
                                       const DirectReadOptions& options) {
  if (options.depths.empty() || options.block_bytes == 0 || options.block_bytes % 4096 != 0) {
    return InvalidArgumentError("direct read: need at least one depth and a block of n x 4096");
  }
  BaselineResult r = Named("direct", "");
  for (const std::string& path : files) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
    r.bytes += static_cast<uint64_t>(st.st_size);
  }
  r.seconds = -1;
  for (uint32_t depth : options.depths) {
    if (depth == 0) return InvalidArgumentError("direct read: depth 0");
    XXH3_state_t* hash = options.verify ? XXH3_createState() : nullptr;
    if (hash) XXH3_64bits_reset(hash);
    PeakRssMeter rss;
    Result<double> seconds = DirectPass(files, depth, options.block_bytes, hash);
    const int64_t peak = rss.PeakDeltaBytes();
    std::optional<uint64_t> checksum;
    if (hash) checksum = XXH3_64bits_digest(hash);
    XXH3_freeState(hash);
    if (!seconds.ok()) return seconds.status();
    if (r.seconds < 0 || *seconds < r.seconds) {
      r.seconds = *seconds;
      r.peak_rss_delta = peak;
      r.checksum = checksum;
      r.detail = fmt::format("O_DIRECT pread, {} threads, {} KiB blocks", depth,
                             options.block_bytes >> 10);
    }
  }
  return r;
}

Result<BaselineResult> FioLimit(std::span<const std::string> files,
                                std::span<const uint32_t> depths) {
  if (!FindExecutable("fio")) return NotFoundError("fio is not installed (apt-get install fio)");
  if (depths.empty()) return InvalidArgumentError("fio: no iodepth given");
  BaselineResult r = Named("fio", "");
  std::vector<uint32_t> best_depths;
  for (const std::string& path : files) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
    double best = 0;
    uint32_t best_depth = depths[0];
    for (uint32_t d : depths) {
      FL_ASSIGN_OR_RETURN(const double bw, RunFio(path, d));
      if (bw > best) {
        best = bw;
        best_depth = d;
      }
    }
    r.bytes += static_cast<uint64_t>(st.st_size);
    r.seconds += static_cast<double>(st.st_size) / best;
    best_depths.push_back(best_depth);
  }
  std::sort(best_depths.begin(), best_depths.end());
  best_depths.erase(std::unique(best_depths.begin(), best_depths.end()), best_depths.end());
  std::string ds;
  for (uint32_t d : best_depths) ds += (ds.empty() ? "" : "/") + std::to_string(d);
  r.detail = fmt::format("fio io_uring O_DIRECT bs=1M, best iodepth {} (per file)", ds);
  return r;
}

Result<BaselineResult> MemcpyLimit(uint64_t bytes, uint32_t threads, uint32_t repeats,
                                   uint64_t max_buffer) {
  if (bytes == 0 || threads == 0 || repeats == 0 || max_buffer == 0) {
    return InvalidArgumentError("memcpy limit: bytes, threads, repeats and buffer must be > 0");
  }
  const uint64_t buffer = std::min(bytes, max_buffer);
  BaselineResult r = Named("memcpy", fmt::format("{} threads, {} MiB buffers, best of {}", threads,
                                                 buffer >> 20, repeats));
  r.bytes = bytes;
  PeakRssMeter rss;
  FL_ASSIGN_OR_RETURN(AlignedBuffer src, AllocAligned(buffer));
  FL_ASSIGN_OR_RETURN(AlignedBuffer dst, AllocAligned(buffer));
  std::memset(src.get(), 0x5a, buffer);  // resident, non-zero (no shared zero page)
  std::memset(dst.get(), 0xa5, buffer);
  r.seconds = -1;
  for (uint32_t rep = 0; rep < repeats; ++rep) {
    const auto start = Clock::now();
    std::vector<std::thread> workers;
    for (uint32_t t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (uint64_t pass = 0; pass < bytes; pass += buffer) {
          const uint64_t len = std::min(buffer, bytes - pass);
          const uint64_t begin = len * t / threads, end = len * (t + 1) / threads;
          std::memcpy(dst.get() + begin, src.get() + begin, end - begin);
          Escape(dst.get());
        }
      });
    }
    for (std::thread& w : workers) w.join();
    const double s = SecondsSince(start);
    if (r.seconds < 0 || s < r.seconds) r.seconds = s;
  }
  r.peak_rss_delta = rss.PeakDeltaBytes();
  return r;
}

namespace {

// A fresh anonymous mapping; by default as the loader's host arenas get it, huge pages requested.
struct FreshMapping {
  explicit FreshMapping(uint64_t n, PageMode pages = PageMode::kHuge) : size(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
    if (data != nullptr && pages == PageMode::kHuge && n >= (4ull << 20)) {
      (void)madvise(data, n, MADV_HUGEPAGE);
    }
  }
  ~FreshMapping() {
    if (data != nullptr) munmap(data, size);
  }
  FreshMapping(const FreshMapping&) = delete;
  FreshMapping& operator=(const FreshMapping&) = delete;
  std::byte* data;
  uint64_t size;
};

// Runs fn(begin, end) over [0, bytes) split across `threads` threads.
template <typename Fn>
void Split(uint64_t bytes, uint32_t threads, Fn fn) {
  std::vector<std::thread> workers;
  for (uint32_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] { fn(bytes * t / threads, bytes * (t + 1) / threads); });
  }
  for (std::thread& w : workers) w.join();
}

}  // namespace

Result<BaselineResult> FreshMemcpyLimit(uint64_t bytes, uint32_t threads, uint64_t max_buffer) {
  if (bytes == 0 || threads == 0 || max_buffer == 0) {
    return InvalidArgumentError("fresh memcpy limit: bytes, threads and buffer must be > 0");
  }
  const uint64_t buffer = std::min(bytes, max_buffer);
  BaselineResult r =
      Named("memcpy-fresh", fmt::format("{} threads from a resident {} MiB buffer into "
                                        "{} new bytes",
                                        threads, buffer >> 20, bytes));
  r.bytes = bytes;
  FL_ASSIGN_OR_RETURN(AlignedBuffer src, AllocAligned(buffer));
  std::memset(src.get(), 0x5a, buffer);
  PeakRssMeter rss;
  const auto start = Clock::now();
  FreshMapping dst(bytes);
  if (dst.data == nullptr) return ResourceExhaustedError(fmt::format("cannot map {} bytes", bytes));
  Split(bytes, threads, [&](uint64_t begin, uint64_t end) {
    for (uint64_t pos = begin; pos < end;) {
      const uint64_t src_off = pos % buffer;
      const uint64_t len = std::min(end - pos, buffer - src_off);
      std::memcpy(dst.data + pos, src.get() + src_off, len);
      pos += len;
    }
    Escape(dst.data + begin);
  });
  r.seconds = SecondsSince(start);
  r.peak_rss_delta = rss.PeakDeltaBytes();
  return r;
}

Result<BaselineResult> FreshTouchLimit(uint64_t bytes, uint32_t threads, PageMode pages) {
  if (bytes == 0 || threads == 0) {
    return InvalidArgumentError("fresh memory limit: bytes and threads must be > 0");
  }
  const bool huge = pages == PageMode::kHuge;
  BaselineResult r = Named("first-touch", "");
  r.bytes = bytes;
  PeakRssMeter rss;
  const auto start = Clock::now();
  FreshMapping m(bytes, pages);
  if (m.data == nullptr) return ResourceExhaustedError(fmt::format("cannot map {} bytes", bytes));
  Split(bytes, threads, [&](uint64_t begin, uint64_t end) {
    for (uint64_t pos = begin & ~uint64_t{4095}; pos < end; pos += 4096) m.data[pos] = std::byte{1};
    Escape(m.data + begin);
  });
  r.seconds = SecondsSince(start);
  r.peak_rss_delta = rss.PeakDeltaBytes();
  // The mapping is the process's only large one: its share of AnonHugePages is the share granted.
  const int64_t huge_kb = AnonHugePagesKb();
  std::string granted;
  if (huge && huge_kb >= 0) {
    granted = fmt::format(", {:.0f}% in huge pages",
                          std::min(100.0, 100.0 * static_cast<double>(huge_kb) * 1024 / bytes));
  }
  r.detail = fmt::format("{} threads write 1 byte per 4 KiB page of a new mapping, {}{}", threads,
                         huge ? "MADV_HUGEPAGE" : "4 KiB pages (no madvise)", granted);
  return r;
}

Result<double> WarmFreshMemory(uint64_t bytes, uint32_t threads) {
  if (bytes == 0) return 0.0;
  const auto start = Clock::now();
  FreshMapping m(bytes);
  if (m.data == nullptr) return ResourceExhaustedError(fmt::format("cannot map {} bytes", bytes));
  Split(bytes, std::max<uint32_t>(threads, 1), [&](uint64_t begin, uint64_t end) {
    for (uint64_t pos = begin; pos < end; pos += 4096) m.data[pos] = std::byte{1};
    Escape(m.data + begin);
  });
  const double s = SecondsSince(start);
  return s > 0 ? bytes / s / 1e9 : 0.0;
}

}  // namespace flashload::cli
