#include "dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

namespace flashload::dist {
namespace {

// NCCL and the stream progress on their own (NCCL's proxy thread, the GPU): polling them often
// adds nothing.
constexpr auto kPollInterval = std::chrono::microseconds(20);
// How long the destructor lets NCCL finish cleanly before aborting it.
constexpr auto kFinalizeGrace = std::chrono::seconds(5);

Status CudaToStatus(cudaError_t error, std::string_view what) {
  StatusCode code = StatusCode::kInternal;
  switch (error) {
    case cudaErrorMemoryAllocation:
      code = StatusCode::kResourceExhausted;
      break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      code = StatusCode::kFailedPrecondition;
      break;
    case cudaErrorInvalidValue:
      code = StatusCode::kInvalidArgument;
      break;
    default:
      break;
  }
  return Status(
      code, fmt::format("{}: {} ({})", what, cudaGetErrorString(error), cudaGetErrorName(error)));
}

Status NcclToStatus(ncclResult_t result, ncclComm_t comm, std::string_view what) {
  StatusCode code = StatusCode::kIoError;
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      code = StatusCode::kInvalidArgument;
      break;
    case ncclInternalError:
      code = StatusCode::kInternal;
      break;
    default:  // ncclSystemError, ncclRemoteError, ncclUnhandledCudaError
      break;
  }
  const char* detail = ncclGetLastError(comm);
  return Status(code, fmt::format("{}: {}{}{}", what, ncclGetErrorString(result),
                                  detail != nullptr && *detail != '\0' ? ": " : "",
                                  detail != nullptr ? detail : ""));
}

// Makes a CUDA device current for a scope, then restores the thread's previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = cudaSetDevice(device);
    restore_ = previous_ >= 0 && previous_ != device;
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  bool restore_ = false;
  cudaError_t status_ = cudaSuccess;
};

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  // Ends NCCL at once; for failures and deadlines (the caller has made the device current).
  void Abort() {
    if (comm != nullptr) ncclCommAbort(comm);
    comm = nullptr;
  }
  ~State() {
    Abort();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int cuda_device,
                                   std::unique_ptr<State> state)
    : bootstrap_(bootstrap), cuda_device_(cuda_device), state_(std::move(state)) {}

Result<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Communicator& bootstrap,
                                                                   int cuda_device,
                                                                   Deadline deadline) {
  const int rank = bootstrap.rank(), size = bootstrap.size();
  const std::string where = fmt::format("nccl (rank {} of {}, cuda:{})", rank, size, cuda_device);
  auto state = std::make_unique<State>();

  // 1. The device and the stream on every rank, the unique id on rank 0; the ranks agree.
  std::unique_ptr<DeviceScope> scope;
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  Status prepared = [&]() -> Status {
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return CudaToStatus(e, where + ": counting CUDA devices (a GPU rank needs a GPU and driver)");
    }
    if (cuda_device < 0 || cuda_device >= devices) {
      return FailedPreconditionError(
          fmt::format("{}: this machine has {} CUDA device(s); pass a device index from 0 to {}",
                      where, devices, devices - 1));
    }
    scope = std::make_unique<DeviceScope>(cuda_device);
    if (scope->status() != cudaSuccess)
      return CudaToStatus(scope->status(), where + ": cudaSetDevice");
    e = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) return CudaToStatus(e, where + ": cudaStreamCreate");
    if (rank == 0) {
      const ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess) return NcclToStatus(r, nullptr, where + ": ncclGetUniqueId");
    }
    return Status::Ok();
  }();
  FL_RETURN_IF_ERROR(bootstrap.Agree(prepared, deadline));

  // 2. Rank 0's id to every rank.
  const std::string mine =
      rank == 0 ? std::string(reinterpret_cast<const char*>(&id), sizeof(id)) : std::string();
  FL_ASSIGN_OR_RETURN(std::vector<std::string> ids, bootstrap.AllGather(mine, deadline));
  if (ids.empty() || ids[0].size() != sizeof(id)) {
    return InternalError(fmt::format("{}: the NCCL id from rank 0 has {} bytes instead of {}",
                                     where, ids.empty() ? 0 : ids[0].size(), sizeof(id)));
  }
  std::memcpy(&id, ids[0].data(), sizeof(id));

  // 3. Join, without blocking, until the deadline; then agree on the outcome.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  Status joined;
  ncclResult_t r = ncclCommInitRankConfig(&state->comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    joined = NcclToStatus(r, state->comm, where + ": ncclCommInitRankConfig");
    state->Abort();
  }
  while (joined.ok()) {
    ncclResult_t async = ncclInProgress;
    r = ncclCommGetAsyncError(state->comm, &async);
    if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
      joined = NcclToStatus(r != ncclSuccess ? r : async, state->comm,
                            where + ": joining the NCCL communicator");
      state->Abort();
      break;
    }
    if (async == ncclSuccess) break;
    if (deadline.expired()) {
      state->Abort();
      // The other ranks cannot be told in time: they reach the deadline themselves.
      return DeadlineExceededError(fmt::format(
          "{}: the NCCL communicator of {} ranks was not complete by the deadline (a rank did "
          "not join; NCCL does not say which); with MPI, abort the job",
          where, size));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  FL_RETURN_IF_ERROR(bootstrap.Agree(joined, deadline));
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(bootstrap, cuda_device, std::move(state)));
}

NcclCommunicator::~NcclCommunicator() {
  DeviceScope scope(cuda_device_);
  if (state_->comm != nullptr && broken_.ok()) {
    // Finish cleanly when NCCL can; abort when it does not end within the grace period.
    const ncclResult_t r = ncclCommFinalize(state_->comm);
    ncclResult_t async = r;
    if (r == ncclSuccess || r == ncclInProgress) {
      const Deadline grace = Deadline::In(kFinalizeGrace);
      while (ncclCommGetAsyncError(state_->comm, &async) == ncclSuccess &&
             async == ncclInProgress && !grace.expired()) {
        std::this_thread::sleep_for(kPollInterval);
      }
    }
    if (async == ncclSuccess) {
      ncclCommDestroy(state_->comm);
      state_->comm = nullptr;
    }
  }
  state_.reset();  // aborts what was not destroyed, frees the stream
}

Status NcclCommunicator::Agree(const Status& local, Deadline deadline) {
  return bootstrap_.Agree(local, deadline);
}

Result<std::vector<std::string>> NcclCommunicator::AllGather(std::string_view mine,
                                                             Deadline deadline) {
  return bootstrap_.AllGather(mine, deadline);
}

bool NcclCommunicator::OnDevice(const void* buffer) const {
  cudaPointerAttributes attributes;
  std::memset(&attributes, 0, sizeof(attributes));
  const cudaError_t e = cudaPointerGetAttributes(&attributes, buffer);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky; the pointer is not CUDA's
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

Status NcclCommunicator::HostStagedAllToAll(std::span<const std::span<const std::byte>> send,
                                            std::span<const std::span<std::byte>> recv,
                                            Deadline deadline) {
  const int n = size();
  const std::string where = fmt::format(
      "nccl (rank {} of {}, cuda:{}): AllToAll #{} of host "
      "memory",
      rank(), n, cuda_device_, all_to_alls_);
  uint64_t total = 0;
  for (int q = 0; q < n; ++q) total += send[q].size() + recv[q].size();
  void* scratch = nullptr;
  if (total > 0) {
    const cudaError_t e = cudaMalloc(&scratch, total);
    if (e != cudaSuccess) {
      return CudaToStatus(e,
                          fmt::format("{}: allocating {} bytes of device staging", where, total));
    }
  }
  auto* base = static_cast<std::byte*>(scratch);
  std::vector<std::span<const std::byte>> device_send(n);
  std::vector<std::span<std::byte>> device_recv(n);
  uint64_t at = 0;
  Status st;
  for (int q = 0; q < n && st.ok(); ++q) {
    device_send[q] = std::span<const std::byte>(base + at, send[q].size());
    if (!send[q].empty()) {
      const cudaError_t e = cudaMemcpyAsync(base + at, send[q].data(), send[q].size(),
                                            cudaMemcpyHostToDevice, state_->stream);
      if (e != cudaSuccess) st = CudaToStatus(e, where + ": staging a send buffer");
    }
    at += send[q].size();
  }
  for (int q = 0; q < n; ++q) {
    device_recv[q] = std::span<std::byte>(base + at, recv[q].size());
    at += recv[q].size();
  }
  // The device exchange counts as this same collective.
  if (st.ok()) {
    --all_to_alls_;
    st = AllToAll(device_send, device_recv, deadline);
  }
  for (int q = 0; q < n && st.ok(); ++q) {
    if (recv[q].empty()) continue;
    const cudaError_t e = cudaMemcpyAsync(recv[q].data(), device_recv[q].data(), recv[q].size(),
                                          cudaMemcpyDeviceToHost, state_->stream);
    if (e != cudaSuccess) st = CudaToStatus(e, where + ": copying a receive buffer back");
  }
  if (st.ok()) st = WaitForStream(deadline);
  if (scratch != nullptr) {
    if (broken_.ok()) cudaStreamSynchronize(state_->stream);  // nothing may still use it
    cudaFree(scratch);
  }
  return st;
}

Status NcclCommunicator::CheckDeviceBuffer(const void* buffer, size_t bytes, int peer,
                                           bool sending) const {
  cudaPointerAttributes attributes;
  std::memset(&attributes, 0, sizeof(attributes));
  const cudaError_t e = cudaPointerGetAttributes(&attributes, buffer);
  if (e != cudaSuccess) cudaGetLastError();  // not sticky; the pointer is not CUDA's
  const bool on_device =
      e == cudaSuccess &&
      (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) &&
      attributes.device == cuda_device_;
  if (on_device) return Status::Ok();
  const std::string what = e != cudaSuccess || attributes.type == cudaMemoryTypeUnregistered ||
                                   attributes.type == cudaMemoryTypeHost
                               ? std::string("host memory")
                               : fmt::format("memory of cuda:{}", attributes.device);
  return InvalidArgumentError(fmt::format(
      "nccl (rank {} of {}, cuda:{}): AllToAll #{}: the {} buffer {} rank {} ({} bytes at {}) is "
      "{}; pass device memory of cuda:{}",
      rank(), size(), cuda_device_, all_to_alls_, sending ? "send" : "receive",
      sending ? "to" : "from", peer, bytes, buffer, what, cuda_device_));
}

Status NcclCommunicator::WaitForStream(Deadline deadline) {
  const std::string where = fmt::format("nccl (rank {} of {}, cuda:{}): AllToAll #{}", rank(),
                                        size(), cuda_device_, all_to_alls_);
  for (;;) {
    ncclResult_t async = ncclInProgress;
    const ncclResult_t r = ncclCommGetAsyncError(state_->comm, &async);
    if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
      broken_ = NcclToStatus(r != ncclSuccess ? r : async, state_->comm, where);
      state_->Abort();
      return broken_;
    }
    if (async == ncclSuccess) {
      const cudaError_t e = cudaStreamQuery(state_->stream);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) {
        broken_ = CudaToStatus(e, where);
        state_->Abort();
        return broken_;
      }
    }
    if (deadline.expired()) {
      state_->Abort();
      broken_ = DeadlineExceededError(fmt::format(
          "{} did not complete by its deadline (a rank did not arrive, or its bytes did not all "
          "arrive; NCCL does not say which); the NCCL communicator was aborted and is unusable",
          where));
      return broken_;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

Status NcclCommunicator::AllToAll(std::span<const std::span<const std::byte>> send,
                                  std::span<const std::span<std::byte>> recv, Deadline deadline) {
  ++all_to_alls_;
  const int n = size(), me = rank();
  if (!broken_.ok()) {
    return FailedPreconditionError(fmt::format(
        "nccl (rank {} of {}, cuda:{}): cannot run AllToAll #{}: the communicator is unusable "
        "since an earlier collective failed ({})",
        me, n, cuda_device_, all_to_alls_, broken_.ToString()));
  }
  if (send.size() != static_cast<size_t>(n) || recv.size() != static_cast<size_t>(n)) {
    return InvalidArgumentError(fmt::format(
        "nccl (rank {} of {}, cuda:{}): AllToAll #{} got {} send and {} receive buffers; pass one "
        "of each per rank",
        me, n, cuda_device_, all_to_alls_, send.size(), recv.size()));
  }
  if (send[me].size() != recv[me].size()) {
    return InvalidArgumentError(fmt::format(
        "nccl (rank {} of {}, cuda:{}): AllToAll #{} sends {} bytes to itself into a receive "
        "buffer of {} bytes; both sides must agree on every size",
        me, n, cuda_device_, all_to_alls_, send[me].size(), recv[me].size()));
  }
  DeviceScope scope(cuda_device_);
  if (scope.status() != cudaSuccess) {
    return CudaToStatus(scope.status(), fmt::format("nccl (cuda:{}): cudaSetDevice", cuda_device_));
  }
  // Host buffers, every one of them: staged through device memory (see the header).
  bool all_host = true;
  for (int q = 0; q < n; ++q) {
    all_host = all_host && (send[q].empty() || !OnDevice(send[q].data())) &&
               (recv[q].empty() || !OnDevice(recv[q].data()));
  }
  if (all_host) return HostStagedAllToAll(send, recv, deadline);
  for (int q = 0; q < n; ++q) {
    if (!send[q].empty()) {
      FL_RETURN_IF_ERROR(CheckDeviceBuffer(send[q].data(), send[q].size(), q, true));
    }
    if (!recv[q].empty()) {
      FL_RETURN_IF_ERROR(CheckDeviceBuffer(recv[q].data(), recv[q].size(), q, false));
    }
  }
  const std::string where =
      fmt::format("nccl (rank {} of {}, cuda:{}): AllToAll #{}", me, n, cuda_device_, all_to_alls_);
  if (!send[me].empty()) {
    const cudaError_t e = cudaMemcpyAsync(recv[me].data(), send[me].data(), send[me].size(),
                                          cudaMemcpyDeviceToDevice, state_->stream);
    if (e != cudaSuccess) return CudaToStatus(e, where + ": copying to itself");
  }
  ncclResult_t r = ncclGroupStart();
  for (int i = 1; i < n && r == ncclSuccess; ++i) {
    const int to = (me + i) % n, from = (me + n - i) % n;
    if (!send[to].empty()) {
      r = ncclSend(send[to].data(), send[to].size(), ncclUint8, to, state_->comm, state_->stream);
    }
    if (r == ncclSuccess && !recv[from].empty()) {
      r = ncclRecv(recv[from].data(), recv[from].size(), ncclUint8, from, state_->comm,
                   state_->stream);
    }
  }
  const ncclResult_t end = ncclGroupEnd();
  if (r == ncclSuccess || r == ncclInProgress) r = end;
  if (r != ncclSuccess && r != ncclInProgress) {
    broken_ = NcclToStatus(r, state_->comm, where);
    state_->Abort();
    return broken_;
  }
  return WaitForStream(deadline);
}

}  // namespace flashload::dist
