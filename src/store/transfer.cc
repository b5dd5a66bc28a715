#include "store/transfer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/url.h"
#include "io/s3_upload.h"

namespace flashload::store {
namespace {

bool Cancelled(const TransferOptions& options) {
  return options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed);
}

std::string LocalPath(const std::string& uri) {
  return uri.starts_with("file://") ? uri.substr(7) : uri;
}

std::string ParentFolder(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// SHA-256 of an object whose chunks arrive out of order: Add() blocks until every byte before
// `offset` has been hashed. Abort() releases every waiter (with kCancelled).
class OrderedDigest {
 public:
  OrderedDigest() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx_);
      ctx_ = nullptr;
    }
  }
  ~OrderedDigest() { EVP_MD_CTX_free(ctx_); }

  Status Add(uint64_t offset, std::span<const std::byte> bytes, std::string_view what) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return aborted_ || next_ == offset; });
    if (aborted_) return CancelledError(fmt::format("{}: copy stopped", what));
    if (ctx_ == nullptr || EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()) != 1) {
      return InternalError(fmt::format("{}: SHA-256 (OpenSSL EVP) failed", what));
    }
    next_ += bytes.size();
    cv_.notify_all();
    return Status();
  }

  void Abort() {
    std::lock_guard lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

  Result<std::string> Finish(std::string_view what) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (ctx_ == nullptr || EVP_DigestFinal_ex(ctx_, md, &n) != 1) {
      return InternalError(fmt::format("{}: SHA-256 (OpenSSL EVP) failed", what));
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < n; ++i) {
      hex.push_back(kHex[md[i] >> 4]);
      hex.push_back(kHex[md[i] & 15]);
    }
    return hex;
  }

 private:
  EVP_MD_CTX* ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ = 0;     // guarded by mu_
  bool aborted_ = false;  // guarded by mu_
};

// Reads [offset, offset + dst.size()) of `source` whole; a source that ends early is kDataLoss.
Status ReadWhole(const Source& source, uint64_t offset, std::span<std::byte> dst) {
  uint64_t done = 0;
  while (done < dst.size()) {
    FL_ASSIGN_OR_RETURN(size_t n, source.ReadAt(offset + done, dst.subspan(done), ReadOptions{}));
    if (n == 0) {
      return DataLossError(fmt::format(
          "{}: the object ended at byte offset {} but its size is {}; it changed during the copy: "
          "copy it again",
          source.name(), offset + done, source.size()));
    }
    done += n;
  }
  return Status();
}

// Writes all of `bytes` at `offset` of `fd`.
Status PwriteAll(int fd, std::span<const std::byte> bytes, uint64_t offset,
                 const std::string& path) {
  uint64_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "pwrite", path, static_cast<int64_t>(offset + done));
    }
    done += static_cast<uint64_t>(n);
  }
  return Status();
}

// A temporary file beside `dst`, renamed over it by Commit() and removed otherwise.
class AtomicFile {
 public:
  explicit AtomicFile(std::string dst) : dst_(std::move(dst)) {}
  ~AtomicFile() {
    if (fd_ >= 0) close(fd_);
    if (!committed_ && !temp_.empty()) unlink(temp_.c_str());
  }

  // Creates the temporary file; with `direct`, opened with O_DIRECT.
  Status Open(bool direct) {
    static std::atomic<uint64_t> counter{0};
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0);
    for (int attempt = 0; attempt < 100; ++attempt) {
      temp_ = fmt::format("{}.flashload-tmp-{}-{}", dst_, getpid(), counter.fetch_add(1));
      fd_ = open(temp_.c_str(), flags, 0644);
      if (fd_ >= 0) return Status();
      if (errno == EEXIST) continue;
      const int err = errno;
      temp_.clear();
      if (direct && err == EINVAL) {
        return FailedPreconditionError(
            fmt::format("{}: the file system refuses O_DIRECT; copy without --direct", dst_));
      }
      const Status s = ErrnoToStatus(err, "create (temporary file beside)", dst_);
      return Status(s.code(),
                    fmt::format("{}; check that the folder exists and is writable", s.message()));
    }
    temp_.clear();
    return IoError(fmt::format("{}: no free temporary name beside it", dst_));
  }

  int fd() const { return fd_; }
  const std::string& temp() const { return temp_; }

  // Cuts the file to `size` bytes (direct writes end on a block boundary), fsyncs it, renames it
  // over the destination and fsyncs the folder.
  Status Commit(uint64_t size) {
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoToStatus(errno, "ftruncate", temp_, static_cast<int64_t>(size));
    }
    if (fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync", temp_);
    if (close(fd_) != 0) {
      fd_ = -1;
      return ErrnoToStatus(errno, "close", temp_);
    }
    fd_ = -1;
    if (rename(temp_.c_str(), dst_.c_str()) != 0) {
      return ErrnoToStatus(errno, fmt::format("rename {} to", temp_), dst_);
    }
    committed_ = true;
    return SyncFolder(ParentFolder(dst_));
  }

 private:
  std::string dst_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// The alignment of buffers, offsets and lengths of O_DIRECT writes.
constexpr uint64_t kDirectAlign = 4096;

uint64_t RoundUp(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

// Runs `parallel` workers over the chunks of an object of `size` bytes: each reads its chunk from
// `source`, hashes it in order, and hands it to `write` (may be empty). With `align` > 1, buffers
// and chunk sizes are multiples of `align` and `write` gets each chunk zero-padded to one (the
// caller cuts the file to `size`).
Result<std::string> CopyChunks(
    const Source& source, uint64_t size, const TransferOptions& options, uint64_t align,
    const std::function<Status(uint64_t offset, std::span<const std::byte>)>& write) {
  const uint64_t chunk = RoundUp(std::max<uint64_t>(options.chunk_bytes, 1), align);
  const uint64_t chunks = (size + chunk - 1) / chunk;
  OrderedDigest digest;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  Status first_error;  // guarded by mu
  uint64_t done = 0;   // guarded by mu
  std::atomic<bool> failed{false};
  auto fail = [&](Status s) {
    {
      std::lock_guard lock(mu);
      if (first_error.ok() || first_error.code() == StatusCode::kCancelled) {
        first_error = std::move(s);
      }
    }
    failed = true;
    digest.Abort();
  };
  auto worker = [&] {
    std::unique_ptr<std::byte, FreeDeleter> memory(
        static_cast<std::byte*>(std::aligned_alloc(align, chunk)));
    if (memory == nullptr) {
      fail(ResourceExhaustedError(
          fmt::format("{}: no memory for a {}-byte copy buffer; lower --parallel or --range-mib",
                      source.name(), chunk)));
      return;
    }
    for (;;) {
      if (failed.load()) return;
      if (Cancelled(options)) {
        fail(CancelledError(fmt::format("{}: copy cancelled", source.name())));
        return;
      }
      const uint64_t c = next.fetch_add(1);
      if (c >= chunks) return;
      const uint64_t offset = c * chunk;
      const uint64_t length = std::min(chunk, size - offset);
      const std::span<std::byte> buffer(memory.get(), length);
      Status s = ReadWhole(source, offset, buffer);
      if (s.ok()) s = digest.Add(offset, buffer, source.name());
      if (s.ok() && write) {
        const uint64_t padded = RoundUp(length, align);
        std::fill(memory.get() + length, memory.get() + padded, std::byte{0});
        s = write(offset, std::span<const std::byte>(memory.get(), padded));
      }
      if (!s.ok()) {
        fail(std::move(s));
        return;
      }
      std::lock_guard lock(mu);
      done += length;
      if (options.progress) options.progress(done, size);
    }
  };
  const uint32_t threads = static_cast<uint32_t>(
      std::clamp<uint64_t>(options.parallel, 1, std::max<uint64_t>(chunks, 1)));
  {
    std::vector<std::jthread> pool;
    for (uint32_t i = 0; i < threads; ++i) pool.emplace_back(worker);
  }
  if (failed.load()) return first_error;
  return digest.Finish(source.name());
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Result<Location> LocationOf(std::string_view uri) {
  const std::optional<UriScheme> scheme = SchemeOf(uri);
  if (!scheme || !scheme->has_slashes || scheme->name == "file") return Location::kLocal;
  if (scheme->name == "http" || scheme->name == "https") return Location::kHttp;
  if (scheme->name == "s3") return Location::kS3;
  return InvalidArgumentError(fmt::format(
      "{}: unsupported scheme '{}://'; copies go between local paths, http(s):// (read only) and "
      "s3://",
      RedactUrl(uri), scheme->name));
}

Status SyncFolder(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open (folder)", dir);
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0 && err != EINVAL) return ErrnoToStatus(err, "fsync (folder)", dir);
  return Status();
}

Result<TransferResult> CopyObject(const std::string& src, const std::string& dst,
                                  const TransferOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FL_ASSIGN_OR_RETURN(const Location to, LocationOf(dst));
  if (to == Location::kHttp) {
    return InvalidArgumentError(fmt::format(
        "{}: http(s):// is read only; copy to a local path or to s3://", RedactUrl(dst)));
  }
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(src, options.open));
  const uint64_t size = source->size();
  TransferResult result;
  result.bytes = size;
  if (options.progress) options.progress(0, size);

  if (to == Location::kLocal) {
    const std::string path = LocalPath(dst);
    AtomicFile file(path);
    FL_RETURN_IF_ERROR(file.Open(options.direct));
    FL_ASSIGN_OR_RETURN(result.sha256,
                        CopyChunks(*source, size, options, options.direct ? kDirectAlign : 1,
                                   [&](uint64_t offset, std::span<const std::byte> bytes) {
                                     return PwriteAll(file.fd(), bytes, offset, file.temp());
                                   }));
    FL_RETURN_IF_ERROR(file.Commit(size));
    result.seconds = SecondsSince(start);
    return result;
  }

  // S3: the uploader drives the reads, one part per worker; each part is hashed in order.
  FL_ASSIGN_OR_RETURN(S3Uploader uploader, S3Uploader::ForRemote(options.open.remote));
  S3UploadOptions up;
  up.part_bytes = options.part_bytes;
  up.parts_in_flight = std::max<uint32_t>(options.parallel, 1);
  up.retry = RetryPolicyFor(options.open.remote);
  up.cancel = options.cancel;
  if (options.progress) up.progress = [&](uint64_t done) { options.progress(done, size); };
  OrderedDigest digest;
  const PartReader read = [&](uint64_t offset, std::span<std::byte> dst_bytes) -> Status {
    Status s = ReadWhole(*source, offset, dst_bytes);
    if (s.ok()) s = digest.Add(offset, dst_bytes, source->name());
    if (!s.ok()) digest.Abort();
    return s;
  };
  Result<S3UploadResult> uploaded = uploader.Upload(dst, size, read, up);
  if (!uploaded.ok()) {
    digest.Abort();
    return uploaded.status();
  }
  FL_ASSIGN_OR_RETURN(result.sha256, digest.Finish(source->name()));
  result.parts = uploaded->parts;
  result.requests = uploaded->requests;
  result.seconds = SecondsSince(start);
  return result;
}

Result<TransferResult> HashObject(const std::string& src, const TransferOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(src, options.open));
  TransferResult result;
  result.bytes = source->size();
  FL_ASSIGN_OR_RETURN(result.sha256, CopyChunks(*source, result.bytes, options, 1, nullptr));
  result.seconds = SecondsSince(start);
  return result;
}

Status PutBytes(const std::string& dst, std::span<const std::byte> bytes,
                const TransferOptions& options) {
  FL_ASSIGN_OR_RETURN(const Location to, LocationOf(dst));
  switch (to) {
    case Location::kHttp:
      return InvalidArgumentError(fmt::format(
          "{}: http(s):// is read only; write to a local path or to s3://", RedactUrl(dst)));
    case Location::kS3: {
      FL_ASSIGN_OR_RETURN(S3Uploader uploader, S3Uploader::ForRemote(options.open.remote));
      S3UploadOptions up;
      up.retry = RetryPolicyFor(options.open.remote);
      up.cancel = options.cancel;
      up.content_type = dst.ends_with(".json") ? "application/json" : "application/octet-stream";
      return uploader.PutObject(dst, bytes, up).status();
    }
    case Location::kLocal: {
      const std::string path = LocalPath(dst);
      AtomicFile file(path);
      FL_RETURN_IF_ERROR(file.Open(/*direct=*/false));
      FL_RETURN_IF_ERROR(PwriteAll(file.fd(), bytes, 0, file.temp()));
      return file.Commit(bytes.size());
    }
  }
  return InternalError("unreachable");
}

}  // namespace flashload::store
