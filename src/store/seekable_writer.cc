#include "store/seekable_writer.h"

#include <fmt/format.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "format/zstd_seekable.h"

namespace flashload::store {

ByteSink FdByteSink(int fd, std::string name) {
  auto offset = std::make_shared<uint64_t>(0);
  return [fd, name = std::move(name), offset](std::span<const std::byte> bytes) -> Status {
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd, bytes.data(), bytes.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, "write", name, static_cast<int64_t>(*offset));
      }
      if (n == 0) return ErrnoToStatus(EIO, "write", name, static_cast<int64_t>(*offset));
      bytes = bytes.subspan(static_cast<size_t>(n));
      *offset += static_cast<uint64_t>(n);
    }
    return Status::Ok();
  };
}

namespace {

// One frame on its way through a worker: the input, then the compressed bytes and checksum.
struct FrameJob {
  std::vector<std::byte> input;
  std::vector<std::byte> output;
  uint32_t checksum = 0;
  Status status;
  bool done = false;
};

}  // namespace

struct SeekableZstdWriter::Impl {
  ByteSink sink;
  std::string name;
  SeekableWriterOptions options;
  uint32_t threads = 1;

  std::vector<std::byte> current;  // the frame being filled (on the caller's thread)
  std::deque<std::shared_ptr<FrameJob>> in_flight;  // closed frames, in stream order

  std::mutex mu;
  std::condition_variable work_cv;  // workers wait for `queue` or `stop`
  std::condition_variable done_cv;  // the caller waits for the front of `in_flight`
  std::deque<std::shared_ptr<FrameJob>> queue;
  bool stop = false;
  std::vector<std::thread> workers;

  std::vector<format::SeekFrame> frames;
  Status error;
  bool finished = false;
  uint64_t in_bytes = 0;
  uint64_t out_bytes = 0;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (std::thread& t : workers) t.join();
  }

  void Work(ZSTD_CCtx* cctx) {
    for (;;) {
      std::shared_ptr<FrameJob> job;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (stop) break;
        job = std::move(queue.front());
        queue.pop_front();
      }
      Compress(cctx, *job);
      {
        std::lock_guard<std::mutex> lock(mu);
        job->done = true;
      }
      done_cv.notify_all();
    }
    ZSTD_freeCCtx(cctx);
  }

  void Compress(ZSTD_CCtx* cctx, FrameJob& job) {
    job.output.resize(ZSTD_compressBound(job.input.size()));
    const size_t n = ZSTD_compress2(cctx, job.output.data(), job.output.size(), job.input.data(),
                                    job.input.size());
    if (ZSTD_isError(n)) {
      job.status = InternalError(
          fmt::format("{}: zstd compression of a frame failed: {}", name, ZSTD_getErrorName(n)));
      return;
    }
    job.output.resize(n);
    if (options.seek_checksums) {
      job.checksum = static_cast<uint32_t>(XXH64(job.input.data(), job.input.size(), 0));
    }
  }

  // Hands the front frame to the sink once a worker has compressed it.
  Status WriteFront() {
    std::shared_ptr<FrameJob> job = in_flight.front();
    {
      std::unique_lock<std::mutex> lock(mu);
      done_cv.wait(lock, [&] { return job->done; });
    }
    in_flight.pop_front();
    FL_RETURN_IF_ERROR(job->status);
    FL_RETURN_IF_ERROR(sink(job->output));
    format::SeekFrame f;
    f.compressed_offset = out_bytes;
    f.compressed_size = static_cast<uint32_t>(job->output.size());
    f.decompressed_offset =
        frames.empty() ? 0 : frames.back().decompressed_offset + frames.back().decompressed_size;
    f.decompressed_size = static_cast<uint32_t>(job->input.size());
    if (options.seek_checksums) f.checksum = job->checksum;
    frames.push_back(f);
    out_bytes += job->output.size();
    return Status::Ok();
  }

  Status CloseFrame() {
    if (current.empty()) return Status::Ok();
    while (in_flight.size() >= 2 * static_cast<size_t>(threads)) FL_RETURN_IF_ERROR(WriteFront());
    auto job = std::make_shared<FrameJob>();
    job->input = std::move(current);
    current = std::vector<std::byte>();
    current.reserve(options.frame_bytes);
    in_flight.push_back(job);
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(job));
    }
    work_cv.notify_one();
    // Writes the frames already done, so the sink sees bytes as early as it can.
    for (;;) {
      bool ready = false;
      if (!in_flight.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        ready = in_flight.front()->done;
      }
      if (!ready) break;
      FL_RETURN_IF_ERROR(WriteFront());
    }
    return Status::Ok();
  }

  // Runs `step`; a failure becomes the writer's sticky error.
  template <typename F>
  Status Sticky(F&& step) {
    if (!error.ok()) return error;
    if (finished) {
      return FailedPreconditionError(
          fmt::format("{}: the seekable zstd stream is already finished", name));
    }
    Status s = step();
    if (!s.ok()) error = s;
    return s;
  }
};

SeekableZstdWriter::SeekableZstdWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SeekableZstdWriter::~SeekableZstdWriter() = default;

Result<std::unique_ptr<SeekableZstdWriter>> SeekableZstdWriter::Create(
    ByteSink sink, std::string name, const SeekableWriterOptions& options) {
  if (options.level < ZSTD_minCLevel() || options.level > ZSTD_maxCLevel()) {
    return InvalidArgumentError(fmt::format("{}: zstd level {} is outside {}..{}", name,
                                            options.level, ZSTD_minCLevel(), ZSTD_maxCLevel()));
  }
  if (options.frame_bytes < 1024 || options.frame_bytes > (uint64_t{1} << 30)) {
    return InvalidArgumentError(fmt::format("{}: frame size {} bytes is outside 1 KiB .. 1 GiB",
                                            name, options.frame_bytes));
  }
  auto impl = std::make_unique<Impl>();
  impl->sink = std::move(sink);
  impl->name = std::move(name);
  impl->options = options;
  impl->threads = options.threads != 0
                      ? options.threads
                      : std::clamp<uint32_t>(std::thread::hardware_concurrency(), 1, 8);
  impl->current.reserve(options.frame_bytes);
  for (uint32_t i = 0; i < impl->threads; ++i) {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    if (cctx == nullptr) {
      return ResourceExhaustedError(fmt::format("{}: cannot create a zstd context", impl->name));
    }
    size_t r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, options.level);
    if (!ZSTD_isError(r)) {
      r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, options.zstd_checksums ? 1 : 0);
    }
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    if (ZSTD_isError(r)) {
      ZSTD_freeCCtx(cctx);
      return InvalidArgumentError(fmt::format("{}: zstd refused the compression parameters: {}",
                                              impl->name, ZSTD_getErrorName(r)));
    }
    Impl* raw = impl.get();
    impl->workers.emplace_back([raw, cctx] { raw->Work(cctx); });
  }
  return std::unique_ptr<SeekableZstdWriter>(new SeekableZstdWriter(std::move(impl)));
}

Status SeekableZstdWriter::Write(std::span<const std::byte> bytes) {
  Impl& m = *impl_;
  return m.Sticky([&]() -> Status {
    while (!bytes.empty()) {
      const size_t room = m.options.frame_bytes - m.current.size();
      const size_t take = std::min(room, bytes.size());
      m.current.insert(m.current.end(), bytes.begin(), bytes.begin() + take);
      bytes = bytes.subspan(take);
      m.in_bytes += take;
      if (m.current.size() == m.options.frame_bytes) FL_RETURN_IF_ERROR(m.CloseFrame());
    }
    return Status::Ok();
  });
}

Status SeekableZstdWriter::EndFrame() {
  Impl& m = *impl_;
  return m.Sticky([&] { return m.CloseFrame(); });
}

Status SeekableZstdWriter::Finish() {
  Impl& m = *impl_;
  return m.Sticky([&]() -> Status {
    FL_RETURN_IF_ERROR(m.CloseFrame());
    while (!m.in_flight.empty()) FL_RETURN_IF_ERROR(m.WriteFront());
    FL_ASSIGN_OR_RETURN(std::string table, format::BuildSeekTable(m.frames));
    FL_RETURN_IF_ERROR(m.sink(std::span<const std::byte>(
        reinterpret_cast<const std::byte*>(table.data()), table.size())));
    m.out_bytes += table.size();
    m.finished = true;
    return Status::Ok();
  });
}

uint64_t SeekableZstdWriter::decompressed_bytes() const { return impl_->in_bytes; }
uint64_t SeekableZstdWriter::compressed_bytes() const { return impl_->out_bytes; }
uint64_t SeekableZstdWriter::frames() const { return impl_->frames.size(); }

}  // namespace flashload::store
