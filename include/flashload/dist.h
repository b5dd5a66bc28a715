// Tensor-parallel loading: every rank of a job ends with exactly its shard of each tensor.
//
// Usage (every rank of the job calls it, with the same path and options):
//   flashload::TensorParallelOptions o;
//   o.shard = "llama";                     // a preset, or a rules file (docs/shard-rules.md)
//   auto m = flashload::LoadSharded("/models/llama", comm, o);   // comm: MPI, NCCL, threads...
//   const flashload::Tensor& q = m->tensors.at("model.layers.0.self_attn.q_proj.weight");
//
// Each tensor is split as `torch.tensor_split(t, world, dim)[rank]` along the dimension its rule
// names (fused tensors block by block), or replicated. Two modes:
// - shard-local: each rank reads only its ranges. Best on fast local storage: total bytes read ≈
//   the sum of the shards. A column shard of a row-major matrix is a run in every row: when those
//   runs are short (under 256 KiB) and the tensors land in host memory as stored, the ranks read
//   such tensors once between them and share them (as below) rather than issue a request per row
//   or read every row on every rank; the report counts them.
// - read-once-then-share: the bytes the ranks need are read once across the job, each rank
//   reading 1/world of them, then the ranks exchange (AllToAll) so each ends with exactly its
//   shards. Best on slow shared storage (S3, HTTP, a network file system): total bytes read ≈ the
//   model once. Staging is bounded by `share_window_bytes` per round, never a model copy per rank.
// kAuto picks read-once-then-share when a file of the model is remote (s3://, http(s)://, an
// archive member) or on a network file system, and the job has more than one rank; shard-local
// otherwise. The report says which, and why.
//
// Errors: a failure on any rank (a missing file, a bad rule, a read fault) fails every rank with
// that failure, "rank R: " before its message; a rank that does not reach a collective within
// `timeout` makes the others fail with kDeadlineExceeded (after which the communicator may be
// unusable: an MPI job should then be aborted). Nothing is returned on error.
//
// Output: where LoadOptions::device says, converted as LoadOptions::dtype says. Shard-local: as
// Load() does it (a GPU or converting rank reads its column shards itself rather than sharing
// them). Read-once-then-share exchanges host memory as stored, then converts on the host and, for
// a CUDA device, copies each rank's shards into one device allocation.
//
// Thread-safety: one LoadSharded() at a time per communicator.
#ifndef FLASHLOAD_DIST_H_
#define FLASHLOAD_DIST_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/communicator.h"
#include "flashload/loader.h"
#include "flashload/status.h"

namespace flashload {

enum class ShardMode {
  kAuto,
  kShardLocal,
  kReadOnceShare,
};
std::string_view ShardModeName(ShardMode mode);  // "auto", "shard-local", "read-once-share"
// "auto", "local"/"shard-local", "share"/"read-once-share"; kInvalidArgument otherwise.
Result<ShardMode> ParseShardMode(std::string_view text);

struct TensorParallelOptions {
  LoadOptions load;  // how each rank reads (strategy, budget, device, dtype...)
  // Shard rules: a preset ("llama", "none") or the path of a rules file.
  std::string shard = "llama";
  ShardMode mode = ShardMode::kAuto;
  // Read-once-then-share: bytes of the model read per round across all ranks (each rank reads
  // 1/world of it); staging per rank is about 3/world of it. 0: LoadOptions::memory_budget.
  uint64_t share_window_bytes = 0;
  // How long a rank waits for the others at each collective.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

// What one rank did.
struct RankReport {
  int rank = 0;
  int world = 1;
  std::string communicator;
  std::string mode;          // "shard-local" or "read-once-share"
  std::string mode_reason;   // why that mode
  std::string rules;         // the rules used ("llama preset", "rules.txt")
  uint32_t tensors = 0;      // tensors this rank holds
  uint32_t split = 0;        // of which split across the ranks (the rest replicated)
  uint64_t shard_bytes = 0;  // stored bytes of this rank's tensors (its shards)
  uint64_t bytes_read = 0;   // bytes this rank read from storage
  uint64_t bytes_sent = 0;   // read-once-then-share: bytes sent to other ranks
  uint64_t bytes_received = 0;
  uint32_t rounds = 0;       // read-once-then-share rounds
  double seconds = 0;        // the whole load on this rank
  double read_seconds = 0;   // of which reading
  double share_seconds = 0;  // of which exchanging (and waiting for the other ranks)
  // Shard-local: column shards (strided runs shorter than a request is worth) read once across
  // the ranks and shared, and their bytes on this rank.
  uint32_t strided_shared = 0;
  uint64_t strided_shared_bytes = 0;
  // Shard-local: strided shards read as the rows that cover them (gaps cheaper to read than to
  // skip), and the bytes that took.
  uint32_t covering_reads = 0;
  uint64_t covering_bytes = 0;
  LoadReport load;  // shard-local: this rank's Load() report
};

struct ShardedModel {
  TensorMap tensors;  // this rank's shards, by the names Load() gives
  std::map<std::string, Header> headers;
  RankReport report;                // this rank
  std::vector<RankReport> reports;  // every rank, by rank (gathered)
};

Result<ShardedModel> LoadSharded(const std::string& path, Communicator& comm,
                                 const TensorParallelOptions& options = {});

// A one-line summary of a rank's report (the CLI prints one per rank).
std::string DescribeRankReport(const RankReport& r);

}  // namespace flashload

#endif  // FLASHLOAD_DIST_H_
