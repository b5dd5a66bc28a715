// Independent checks of loaded bytes: hashes of tensors read with plain pread(), sharing no code
// with the engine, so `load --verify` compares the engine against a second reader.
//
// Errors: the source's own (kNotFound, kIoError, ... naming the file and byte offset); a file that
// ends before a tensor does is kDataLoss. A mismatch is not an error: VerifyReport lists it.
// Thread-safety: each call opens its own sources; calls may run concurrently. The LoadedModel must
// outlive VerifyModel().
#ifndef FLASHLOAD_CLI_VERIFY_H_
#define FLASHLOAD_CLI_VERIFY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flashload/header.h"
#include "flashload/loader.h"
#include "flashload/status.h"

namespace flashload::cli {

// XXH3-64 of every tensor of `path` (by tensor name), read with one thread and plain pread(); a
// remote object (http(s)://, s3://) with synchronous ReadAt() calls over one connection.
Result<std::map<std::string, uint64_t>> HashTensorsPlainRead(const std::string& path,
                                                             const Header& header,
                                                             const RemoteOpenOptions& remote = {});

struct VerifyReport {
  size_t tensors_checked = 0;
  std::vector<std::string> mismatches;  // "<tensor>: loaded xxh3 .. != file xxh3 .."
};

// Compares every tensor of `model` with a plain read of its file. Loaded tensors that are views of
// the file's mapping (strategy mapped) are read under a SIGBUS guard: a file truncated since the
// load is kDataLoss naming the file, the byte offset and the tensor, never a crash.
Result<VerifyReport> VerifyModel(const LoadedModel& model, const RemoteOpenOptions& remote = {});

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_VERIFY_H_
