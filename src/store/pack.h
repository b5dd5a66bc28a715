// Packing a model folder into one deterministic archive (`flashload pack`).
//
// What is packed: every folder and regular file under the input folder, as members sorted by
// their relative '/'-separated path (bytewise), folders included (the input folder itself is not a
// member). Headers are deterministic: mtime 0, uid/gid 0, empty owner names, mode 0755 for
// folders and 0644 for files, ustar with a pax record only where a path or size needs one. The
// same folder packed twice with the same options gives the same bytes.
//
// The compile cache: `.flashload/compile-cache/` (the torch.compile cache the Python package's
// flashload.torch.save_compile_cache() stores beside the weights, docs/compile-cache.md) is packed
// like any folder, so loading or pulling the archive brings it with the weights. With
// `compile_cache` false it is left out, and so is `.flashload/` when nothing else is in it.
//
// What is refused (kInvalidArgument naming the path, nothing written): symbolic links (flashload
// follows no link, inside the folder or not: copy the target in place of the link), devices,
// FIFOs and sockets; an output path inside the input folder.
//
// Precision: with `precision` fp16, bf16 or fp32, every tensor stored as F32, F16 or BF16 in every
// `.safetensors` file is converted to that dtype while packing (ConvertElements: round to nearest
// even), tensor by tensor in chunks of at most 8 MiB, so memory stays bounded whatever the
// model's size. A converted file is rewritten by the safetensors writer's layout (SerializeHeader:
// reference order, 8-byte alignment), keeping its `__metadata__` and adding
// "flashload.precision": "<precision>". A file none of whose tensors changes dtype is packed as it
// is, byte for byte. Other tensors (integers, fp8, F64...) keep their dtype and bytes.
//
// Formats: `.tar`, or `.tar.zst` in the zstd seekable format (src/store/seekable_writer.h): every
// header block (with its pax record) is a frame of its own, each member's data begins a new frame
// and is cut into frames of `frame_bytes` decompressed bytes, and the end-of-archive blocks are the
// last frame; the seek table follows.
//
// Output: written to a temporary file in the target folder ("<archive>.tmp.XXXXXX"), flushed
// (fsync), renamed over the archive, and the folder flushed; on any error the temporary file is
// removed and nothing else changes. An existing archive is replaced only with `force`.
//
// Thread-safety: PackModel() may run concurrently for different outputs; `progress` is called on
// the calling thread.
#ifndef FLASHLOAD_STORE_PACK_H_
#define FLASHLOAD_STORE_PACK_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload::store {

enum class ArchiveFormat {
  kTar,      // ".tar"
  kTarZstd,  // ".tar.zst", seekable
};
// "tar" or "tar.zst".
std::string_view ArchiveFormatName(ArchiveFormat format);
// The extension of a format: ".tar" or ".tar.zst".
std::string_view ArchiveExtension(ArchiveFormat format);
// Parses "tar" or "tar.zst" (also "tzst"); kInvalidArgument otherwise.
Result<ArchiveFormat> ParseArchiveFormat(std::string_view text);

// The folder, relative to the model folder, where the compile cache lives.
inline constexpr std::string_view kCompileCacheFolder = ".flashload/compile-cache";

struct PackOptions {
  std::string input_dir;
  // A file path ("x.tar" / "x.tar.zst": the extension decides the format), or an existing folder
  // (the archive is then named ArchiveName({org, name, precision}) there, and `name` is needed).
  std::string output;
  std::string name;                     // "ORG/NAME"; needed when `output` is a folder
  std::string precision;                // "", "fp16", "bf16" or "fp32" (see the header comment)
  std::optional<ArchiveFormat> format;  // must agree with the output's extension when both are set
  int level = 3;                        // zstd level
  uint64_t frame_bytes = uint64_t{4} << 20;
  uint32_t threads = 0;       // compressing threads; 0: min(cores, 8)
  bool force = false;         // replace an existing archive
  bool compile_cache = true;  // pack kCompileCacheFolder when present (see the header comment)
  // Called with the input bytes packed so far and their total, about every 64 MiB and at the end.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct PackSummary {
  std::string archive;  // the path written
  ArchiveFormat format = ArchiveFormat::kTarZstd;
  std::string precision;  // as named in the archive ("" when neither given nor inferred)
  uint64_t members = 0;
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t converted_files = 0;
  uint64_t converted_tensors = 0;
  uint64_t compile_cache_files = 0;     // files packed from kCompileCacheFolder
  bool compile_cache_left_out = false;  // the folder was present and left out (!compile_cache)
  uint64_t bytes_in = 0;                // sizes of the input files
  uint64_t tar_bytes = 0;               // the uncompressed tar stream
  uint64_t bytes_out = 0;               // the archive file
  uint64_t frames = 0;                  // zstd frames (.tar.zst), seek table not counted
  double seconds = 0;
  // Uncompressed tar bytes per archive byte (1 for .tar).
  double Ratio() const { return bytes_out ? static_cast<double>(tar_bytes) / bytes_out : 0; }
  double GbPerSecond() const { return seconds > 0 ? bytes_in / seconds / 1e9 : 0; }
};

// Packs `options.input_dir`. Errors (nothing is left behind): kInvalidArgument for bad options
// (naming the option), a refused entry (naming its path), a format that disagrees with the
// output's extension, or an output folder without `name`; kFailedPrecondition when the archive
// exists and !force; kDataLoss naming the file and byte offset for a `.safetensors` file that
// cannot be converted (malformed header, truncated data); I/O errors from ErrnoToStatus() naming
// the file and byte offset.
Result<PackSummary> PackModel(const PackOptions& options);

// One member of a packed folder, as PackModel() lists it (exposed for tests).
struct PackEntry {
  std::string path;  // relative, '/'-separated
  bool directory = false;
  uint64_t size = 0;  // of the input file
};
// The members of `dir` in archive order, with the refusals described above.
Result<std::vector<PackEntry>> ListPackEntries(const std::string& dir);

// Whether `path` (relative, '/'-separated) is kCompileCacheFolder or inside it.
bool IsCompileCachePath(std::string_view path);
// `entries` without kCompileCacheFolder and what it holds, and without `.flashload` when nothing
// else is left in it. Order is kept. Returns whether anything was removed.
bool RemoveCompileCache(std::vector<PackEntry>& entries);

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_PACK_H_
