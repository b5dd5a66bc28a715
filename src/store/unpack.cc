#include "store/unpack.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
// ZSTD_getFrameHeader() (the window a frame asks for) is in zstd's "static linking only" section;
// the shared libzstd exports it.
#define ZSTD_STATIC_LINKING_ONLY
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "format/tar.h"
#include "format/zstd_seekable.h"
#include "io/local_file.h"

namespace flashload::store {
namespace fs = std::filesystem;
using io_internal::LocalFd;

namespace {

constexpr size_t kInBuffer = size_t{1} << 20;
constexpr uint64_t kCopyChunk = uint64_t{4} << 20;
constexpr uint64_t kProgressStep = uint64_t{64} << 20;

bool IsZstdStart(const uint8_t* p) {
  uint32_t magic;
  std::memcpy(&magic, p, 4);  // little-endian hosts (as the rest of flashload)
  return magic == 0xFD2FB528u || (magic & 0xFFFFFFF0u) == 0x184D2A50u;
}

std::string GiB(uint64_t bytes) { return fmt::format("{:.1f} GiB", bytes / double(1 << 30)); }

// The frames of a seekable archive (its seek table parsed), read and decompressed on worker
// threads and handed out in order. Each frame is decompressed in one call into a buffer of the
// size the table gives (a frame that decompresses to any other size, fails its checksum, or asks
// for a window over the limit is an error), so no frame can make a worker allocate more than the
// table says; frames of more than kMaxParallelFrame bytes are left to the streaming path.
class SeekableFrames {
 public:
  SeekableFrames(int fd, std::string name, format::SeekTable table, int window_log_max,
                 uint32_t threads)
      : fd_(fd), name_(std::move(name)), table_(std::move(table)), window_log_max_(window_log_max) {
    for (uint32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~SeekableFrames() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  // The next frame's bytes (borrowed until the next call), or nullptr after the last frame.
  Result<const std::vector<std::byte>*> Next() {
    if (!in_flight_.empty()) in_flight_.pop_front();  // the frame handed out last time
    TopUp();
    if (in_flight_.empty()) return static_cast<const std::vector<std::byte>*>(nullptr);
    std::shared_ptr<Job> job = in_flight_.front();
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return job->done; });
    }
    FL_RETURN_IF_ERROR(job->status);
    consumed_ =
        table_.frames[job->index].compressed_offset + table_.frames[job->index].compressed_size;
    return &job->out;
  }

  uint64_t archive_bytes_read() const { return consumed_; }

 private:
  struct Job {
    size_t index = 0;
    std::vector<std::byte> out;
    Status status;
    bool done = false;
  };

  // Keeps up to 2 frames per worker, and at most kInFlightBytes, decompressing ahead.
  void TopUp() {
    uint64_t bytes = 0;
    for (const auto& j : in_flight_) bytes += table_.frames[j->index].decompressed_size;
    while (
        next_ < table_.frames.size() && in_flight_.size() < 2 * workers_.size() &&
        (in_flight_.empty() || bytes + table_.frames[next_].decompressed_size <= kInFlightBytes)) {
      auto job = std::make_shared<Job>();
      job->index = next_++;
      bytes += table_.frames[job->index].decompressed_size;
      in_flight_.push_back(job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(job));
      }
      work_cv_.notify_one();
    }
  }

  void Work() {
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    std::vector<std::byte> compressed;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) break;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->status =
          dctx == nullptr
              ? ResourceExhaustedError(fmt::format("{}: cannot create a zstd context", name_))
              : Decompress(dctx, compressed, *job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        job->done = true;
      }
      done_cv_.notify_all();
    }
    ZSTD_freeDCtx(dctx);
  }

  Status Decompress(ZSTD_DCtx* dctx, std::vector<std::byte>& compressed, Job& job) {
    const format::SeekFrame& f = table_.frames[job.index];
    auto where = [&] {
      return fmt::format(
          "{}: zstd frame {} (compressed byte offset {}, decompressed byte "
          "offset {})",
          name_, job.index, f.compressed_offset, f.decompressed_offset);
    };
    compressed.resize(f.compressed_size);
    FL_ASSIGN_OR_RETURN(size_t n,
                        io_internal::PreadFully(fd_, f.compressed_offset, compressed, 1, name_));
    if (n != compressed.size()) {
      return DataLossError(fmt::format(
          "{}: the file ends before the frame does; the archive is truncated: download or copy "
          "it again",
          where()));
    }
    ZSTD_frameHeader fh{};
    const size_t hr = ZSTD_getFrameHeader(&fh, compressed.data(), compressed.size());
    if (hr == 0 && fh.frameType == ZSTD_frame && fh.windowSize > (uint64_t{1} << window_log_max_)) {
      return ResourceExhaustedError(fmt::format(
          "{} asks for a window above 2^{} bytes ({} MiB), the most flashload unpack accepts; "
          "recompress the archive with a smaller window (flashload pack does), or raise the "
          "limit with --max-window-log if you trust it",
          where(), window_log_max_, (uint64_t{1} << window_log_max_) >> 20));
    }
    job.out.resize(f.decompressed_size);
    const size_t r = ZSTD_decompressDCtx(dctx, job.out.data(), job.out.size(), compressed.data(),
                                         compressed.size());
    if (ZSTD_isError(r) || r != f.decompressed_size) {
      return DataLossError(fmt::format(
          "{}: {}; the archive is damaged: download or copy it again", where(),
          ZSTD_isError(r) ? std::string(ZSTD_getErrorName(r))
                          : fmt::format("decompresses to {} bytes, the seek table says {}", r,
                                        f.decompressed_size)));
    }
    if (f.checksum &&
        static_cast<uint32_t>(XXH64(job.out.data(), job.out.size(), 0)) != *f.checksum) {
      return DataLossError(fmt::format(
          "{}: the decompressed bytes do not match the seek table's checksum; the archive is "
          "damaged: download or copy it again",
          where()));
    }
    return Status::Ok();
  }

  static constexpr uint64_t kInFlightBytes = uint64_t{256} << 20;

  int fd_;
  std::string name_;
  format::SeekTable table_;
  int window_log_max_;
  size_t next_ = 0;
  uint64_t consumed_ = 0;
  std::deque<std::shared_ptr<Job>> in_flight_;  // caller's thread only
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// The tar stream of an archive file: its bytes, or their decompression.
class TarStream {
 public:
  TarStream(int fd, std::string name, uint64_t file_size, int window_log_max, uint32_t threads)
      : fd_(fd),
        name_(std::move(name)),
        file_size_(file_size),
        window_log_max_(window_log_max),
        threads_(threads),
        in_(kInBuffer) {}
  ~TarStream() {
    if (dctx_ != nullptr) ZSTD_freeDCtx(dctx_);
  }

  // Reads the first bytes and decides whether the archive is zstd.
  Status Open() {
    FL_RETURN_IF_ERROR(Refill());
    if (in_size_ >= 4 && IsZstdStart(in_.data())) {
      dctx_ = ZSTD_createDCtx();
      if (dctx_ == nullptr) {
        return ResourceExhaustedError(fmt::format("{}: cannot create a zstd context", name_));
      }
      const size_t r = ZSTD_DCtx_setParameter(dctx_, ZSTD_d_windowLogMax, window_log_max_);
      if (ZSTD_isError(r)) {
        return InvalidArgumentError(fmt::format("{}: zstd refused a window limit of 2^{}: {}",
                                                name_, window_log_max_, ZSTD_getErrorName(r)));
      }
      OpenSeekable();
    }
    return Status::Ok();
  }

  bool compressed() const { return dctx_ != nullptr; }
  bool seekable() const { return frames_ != nullptr; }
  uint64_t archive_bytes_read() const {
    return frames_ ? frames_->archive_bytes_read() : file_offset_ - (in_size_ - in_pos_);
  }

  // Fills `dst` with the next bytes of the tar stream; fewer only at its end.
  Result<size_t> Read(std::span<std::byte> dst) {
    if (frames_) return ReadFrames(dst);
    size_t filled = 0;
    while (filled < dst.size()) {
      if (in_pos_ == in_size_ && !eof_) FL_RETURN_IF_ERROR(Refill());
      if (dctx_ == nullptr) {
        if (in_pos_ == in_size_) break;  // end of file
        const size_t n = std::min(dst.size() - filled, in_size_ - in_pos_);
        std::memcpy(dst.data() + filled, in_.data() + in_pos_, n);
        in_pos_ += n;
        filled += n;
        continue;
      }
      ZSTD_inBuffer in{in_.data(), in_size_, in_pos_};
      ZSTD_outBuffer out{dst.data() + filled, dst.size() - filled, 0};
      const size_t r = ZSTD_decompressStream(dctx_, &out, &in);
      const bool progressed = out.pos > 0 || in.pos > in_pos_;
      in_pos_ = in.pos;
      filled += out.pos;
      if (ZSTD_isError(r)) return ZstdError(r);
      frame_open_ = r != 0;
      if (!progressed && in_pos_ == in_size_ && eof_) {
        if (frame_open_) {
          return DataLossError(fmt::format(
              "{}: the zstd stream ends inside a frame at compressed byte offset {} "
              "(decompressed byte offset {}); the archive is truncated: download or copy it again",
              name_, file_offset_, decompressed_ + filled));
        }
        break;
      }
    }
    decompressed_ += filled;
    return filled;
  }

 private:
  // A seekable archive whose table parses, and whose frames are all small enough, is read by
  // SeekableFrames; any other zstd stream (a table that is missing or does not parse included) by
  // the streaming decoder, which does not need the table.
  void OpenSeekable() {
    if (file_size_ < format::kSeekTableFooterSize) return;
    std::vector<uint8_t> footer(format::kSeekTableFooterSize);
    Result<size_t> n = io_internal::PreadFully(fd_, file_size_ - footer.size(),
                                               std::as_writable_bytes(std::span(footer)), 1, name_);
    if (!n.ok() || *n != footer.size()) return;
    Result<uint64_t> table_size = format::SeekTableSizeFromFooter(footer, name_);
    if (!table_size.ok() || *table_size > file_size_) return;
    std::vector<uint8_t> bytes(*table_size);
    n = io_internal::PreadFully(fd_, file_size_ - bytes.size(),
                                std::as_writable_bytes(std::span(bytes)), 1, name_);
    if (!n.ok() || *n != bytes.size()) return;
    Result<format::SeekTable> table = format::ParseSeekTable(bytes, file_size_, name_);
    if (!table.ok()) return;
    for (const format::SeekFrame& f : table->frames) {
      if (f.decompressed_size > kMaxParallelFrame) return;
    }
    frames_ =
        std::make_unique<SeekableFrames>(fd_, name_, *std::move(table), window_log_max_, threads_);
  }

  Result<size_t> ReadFrames(std::span<std::byte> dst) {
    size_t filled = 0;
    while (filled < dst.size()) {
      if (frame_ == nullptr || frame_pos_ == frame_->size()) {
        if (frames_done_) break;
        FL_ASSIGN_OR_RETURN(frame_, frames_->Next());
        frame_pos_ = 0;
        if (frame_ == nullptr) {
          frames_done_ = true;
          break;
        }
        continue;
      }
      const size_t k = std::min(dst.size() - filled, frame_->size() - frame_pos_);
      std::memcpy(dst.data() + filled, frame_->data() + frame_pos_, k);
      frame_pos_ += k;
      filled += k;
    }
    return filled;
  }

  Status Refill() {
    in_pos_ = 0;
    in_size_ = 0;
    while (in_size_ < in_.size()) {
      const ssize_t n = ::read(fd_, in_.data() + in_size_, in_.size() - in_size_);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, "read", name_, static_cast<int64_t>(file_offset_));
      }
      if (n == 0) {
        eof_ = true;
        break;
      }
      in_size_ += static_cast<size_t>(n);
      file_offset_ += static_cast<uint64_t>(n);
      if (in_size_ >= 4096) break;  // enough to work on; do not wait for a full buffer
    }
    return Status::Ok();
  }

  Status ZstdError(size_t r) {
    const uint64_t at = archive_bytes_read();
    if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge) {
      return ResourceExhaustedError(fmt::format(
          "{}: the zstd frame before compressed byte offset {} asks for a window above 2^{} bytes "
          "({} MiB), the most flashload unpack accepts; recompress the archive with a smaller "
          "window (flashload pack does), or raise the limit with --max-window-log if you trust it",
          name_, at, window_log_max_, (uint64_t{1} << window_log_max_) >> 20));
    }
    return DataLossError(fmt::format(
        "{}: zstd cannot decompress the stream before compressed byte offset {} (decompressed "
        "byte offset {}): {}; the archive is damaged: download or copy it again",
        name_, at, decompressed_, ZSTD_getErrorName(r)));
  }

  static constexpr uint32_t kMaxParallelFrame = uint32_t{64} << 20;

  int fd_;
  std::string name_;
  uint64_t file_size_;
  int window_log_max_;
  uint32_t threads_;
  std::unique_ptr<SeekableFrames> frames_;
  const std::vector<std::byte>* frame_ = nullptr;
  size_t frame_pos_ = 0;
  bool frames_done_ = false;
  std::vector<uint8_t> in_;
  size_t in_pos_ = 0;
  size_t in_size_ = 0;
  uint64_t file_offset_ = 0;  // bytes of the file read into `in_` so far
  bool eof_ = false;
  ZSTD_DCtx* dctx_ = nullptr;
  bool frame_open_ = false;
  uint64_t decompressed_ = 0;
};

// The temporary folder an archive is extracted into; removed unless committed.
class TempFolder {
 public:
  ~TempFolder() {
    if (!path_.empty() && !committed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  Status Create(const std::string& out_dir) {
    std::string templ = out_dir + ".unpack.XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) return ErrnoToStatus(errno, "create folder", templ);
    path_ = templ;
    // mkdtemp() makes it 0700; the extracted folder is an ordinary one.
    if (::chmod(path_.c_str(), 0755) != 0) return ErrnoToStatus(errno, "chmod", path_);
    return Status::Ok();
  }
  const std::string& path() const { return path_; }
  Status Commit(const std::string& out_dir) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open", path_);
    const int rc = ::syncfs(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoToStatus(err, "syncfs", path_);
    if (::rename(path_.c_str(), out_dir.c_str()) != 0) {
      return ErrnoToStatus(errno, "rename", fmt::format("{} to {}", path_, out_dir));
    }
    committed_ = true;
    std::string parent = fs::path(out_dir).parent_path().string();
    const int pfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY);
    if (pfd >= 0) {
      (void)::fsync(pfd);  // best effort: the folder is complete either way
      ::close(pfd);
    }
    return Status::Ok();
  }

 private:
  std::string path_;
  bool committed_ = false;
};

// Whether a path names only the archive's root ("." and "/" segments).
bool IsRootPath(std::string_view p) {
  return !p.empty() && p.find_first_not_of("./") == std::string_view::npos &&
         p.find("..") == std::string_view::npos;
}

class Extractor {
 public:
  Extractor(const UnpackOptions& o, TarStream& stream, const std::string& root,
            UnpackSummary& summary, uint64_t archive_size)
      : o_(o), stream_(stream), root_(root), summary_(summary), archive_size_(archive_size) {}

  Status Run() {
    format::TarLimits tl;
    // The member limit is checked here, where the message can name the flag.
    tl.max_member_size = std::numeric_limits<uint64_t>::max() / 2;
    format::TarPending pending;
    uint64_t offset = 0;
    std::vector<uint8_t> block(format::kTarBlock);
    for (;;) {
      FL_ASSIGN_OR_RETURN(size_t n, stream_.Read(std::as_writable_bytes(std::span(block))));
      if (n < format::kTarBlock) {
        return DataLossError(fmt::format(
            "{}: the tar stream ends at byte offset {} without its end-of-archive block; the "
            "archive is truncated: download or copy it again",
            o_.archive, offset + n));
      }
      FL_ASSIGN_OR_RETURN(format::TarStep step,
                          format::ParseTarHeader(block, offset, o_.archive, pending, tl));
      if (step.kind == format::TarStep::Kind::kEnd) {
        summary_.tar_bytes = offset + format::kTarBlock;
        return Status::Ok();
      }
      if (step.next_offset < offset + format::kTarBlock) {
        return InternalError(
            fmt::format("{}: tar header at byte offset {} goes backwards", o_.archive, offset));
      }
      if (step.kind == format::TarStep::Kind::kExtension) {
        std::string payload(step.next_offset - offset - format::kTarBlock, '\0');
        FL_RETURN_IF_ERROR(ReadExactly(payload.data(), payload.size(), offset));
        payload.resize(std::min<uint64_t>(payload.size(), step.payload_size));
        FL_RETURN_IF_ERROR(format::ApplyTarExtension(step, payload, offset, o_.archive, pending));
      } else {
        FL_RETURN_IF_ERROR(Member(step));
      }
      offset = step.next_offset;
      Progress(false);
    }
  }

  void Progress(bool last) {
    const uint64_t done = stream_.archive_bytes_read();
    if (o_.progress && (last || done - reported_ >= kProgressStep)) {
      reported_ = done;
      o_.progress(done, archive_size_);
    }
  }

 private:
  std::string Where(const format::TarMember& m) const {
    return fmt::format("{}: member '{}' (header at byte offset {} of the tar stream)", o_.archive,
                       m.path, m.header_offset);
  }

  Status ReadExactly(void* dst, uint64_t size, uint64_t at) {
    FL_ASSIGN_OR_RETURN(size_t n, stream_.Read(std::span(static_cast<std::byte*>(dst), size)));
    if (n != size) {
      return DataLossError(fmt::format(
          "{}: the tar stream ends inside the member or record whose header is at byte offset "
          "{}; the archive is truncated: download or copy it again",
          o_.archive, at));
    }
    return Status::Ok();
  }

  Status Member(const format::TarStep& step) {
    const format::TarMember& m = step.member;
    const bool is_dir = m.kind == format::TarMemberKind::kDirectory;
    const bool is_file = m.kind == format::TarMemberKind::kFile;
    if (!is_dir && !is_file) {
      std::string target = m.link_path.empty() ? "" : fmt::format(" to '{}'", m.link_path);
      return InvalidArgumentError(fmt::format(
          "{} is {}{}: flashload unpack extracts regular files and folders only, and refuses "
          "every link and device (a link could send later members outside the target folder); "
          "repack the model with its files in place of links (flashload pack does)",
          Where(m), format::TarMemberKindText(m.kind, m.type_flag), target));
    }
    if (is_dir && IsRootPath(m.path)) return Status::Ok();  // "./": the target folder itself
    if (++summary_.members > o_.limits.max_members) {
      return ResourceExhaustedError(fmt::format(
          "{}: more than {} members; a model has far fewer: check the archive, or raise "
          "--max-members if you trust it",
          Where(m), o_.limits.max_members));
    }
    Result<std::string> rel = format::CheckMemberPath(m.path, o_.archive);
    if (!rel.ok()) {
      return Status(rel.status().code(),
                    fmt::format("{} (its header is at byte offset {} of the tar stream)",
                                rel.status().message(), m.header_offset));
    }
    if (is_dir) {
      FL_RETURN_IF_ERROR(MakeFolders(*rel, m, /*including_last=*/true));
      ++summary_.directories;
      return Status::Ok();
    }
    if (m.size > o_.limits.max_member_bytes) {
      return ResourceExhaustedError(fmt::format(
          "{} claims {} bytes ({}), above the {} limit for one member; raise --max-member-gib "
          "if you trust the archive",
          Where(m), m.size, GiB(m.size), GiB(o_.limits.max_member_bytes)));
    }
    if (m.size > o_.limits.max_total_bytes - std::min(total_, o_.limits.max_total_bytes)) {
      return ResourceExhaustedError(fmt::format(
          "{}: its {} bytes would take the data extracted past the {} limit for the whole "
          "archive; raise --max-total-gib if you trust it",
          Where(m), m.size, GiB(o_.limits.max_total_bytes)));
    }
    total_ += m.size;
    FL_RETURN_IF_ERROR(MakeFolders(*rel, m, /*including_last=*/false));
    const std::string path = root_ + "/" + *rel;
    const mode_t mode = (m.mode & 0111) != 0 ? 0755 : 0644;
    int fd;
    do {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      if (errno == EEXIST) {
        return InvalidArgumentError(fmt::format(
            "{}: an earlier member already has this path; flashload unpack refuses archives "
            "with duplicate paths (a later member could replace an earlier one unseen)",
            Where(m)));
      }
      return ErrnoToStatus(errno, "create", path).WithContext(Where(m));
    }
    LocalFd file(fd);
    uint64_t written = 0;
    buffer_.resize(std::min<uint64_t>(kCopyChunk, std::max<uint64_t>(m.size, 1)));
    while (written < m.size) {
      const uint64_t n = std::min<uint64_t>(buffer_.size(), m.size - written);
      FL_RETURN_IF_ERROR(ReadExactly(buffer_.data(), n, m.header_offset));
      for (uint64_t at = 0; at < n;) {
        const ssize_t w = ::write(fd, buffer_.data() + at, n - at);
        if (w < 0) {
          if (errno == EINTR) continue;
          return ErrnoToStatus(errno, "write", path, static_cast<int64_t>(written + at));
        }
        at += static_cast<uint64_t>(w);
      }
      written += n;
      summary_.bytes_out += n;
      Progress(false);
    }
    const uint64_t pad = format::TarPadding(m.size);
    uint8_t zeros[format::kTarBlock];
    FL_RETURN_IF_ERROR(ReadExactly(zeros, pad, m.header_offset));
    file = LocalFd();  // closed; write-back errors surface in the syncfs() before the rename
    ++summary_.files;
    return Status::Ok();
  }

  // Creates the folders of `rel` under the root (all but its last segment unless
  // `including_last`). Nothing under the root is ever a link (links are refused), so each
  // mkdir lands inside it.
  Status MakeFolders(const std::string& rel, const format::TarMember& m, bool including_last) {
    size_t end = 0;
    for (;;) {
      end = rel.find('/', end + 1);
      const bool last = end == std::string::npos;
      if (last && !including_last) return Status::Ok();
      const std::string prefix = last ? rel : rel.substr(0, end);
      if (!made_.count(prefix)) {
        const std::string path = root_ + "/" + prefix;
        if (::mkdir(path.c_str(), 0755) != 0) {
          const int err = errno;
          struct stat st {};
          if (err != EEXIST || ::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
            if (err == EEXIST) {
              return InvalidArgumentError(fmt::format(
                  "{}: '{}' is a file from an earlier member, not a folder; the archive is "
                  "inconsistent",
                  Where(m), prefix));
            }
            return ErrnoToStatus(err, "create folder", path).WithContext(Where(m));
          }
        }
        made_.insert(prefix);
      }
      if (last) return Status::Ok();
    }
  }

  const UnpackOptions& o_;
  TarStream& stream_;
  const std::string& root_;
  UnpackSummary& summary_;
  uint64_t archive_size_;
  uint64_t total_ = 0;
  uint64_t reported_ = 0;
  std::set<std::string> made_;
  std::vector<std::byte> buffer_;
};

Status CheckTarget(const std::string& out_dir) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(out_dir, ec);
  if (!fs::exists(st)) {
    const fs::path parent = fs::path(out_dir).parent_path();
    if (!parent.empty()) {
      fs::create_directories(parent, ec);
      if (ec) return ErrnoToStatus(ec.value(), "create folder", parent.string());
    }
    return Status::Ok();
  }
  if (fs::is_directory(st) && fs::is_empty(out_dir, ec) && !ec) return Status::Ok();
  return FailedPreconditionError(fmt::format(
      "{} exists and is not an empty folder; flashload unpack extracts into a new folder: "
      "choose another path or remove it",
      out_dir));
}

}  // namespace

Result<UnpackSummary> UnpackArchive(const UnpackOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (o.out_dir.empty()) return InvalidArgumentError("flashload unpack: give -o DIR");
  std::string out_dir = o.out_dir;
  while (out_dir.size() > 1 && out_dir.back() == '/') out_dir.pop_back();
  int fd;
  do {
    fd = ::open(o.archive.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoToStatus(errno, "open", o.archive);
  LocalFd archive(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "fstat", o.archive);
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(
        fmt::format("{} is not a regular file; give flashload unpack an archive file", o.archive));
  }
  FL_RETURN_IF_ERROR(CheckTarget(out_dir));

  UnpackSummary summary;
  summary.out_dir = out_dir;
  summary.bytes_in = static_cast<uint64_t>(st.st_size);
  const uint32_t threads =
      o.threads != 0 ? o.threads : std::clamp<uint32_t>(std::thread::hardware_concurrency(), 1, 8);
  TarStream stream(fd, o.archive, summary.bytes_in, o.limits.window_log_max, threads);
  FL_RETURN_IF_ERROR(stream.Open());
  summary.compressed = stream.compressed();
  summary.seekable = stream.seekable();

  TempFolder temp;
  FL_RETURN_IF_ERROR(temp.Create(out_dir));
  Extractor extractor(o, stream, temp.path(), summary, summary.bytes_in);
  FL_RETURN_IF_ERROR(extractor.Run());
  FL_RETURN_IF_ERROR(temp.Commit(out_dir));
  extractor.Progress(true);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace flashload::store
