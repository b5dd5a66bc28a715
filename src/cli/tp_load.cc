#include "cli/tp_load.h"

#include <fmt/format.h>

#include <chrono>

#include "cli/output.h"
#include "flashload/dist.h"
#ifdef FLASHLOAD_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif
#ifdef FLASHLOAD_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace flashload::cli {

namespace {

std::string ReportJson(const RankReport& r) {
  return fmt::format(
      "{{\"rank\":{},\"world\":{},\"communicator\":{},\"mode\":{},\"mode_reason\":{},"
      "\"rules\":{},\"tensors\":{},\"split\":{},\"shard_bytes\":{},\"bytes_read\":{},"
      "\"bytes_sent\":{},\"bytes_received\":{},\"rounds\":{},\"seconds\":{:.6f},"
      "\"read_seconds\":{:.6f},\"share_seconds\":{:.6f},\"covering_reads\":{},"
      "\"covering_bytes\":{},\"strided_shared\":{},\"strided_shared_bytes\":{}}}",
      r.rank, r.world, JsonString(r.communicator), JsonString(r.mode), JsonString(r.mode_reason),
      JsonString(r.rules), r.tensors, r.split, r.shard_bytes, r.bytes_read, r.bytes_sent,
      r.bytes_received, r.rounds, r.seconds, r.read_seconds, r.share_seconds, r.covering_reads,
      r.covering_bytes, r.strided_shared, r.strided_shared_bytes);
}

}  // namespace

int TensorParallelLoad(const std::string& path, const LoadOptions& options, const TpArgs& args) {
#ifndef FLASHLOAD_HAVE_MPI
  (void)path;
  (void)options;
  (void)args;
  fmt::print(stderr,
             "flashload load: --tp needs MPI, and this flashload was built without it (install "
             "Open MPI: libopenmpi-dev, and rebuild)\n");
  return 2;
#else
  Result<ShardMode> mode = ParseShardMode(args.mode);
  if (!mode.ok()) {
    fmt::print(stderr, "flashload load: --shard-mode: {}\n", mode.status().message());
    return 2;
  }
  if (args.timeout_seconds <= 0) {
    fmt::print(stderr, "flashload load: --tp-timeout must be positive, got {}\n",
               args.timeout_seconds);
    return 2;
  }
  Result<std::unique_ptr<dist::MpiSession> > session = dist::MpiSession::Start();
  if (!session.ok()) {
    fmt::print(stderr, "flashload load: starting MPI: {}\n", session.status().ToString());
    return 1;
  }
  if (static_cast<uint32_t>((*session)->world_size()) != args.tp) {
    if ((*session)->world_rank() == 0) {
      fmt::print(stderr,
                 "flashload load: --tp {} but the job has {} rank{}: run it as `mpirun -n {} "
                 "flashload load {} --tp {}`\n",
                 args.tp, (*session)->world_size(), (*session)->world_size() == 1 ? "" : "s",
                 args.tp, path, args.tp);
    }
    return 2;
  }
  Result<std::unique_ptr<dist::MpiCommunicator> > comm = dist::MpiCommunicator::Create();
  if (!comm.ok()) {
    fmt::print(stderr, "flashload load: MPI communicator: {}\n", comm.status().ToString());
    return 1;
  }
  // The exchange's transport: MPI itself, or NCCL between the ranks' GPUs (bootstrapped over MPI).
  Communicator* transport = comm->get();
#ifdef FLASHLOAD_HAVE_NCCL
  std::unique_ptr<dist::NcclCommunicator> nccl;
#endif
  if (args.communicator == "nccl") {
#ifdef FLASHLOAD_HAVE_NCCL
    if (options.device.type != DeviceType::kCuda) {
      fmt::print(stderr, "flashload load: --tp-communicator nccl needs --device cuda:N\n");
      return 2;
    }
    Result<std::unique_ptr<dist::NcclCommunicator> > made = dist::NcclCommunicator::Create(
        **comm, options.device.index,
        Deadline::In(std::chrono::milliseconds(static_cast<int64_t>(args.timeout_seconds * 1000))));
    if (!made.ok()) {
      fmt::print(stderr, "flashload load: rank {}: NCCL: {}\n", (*comm)->rank(),
                 made.status().ToString());
      return 1;
    }
    nccl = *std::move(made);
    transport = nccl.get();
#else
    fmt::print(stderr,
               "flashload load: --tp-communicator nccl: this flashload was built without NCCL "
               "(it needs the CUDA toolkit and NCCL at build time)\n");
    return 2;
#endif
  } else if (args.communicator != "mpi") {
    fmt::print(stderr, "flashload load: --tp-communicator: '{}' is not mpi or nccl\n",
               args.communicator);
    return 2;
  }
  TensorParallelOptions tp;
  tp.load = options;
  tp.shard = args.shard;
  tp.mode = *mode;
  tp.share_window_bytes = args.window_mib << 20;
  tp.timeout = std::chrono::milliseconds(static_cast<int64_t>(args.timeout_seconds * 1000));
  const int rank = (*comm)->rank();
  Result<ShardedModel> m = LoadSharded(path, *transport, tp);
  if (!m.ok()) {
    fmt::print(stderr, "flashload load: rank {} of {}: {}\n", rank, args.tp, m.status().ToString());
    if (m.status().code() == StatusCode::kDeadlineExceeded || !(*comm)->broken().ok()) {
      // A collective is still posted: the job cannot finish MPI cleanly.
      std::fflush(stderr);
      dist::MpiCommunicator::AbortJob(1);
    }
    return 1;
  }
  if (!args.save.empty()) {
    std::string file = args.save;
    file.replace(file.find("{rank}"), 6, std::to_string(rank));
    if (Status saved = SaveTensors(file, m->tensors); !saved.ok()) {
      fmt::print(stderr, "flashload load: rank {}: --save: {}\n", rank, saved.ToString());
      return 1;
    }
  }
  if (rank == 0) {
    if (args.json) {
      std::string ranks;
      for (const RankReport& r : m->reports) ranks += (ranks.empty() ? "" : ",") + ReportJson(r);
      fmt::print("{{\"path\":{},\"world\":{},\"ranks\":[{}]}}\n", JsonString(path), args.tp, ranks);
    } else {
      uint64_t read = 0;
      uint64_t shards = 0;
      double slowest = 0;
      for (const RankReport& r : m->reports) {
        fmt::print("{}\n", DescribeRankReport(r));
        read += r.bytes_read;
        shards += r.shard_bytes;
        slowest = std::max(slowest, r.seconds);
      }
      fmt::print(
          "all {} ranks: read {:.1f} MB in total for {:.1f} MB of shards; slowest rank "
          "{:.3f} s\n",
          args.tp, read / 1e6, shards / 1e6, slowest);
    }
  }
  return 0;
#endif
}

}  // namespace flashload::cli
