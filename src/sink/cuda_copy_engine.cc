#include "sink/cuda_copy_engine.h"

#include <fmt/format.h>

#include "sink/copy_engine.h"

#ifdef FLASHLOAD_HAVE_CUDA

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "sink/block_cache.h"
#include "sink/convert_cuda.h"

namespace flashload::sink {

namespace {

// Pinned staging kept between loads (see TrimPinnedCache). Never destroyed: blocks may be freed
// by tensors' owners during static destruction.
BlockCache& PinnedCache() {
  static auto* cache = new std::shared_ptr<BlockCache>(
      BlockCache::Create([](uint64_t bytes) { return cuda::HostAlloc(bytes); },
                         [](void* p) { cuda::HostFree(p); }, kPinnedCacheBytes));
  return **cache;
}

// The CUDA runtime's current device is per host thread, so every entry point selects it first.
class CudaCopyEngine final : public CopyEngine {
 public:
  CudaCopyEngine(int device, std::string gpu_name)
      : device_(device),
        gpu_name_(std::move(gpu_name)),
        device_in_use_(std::make_shared<std::atomic<uint64_t>>(0)) {}

  ~CudaCopyEngine() override {
    // Work still queued may read memory the caller frees next: let it finish first. Only this
    // engine's streams: other work on the GPU (a model serving while another loads) is not ours
    // to wait for.
    if (!streams_.empty() && cuda::SetDevice(device_).ok()) {
      for (void* s : streams_) cuda::StreamSynchronize(s).IgnoreError();
    }
    for (void* e : events_) cuda::EventDestroy(e);
    for (void* s : streams_) cuda::StreamDestroy(s);
  }

  Status Init(uint32_t streams) {
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    for (uint32_t i = 0; i < std::max<uint32_t>(streams, 1); ++i) {
      FL_ASSIGN_OR_RETURN(void* s, cuda::StreamCreate());
      streams_.push_back(s);
    }
    return Status();
  }

  std::string name() const override {
    return fmt::format("cuda:{} ({}, {} streams)", device_, gpu_name_, streams_.size());
  }
  Device device() const override { return Device{DeviceType::kCuda, device_}; }
  uint32_t stream_count() const override { return static_cast<uint32_t>(streams_.size()); }
  bool device_is_host() const override { return false; }

  Result<std::shared_ptr<void>> AllocatePinned(uint64_t bytes) override {
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    return PinnedCache().Allocate(bytes);
  }

  Result<std::shared_ptr<void>> AllocateDevice(uint64_t bytes) override {
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    bytes = std::max<uint64_t>(bytes, 1);
    FL_ASSIGN_OR_RETURN(void* p, cuda::DeviceAlloc(bytes));
    const uint64_t now = device_in_use_->fetch_add(bytes) + bytes;
    uint64_t peak = peak_device_.load();
    while (now > peak && !peak_device_.compare_exchange_weak(peak, now)) {
    }
    const int device = device_;
    std::shared_ptr<std::atomic<uint64_t>> in_use = device_in_use_;
    return std::shared_ptr<void>(p, [device, in_use, bytes](void* q) {
      cuda::DeviceFree(device, q);
      in_use->fetch_sub(bytes);
    });
  }

  Status CopyToDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) override {
    FL_RETURN_IF_ERROR(Check(stream));
    if (bytes == 0) return Status();
    return Sticky(cuda::CopyHostToDeviceAsync(dst, src, bytes, streams_[stream]));
  }

  Status CopyOnDevice(uint32_t stream, void* dst, const void* src, uint64_t bytes) override {
    FL_RETURN_IF_ERROR(Check(stream));
    if (bytes == 0) return Status();
    return Sticky(cuda::CopyDeviceToDeviceAsync(dst, src, bytes, streams_[stream]));
  }

  Status Convert(uint32_t stream, Dtype from, Dtype to, const void* src, void* dst,
                 uint64_t count) override {
    FL_RETURN_IF_ERROR(Check(stream));
    Status st = LaunchConvert(from, to, src, dst, count, streams_[stream]);
    if (st.code() == StatusCode::kInvalidArgument) return st;  // nothing enqueued, not sticky
    return Sticky(std::move(st));
  }

  Result<Event> CreateEvent() override {
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    FL_ASSIGN_OR_RETURN(void* e, cuda::EventCreate());
    std::lock_guard lock(mu_);
    events_.push_back(e);
    return static_cast<Event>(events_.size() - 1);
  }

  Status RecordEvent(Event event, uint32_t stream) override {
    FL_RETURN_IF_ERROR(Check(stream));
    FL_ASSIGN_OR_RETURN(void* e, EventHandle(event));
    return Sticky(cuda::EventRecord(e, streams_[stream]));
  }

  Result<bool> EventDone(Event event) override {
    FL_RETURN_IF_ERROR(Failed());
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    FL_ASSIGN_OR_RETURN(void* e, EventHandle(event));
    Result<bool> done = cuda::EventQuery(e);
    if (!done.ok()) return Sticky(done.status());
    return done;
  }

  Status WaitEvent(Event event) override {
    FL_RETURN_IF_ERROR(Failed());
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    FL_ASSIGN_OR_RETURN(void* e, EventHandle(event));
    return Sticky(cuda::EventSynchronize(e));
  }

  Status Synchronize() override {
    FL_RETURN_IF_ERROR(cuda::SetDevice(device_));
    // This engine's streams only (see the destructor).
    for (void* s : streams_) {
      Status st = cuda::StreamSynchronize(s);
      if (!st.ok()) return Sticky(std::move(st));
    }
    return Failed();
  }

  Status BindThread() override { return cuda::SetDevice(device_); }
  uint64_t peak_device_bytes() const override { return peak_device_.load(); }

 private:
  Status Check(uint32_t stream) {
    if (stream >= streams_.size()) {
      return InvalidArgumentError(
          fmt::format("stream {} out of range: the engine has {}", stream, streams_.size()));
    }
    FL_RETURN_IF_ERROR(Failed());
    return cuda::SetDevice(device_);
  }

  Status Failed() {
    std::lock_guard lock(mu_);
    return error_;
  }

  // Remembers the first failure: later calls return it too.
  Status Sticky(Status st) {
    if (st.ok()) return st;
    std::lock_guard lock(mu_);
    if (error_.ok()) error_ = st.WithContext(fmt::format("cuda:{}", device_));
    return error_;
  }

  Result<void*> EventHandle(Event event) {
    std::lock_guard lock(mu_);
    if (event >= events_.size()) {
      return InvalidArgumentError(fmt::format("event {} out of range", event));
    }
    return events_[event];
  }

  const int device_;
  const std::string gpu_name_;
  std::vector<void*> streams_;
  std::mutex mu_;
  std::vector<void*> events_;
  Status error_;
  std::shared_ptr<std::atomic<uint64_t>> device_in_use_;
  std::atomic<uint64_t> peak_device_{0};
};

Status CheckDevice(int device) {
  FL_ASSIGN_OR_RETURN(int count, cuda::DeviceCount());
  if (device < 0 || device >= count) {
    return InvalidArgumentError(
        fmt::format("CUDA device {} does not exist: this machine has {} "
                    "(cuda:0 to cuda:{})",
                    device, count, count - 1));
  }
  return cuda::SetDevice(device);
}

}  // namespace

Status WarmUpCuda(int device) {
  FL_RETURN_IF_ERROR(CheckDevice(device));
  return cuda::InitContext();
}

void TrimPinnedCache() { PinnedCache().Trim(); }
uint64_t PinnedCacheBytes() { return PinnedCache().cached_bytes(); }

Result<std::unique_ptr<CopyEngine>> OpenCudaCopyEngine(int device, uint32_t streams) {
  FL_RETURN_IF_ERROR(CheckDevice(device));
  auto engine = std::make_unique<CudaCopyEngine>(device, cuda::DeviceName(device));
  FL_RETURN_IF_ERROR(engine->Init(streams));
  return std::unique_ptr<CopyEngine>(std::move(engine));
}

Result<double> MeasurePinnedH2D(int device, uint64_t bytes, uint32_t streams, uint64_t block_bytes,
                                uint32_t repeats, uint64_t max_buffer) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<CopyEngine> engine, OpenCudaCopyEngine(device, streams));
  const uint64_t buffer = std::max<uint64_t>(std::min(bytes, max_buffer), 1);
  block_bytes = std::max<uint64_t>(std::min(block_bytes, buffer), 1);
  FL_ASSIGN_OR_RETURN(std::shared_ptr<void> host, engine->AllocatePinned(buffer));
  FL_ASSIGN_OR_RETURN(std::shared_ptr<void> dev, engine->AllocateDevice(buffer));
  std::memset(host.get(), 0x5a, buffer);
  auto run = [&]() -> Result<double> {
    const auto start = std::chrono::steady_clock::now();
    uint64_t done = 0;
    uint32_t k = 0;
    while (done < bytes) {
      const uint64_t at = done % buffer;
      const uint64_t n = std::min({block_bytes, bytes - done, buffer - at});
      FL_RETURN_IF_ERROR(engine->CopyToDevice(k++ % engine->stream_count(),
                                              static_cast<std::byte*>(dev.get()) + at,
                                              static_cast<std::byte*>(host.get()) + at, n));
      done += n;
    }
    FL_RETURN_IF_ERROR(engine->Synchronize());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  FL_RETURN_IF_ERROR(run().status());  // warm-up
  double best = 0;
  for (uint32_t r = 0; r < std::max<uint32_t>(repeats, 1); ++r) {
    FL_ASSIGN_OR_RETURN(double s, run());
    best = r == 0 ? s : std::min(best, s);
  }
  return best;
}

}  // namespace flashload::sink

#else  // !FLASHLOAD_HAVE_CUDA

namespace flashload::sink {

void TrimPinnedCache() {}
uint64_t PinnedCacheBytes() { return 0; }

Status WarmUpCuda(int device) {
  return UnimplementedError(fmt::format("cuda:{}: flashload was built without CUDA", device));
}

Result<std::unique_ptr<CopyEngine>> OpenCudaCopyEngine(int device, uint32_t streams) {
  return UnimplementedError(
      fmt::format("cuda:{}: flashload was built without CUDA (configure with nvcc installed and "
                  "FLASHLOAD_CUDA=AUTO or ON)",
                  device));
}

Result<double> MeasurePinnedH2D(int device, uint64_t bytes, uint32_t streams, uint64_t block_bytes,
                                uint32_t repeats, uint64_t max_buffer) {
  return OpenCudaCopyEngine(device, streams).status();
}

}  // namespace flashload::sink

#endif  // FLASHLOAD_HAVE_CUDA
