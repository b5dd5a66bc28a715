// `flashload load --tp N`: tensor-parallel loading under mpirun (flashload/dist.h). Every rank
// loads its shards; rank 0 prints every rank's report (gathered), or one JSON document with --json.
#ifndef FLASHLOAD_CLI_TP_LOAD_H_
#define FLASHLOAD_CLI_TP_LOAD_H_

#include <string>

#include "flashload/load_options.h"

namespace flashload::cli {

struct TpArgs {
  uint32_t tp = 0;               // ranks expected (the job's size); 0: not a tensor-parallel load
  std::string shard = "llama";   // preset or rules file
  std::string mode = "auto";     // auto, local, share
  uint64_t window_mib = 0;       // read-once-then-share window (0: the memory budget)
  double timeout_seconds = 300;  // per collective
  std::string communicator = "mpi";  // the exchange's transport: mpi, or nccl (GPU ranks)
  bool json = false;
  std::string save;  // each rank writes its shards here, "{rank}" replaced by its rank
};

// Runs the tensor-parallel load of `path` with `options` on MPI_COMM_WORLD; returns the exit code
// (0, 1 for a failed load, 2 for bad flags). A rank that times out waiting for the others aborts
// the job (MPI cannot take back a collective).
int TensorParallelLoad(const std::string& path, const LoadOptions& options, const TpArgs& args);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_TP_LOAD_H_
