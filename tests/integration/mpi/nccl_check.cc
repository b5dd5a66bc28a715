// nccl_check: the NCCL communicator on a machine with GPUs, bootstrapped through MPI. Prints every
// failed check and exits 1 when one failed, 0 when all passed.
//
//   nccl_check                        one rank (MPI starts as a singleton), CUDA device 0
//   mpirun -n N nccl_check            N ranks, rank r on CUDA device r % (number of devices)
//
// Checks: the communicator's identity (rank, size, device), AllToAll of device buffers with
// uneven and empty sizes whose bytes encode sender, receiver, round and position (with one rank:
// the device buffer to itself), the same with host buffers (staged through device memory), Agree
// with and without a failure, AllGather. Prints the bytes per second of one large AllToAll.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "dist/mpi_communicator.h"
#include "dist/nccl_communicator.h"

namespace flashload::dist {
namespace {

int g_rank = 0;
int g_failures = 0;

void Fail(const std::string& what) {
  ++g_failures;
  std::fprintf(stderr, "nccl_check: rank %d: FAILED: %s\n", g_rank, what.c_str());
}

std::byte PatternByte(int from, int to, int round, size_t i) {
  uint64_t x = (uint64_t(from) << 48) ^ (uint64_t(to) << 40) ^ (uint64_t(round) << 32) ^ i;
  x *= 0x9E3779B97F4A7C15ull;
  return std::byte(x >> 56);
}

size_t PairSize(int from, int to, int round) {
  switch ((from * 3 + to * 5 + round) % 4) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return (size_t{1} << 20) + 3 + from;
    default:
      return 4096 * (1 + to) + 7 * round;
  }
}

// Device memory freed at scope end.
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n > 0 && cudaMalloc(&data, n) != cudaSuccess) {
      Fail(fmt::format("cudaMalloc of {} bytes", n));
      data = nullptr;
      bytes = 0;
    }
  }
  ~DeviceBuffer() {
    if (data != nullptr) cudaFree(data);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data(o.data), bytes(o.bytes) { o.data = nullptr; }
  void* data = nullptr;
  size_t bytes = 0;
};

void AllToAllRound(NcclCommunicator& c, int round) {
  const int n = c.size(), me = c.rank();
  std::vector<DeviceBuffer> out, in;
  std::vector<std::span<const std::byte>> send(n);
  std::vector<std::span<std::byte>> recv(n);
  for (int q = 0; q < n; ++q) {
    std::vector<std::byte> host(PairSize(me, q, round));
    for (size_t i = 0; i < host.size(); ++i) host[i] = PatternByte(me, q, round, i);
    out.emplace_back(host.size());
    if (!host.empty())
      cudaMemcpy(out.back().data, host.data(), host.size(), cudaMemcpyHostToDevice);
    in.emplace_back(PairSize(q, me, round));
    if (in.back().bytes > 0) cudaMemset(in.back().data, 0xEE, in.back().bytes);
    send[q] = {static_cast<const std::byte*>(out.back().data), out.back().bytes};
    recv[q] = {static_cast<std::byte*>(in.back().data), in.back().bytes};
  }
  cudaDeviceSynchronize();  // the send buffers are written before the exchange reads them
  Status s = c.AllToAll(send, recv, Deadline::In(std::chrono::seconds(60)));
  if (!s.ok()) return Fail(fmt::format("AllToAll round {}: {}", round, s.ToString()));
  for (int r = 0; r < n; ++r) {
    std::vector<std::byte> host(in[r].bytes);
    if (!host.empty()) cudaMemcpy(host.data(), in[r].data, host.size(), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < host.size(); ++i) {
      if (host[i] != PatternByte(r, me, round, i)) {
        return Fail(fmt::format("AllToAll round {}: byte {} from rank {} is wrong", round, i, r));
      }
    }
  }
}

void Throughput(NcclCommunicator& c) {
  const int n = c.size();
  constexpr size_t kPerPeer = size_t{256} << 20;
  std::vector<DeviceBuffer> out, in;
  std::vector<std::span<const std::byte>> send(n);
  std::vector<std::span<std::byte>> recv(n);
  for (int q = 0; q < n; ++q) {
    out.emplace_back(kPerPeer);
    in.emplace_back(kPerPeer);
    send[q] = {static_cast<const std::byte*>(out.back().data), kPerPeer};
    recv[q] = {static_cast<std::byte*>(in.back().data), kPerPeer};
  }
  cudaDeviceSynchronize();
  const auto t0 = std::chrono::steady_clock::now();
  Status s = c.AllToAll(send, recv, Deadline::In(std::chrono::seconds(60)));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!s.ok()) return Fail("large AllToAll: " + s.ToString());
  if (c.rank() == 0) {
    std::printf(
        "nccl_check: AllToAll of %zu MiB per pair, %d rank(s): %.3f s, %.1f GB/s received "
        "per rank\n",
        kPerPeer >> 20, n, seconds, double(kPerPeer) * n / seconds / 1e9);
  }
}

int Main() {
  Result<std::unique_ptr<MpiSession>> session = MpiSession::Start();
  if (!session.ok()) {
    std::fprintf(stderr, "nccl_check: %s\n", session.status().ToString().c_str());
    return 1;
  }
  g_rank = (*session)->world_rank();
  int status = 1;
  {
    Result<std::unique_ptr<MpiCommunicator>> mpi = MpiCommunicator::Create();
    if (!mpi.ok()) {
      std::fprintf(stderr, "nccl_check: %s\n", mpi.status().ToString().c_str());
      return 1;
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) devices = 1;
    const int device = g_rank % devices;
    Result<std::unique_ptr<NcclCommunicator>> created =
        NcclCommunicator::Create(**mpi, device, Deadline::In(std::chrono::seconds(120)));
    if (!created.ok()) {
      std::fprintf(stderr, "nccl_check: rank %d: %s\n", g_rank,
                   created.status().ToString().c_str());
      return 1;
    }
    NcclCommunicator& c = **created;
    const Deadline d = Deadline::In(std::chrono::seconds(60));
    if (c.name() != "nccl" || c.rank() != g_rank || c.size() != (*session)->world_size() ||
        !(c.device() == Device{DeviceType::kCuda, device})) {
      Fail("identity");
    }
    for (int round = 0; round < 12; ++round) AllToAllRound(c, round);

    if (!c.Agree(Status::Ok(), d).ok()) Fail("Agree with no failure");
    const int failing = c.size() - 1;
    Status agreed = c.Agree(c.rank() == failing ? IoError("disk gone") : Status::Ok(), d);
    const std::string want =
        c.rank() == failing ? std::string("disk gone") : fmt::format("rank {}: disk gone", failing);
    if (agreed.code() != StatusCode::kIoError || agreed.message() != want) {
      Fail("Agree with one failure: " + agreed.ToString());
    }
    Result<std::vector<std::string>> gathered = c.AllGather(fmt::format("r{}", c.rank()), d);
    if (!gathered.ok() || gathered->size() != size_t(c.size())) {
      Fail("AllGather: " + gathered.status().ToString());
    } else {
      for (int q = 0; q < c.size(); ++q) {
        if ((*gathered)[q] != fmt::format("r{}", q)) Fail(fmt::format("AllGather from {}", q));
      }
    }

    // Host memory, every buffer of it: staged through device memory, the same bytes arrive.
    {
      const int me = c.rank();
      std::vector<std::vector<std::byte>> out(c.size()), in(c.size());
      for (int q = 0; q < c.size(); ++q) {
        out[q].resize(PairSize(me, q, 7));
        for (size_t i = 0; i < out[q].size(); ++i) out[q][i] = PatternByte(me, q, 7, i);
        in[q].resize(PairSize(q, me, 7));
      }
      std::vector<std::span<const std::byte>> send(out.begin(), out.end());
      std::vector<std::span<std::byte>> recv(in.begin(), in.end());
      Status s = c.AllToAll(send, recv, d);
      if (!s.ok()) Fail("AllToAll of host memory: " + s.ToString());
      for (int r = 0; r < c.size() && s.ok(); ++r) {
        for (size_t i = 0; i < in[r].size(); ++i) {
          if (in[r][i] != PatternByte(r, me, 7, i)) {
            Fail(fmt::format("AllToAll of host memory: byte {} from rank {}", i, r));
            break;
          }
        }
      }
    }
    Throughput(c);
    if (!c.broken().ok()) Fail("broken: " + c.broken().ToString());

    Status verdict = (*mpi)->Agree(
        g_failures == 0 ? Status::Ok()
                        : InternalError(fmt::format("{} check(s) failed", g_failures)),
        Deadline::In(std::chrono::seconds(60)));
    if (g_rank == 0) {
      std::printf("nccl_check, %d rank(s): %s\n", c.size(),
                  verdict.ok() ? "every check passed" : verdict.ToString().c_str());
    }
    status = verdict.ok() ? 0 : 1;
  }  // the NCCL communicator, then the MPI one, before MPI_Finalize
  return status;
}

}  // namespace
}  // namespace flashload::dist

int main() { return flashload::dist::Main(); }
