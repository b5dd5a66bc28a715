// Loading a model out of a plain (not seekable) .tar.zst by streaming it: the archive is read once,
// front to back, decompressed as it arrives, and each tensor's bytes are decompressed straight
// into the memory the tensor will own.
//
// A plain zstd stream (`tar -I zstd -cf`, `tar --zstd -cf`) has no seek table, so no member can be
// reached without decompressing everything before it; Load() sends such archives here (local,
// file://, http(s)://, s3://, and "tar:" URIs of a folder or file inside one) after the random-
// access path (io/archive_source.h) refused them. Seekable archives never come here.
//
// What happens as the stream passes (src/io/zstd_stream_reader.h reads it, a couple of large
// reads in flight):
// - tar headers (ustar, pax, GNU long names) are walked with format/tar.h; every path is checked
//   with CheckMemberPath (an archive holding "..", absolute paths... is refused whole);
// - a `*.safetensors` member (under the folder asked for): its header is read (limit:
//   LoadOptions::header_limit) and validated, host memory for its data section is allocated, and
//   the data is decompressed into it;
// - a `*.json` member of at most StreamLoadOptions::max_json_bytes: kept as text (for
//   model_index.json and sharded indexes);
// - everything else, links and devices included, is skipped as it passes (links are never
//   followed: resolving through one is kInvalidArgument, as for seekable archives).
// The stream is then read to its end, so that every zstd frame's checksum is verified before any
// tensor is handed out. Then the layout is resolved over the members seen, exactly as for a folder
// (diffusers model_index.json with LoadOptions::variant, sharded indexes, a single file; an archive
// packed as "NAME/..." resolves into its one top folder), sharded weight maps are checked against
// the headers, and the tensors of the files outside the layout are freed.
//
// Memory: the tensors of every safetensors member under the folder asked for (freed at the end
// when outside the layout; an archive holding several variants of the same weights holds them all
// until then), the kept JSON texts, the read buffers (read_bytes × (reads_in_flight + 1)) and
// libzstd's window (at most 2^window_log_max bytes). Never a whole member or archive beyond that.
//
// Progress (LoadOptions::progress): bytes_done is the compressed bytes decompressed so far and
// bytes_total the archive's size; files_done counts the safetensors members placed so far and
// files_total stays 0 (unknown until the end), until the last call, where both are the layout's
// file count. Called about every 64 MiB of compressed bytes and at the end; returning false
// cancels (kCancelled), as does LoadOptions::cancel.
//
// Tensors and report: as Load() gives them for the same model in a folder: file paths are member
// URIs ("tar:<archive>!/<member>"), tensor names "<component>/<tensor>" in diffusers models, host
// tensors aligned as the file laid them out (data() congruent to the file offset modulo 4096),
// each owning a share of its file's memory. The report's strategy is "stream (plain zstd: read
// front to back)".
//
// Errors (nothing is returned on error; all memory is freed): kFailedPrecondition for a GPU
// device or a dtype conversion (stream the archive once: repack it with `flashload pack`, or
// unpack it); kDataLoss naming the archive, the member and byte offsets for a damaged or truncated
// stream, a member that ends before its safetensors header says, or a malformed header; kDataLoss
// for a weight map that does not match the shards; kResourceExhausted beyond the limits (header,
// members, window) naming what and where; read errors of the archive with their own code;
// kCancelled.
//
// Thread-safety: LoadStreamedArchive() may run concurrently with other loads; it reads on the
// calling thread (plus the source's own I/O threads).
#ifndef FLASHLOAD_LOAD_STREAM_LOAD_H_
#define FLASHLOAD_LOAD_STREAM_LOAD_H_

#include <cstdint>
#include <string>

#include "flashload/load_options.h"
#include "flashload/loader.h"
#include "io/archive_index.h"
#include "io/zstd_stream_reader.h"

namespace flashload {

inline constexpr std::string_view kStreamStrategy = "stream (plain zstd: read front to back)";

// Limits and sizes of a streamed load; the defaults suit any archive `tar -I zstd` writes.
struct StreamLoadOptions {
  ZstdStreamOptions zstd;
  ArchiveIndexLimits limits;
  uint64_t max_json_bytes = 64ull << 20;  // larger .json members are skipped (not kept)
};

// Loads the model in the plain zstd tar archive `path_or_uri` (a local path, file://, http(s)://,
// s3:// URI, or a "tar:" URI of a folder or file in such an archive) by reading it front to back;
// see the file comment. The archive is opened through `options.opener` when set, else the
// registry (so remote archives get their scheme's retries).
Result<LoadedModel> LoadStreamedArchive(const std::string& path_or_uri, const LoadOptions& options,
                                        const StreamLoadOptions& stream = {});

namespace load_internal {
// Every shard of a sharded checkpoint holds exactly the tensors its index assigns it (both load
// paths check it; defined in loader.cc). kDataLoss naming the index, shard and tensor at fault.
Status CheckWeightMaps(const LoadedModel& model);
}  // namespace load_internal

}  // namespace flashload

#endif  // FLASHLOAD_LOAD_STREAM_LOAD_H_
