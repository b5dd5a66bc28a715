// Archives as sources: a model loaded straight out of a tar archive (.tar) or a zstd seekable tar
// archive (.tar.zst), local or remote (file://, http(s)://, s3://), without extracting it.
//
// Layers of one open archive (an Archive, shared by everything that reads it):
//   raw source        the archive's bytes, opened through the source registry (so a remote
//                     archive gets the registry's retries)
//   content           the tar bytes: the raw source itself, or its decompressing view
//                     (SeekableZstdSource, src/io/zstd_seekable_source.h), with one frame cache;
//                     its small frames (tar headers, configs, indexes: at most 64 KiB each, 16 MiB
//                     in all) fetched in parallel at the open and kept while it is open
//   index             member path -> data offset and size (ArchiveIndex, src/io/archive_index.h)
//   member sources    each a Source over the byte window [data_offset, data_offset + size) of
//                     the content; they hold the Archive (reference counted)
//   model store       a ModelStore over the index, so layout resolution (diffusers model_index,
//                     sharded index, single file) works on members exactly as on a folder
//
// Member URIs: "tar:<archive>!/<member path>", e.g.
//   tar:/models/models--org--name--fp16.tar.zst!/unet/diffusion_pytorch_model.safetensors
//   tar:s3://bucket/models--org--name--fp16.tar.zst!/text_encoder/model.safetensors
// <archive> is an absolute local path or a URI (file:// URIs are turned into their path), and
// ends before the first "!/" (an archive URI holding "!/" cannot be named). "tar:<archive>!/" is
// the archive's root folder. The registry routes "tar:" to OpenArchiveMemberUri().
//
// Open archives are cached process-wide by archive URI (and, for a local file, its identity:
// device, inode, size, modification time) plus the remote options that change what is read
// (endpoint, region, credentials mode, headers, TLS): the cache holds weak references, so an
// archive lives as long as a member source or store uses it, plus the most recently opened archive
// for up to kRecentArchiveSeconds after (so a resolution followed by a load opens it once). The
// performance options of the first open (remote connections and range size) apply to all users
// of the open archive; local archives are always read with positional reads on one descriptor.
//
// Compression is recognized by content, not by name: zstd (the seekable format; a plain zstd
// stream is refused with kUnimplemented, saying `flashload unpack` can extract it), gzip (refused
// with kUnimplemented), otherwise tar.
//
// Thread-safety: every function and method may be called concurrently. Member sources follow the
// Source contract; their batches run on a small pool of workers per member (started on the first
// batch), each read going through the shared content (and frame cache).
// Errors name the archive, the member, and byte offsets in the member and in the archive.
#ifndef FLASHLOAD_IO_ARCHIVE_SOURCE_H_
#define FLASHLOAD_IO_ARCHIVE_SOURCE_H_

#include <memory>
#include <string>
#include <string_view>

#include "flashload/model.h"
#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/archive_index.h"
#include "io/zstd_seekable_source.h"

namespace flashload {

inline constexpr std::string_view kArchiveScheme = "tar";
inline constexpr int kRecentArchiveSeconds = 10;

struct ArchiveOptions {
  ArchiveIndexLimits limits;
  SeekableZstdOptions zstd;
};

// One open archive. Create with OpenArchive() or OpenArchiveFromSource(); share by shared_ptr.
class Archive : public std::enable_shared_from_this<Archive> {
 public:
  enum class Compression { kNone, kZstdSeekable };

  Archive(std::string uri, std::shared_ptr<const Source> raw, std::shared_ptr<const Source> content,
          Compression compression, ArchiveIndex index);

  // The archive URI or absolute path, as in member URIs.
  const std::string& uri() const { return uri_; }
  Compression compression() const { return compression_; }
  const ArchiveIndex& index() const { return index_; }
  // The tar bytes (decompressed).
  const Source& content() const { return *content_; }
  const Source& raw() const { return *raw_; }

  // A source over member `path` (normalized or not). Errors: kNotFound naming the archive and
  // member (with a hint when the path is a folder); kInvalidArgument for a link, device or FIFO
  // member, saying what it is.
  Result<std::unique_ptr<Source>> OpenMember(std::string_view path) const;

 private:
  const std::string uri_;
  const std::shared_ptr<const Source> raw_;
  const std::shared_ptr<const Source> content_;
  const Compression compression_;
  const ArchiveIndex index_;
};

// Opens `raw` (the archive's bytes, named `uri` in messages and member URIs) as an archive: finds
// its compression, opens the seek table, walks the headers. Errors: kUnimplemented for a zstd
// stream not in the seekable format and for gzip, naming the archive and what to do; the errors
// of OpenSeekableZstd() and ArchiveIndex::Build().
Result<std::shared_ptr<Archive>> OpenArchiveFromSource(std::unique_ptr<Source> raw, std::string uri,
                                                       const ArchiveOptions& options = {});
// Opens the archive at `uri` (a local path or a URI the default registry opens), through the
// process-wide cache described above.
Result<std::shared_ptr<Archive>> OpenArchive(const std::string& uri, const OpenOptions& options,
                                             const ArchiveOptions& archive_options = {});
// Drops the cache's strong reference to the most recently opened archive (tests, long-lived
// processes that want the descriptor closed now).
void ReleaseRecentArchive();

// ---- URIs ---------------------------------------------------------------------------------------

struct ArchiveMemberRef {
  std::string archive;  // the archive's path or URI
  std::string member;   // normalized; "" for the root folder
};

// Whether `uri` starts with "tar:" (case ignored).
bool IsArchiveMemberUri(std::string_view uri);
// Splits a member URI. kInvalidArgument for another scheme, no "!/", an empty archive, or a
// member path CheckMemberPath refuses.
Result<ArchiveMemberRef> ParseArchiveMemberUri(std::string_view uri);
// "tar:<archive>!/<member>".
std::string ArchiveMemberUri(std::string_view archive, std::string_view member);
// Whether a path or URI names an archive by its name: it ends with ".tar" or ".tar.zst" (for
// http(s):// without the query and fragment).
bool LooksLikeArchive(std::string_view path_or_uri);
// The archive part of member URIs for an archive at `path_or_uri`: the absolute, normal path of a
// local path or file:// URI; other URIs unchanged.
Result<std::string> ArchiveLocation(const std::string& path_or_uri);

// Whether the archive at `path_or_uri` (an archive path or URI, or a "tar:" URI inside one) is a
// plain zstd stream: zstd frames with no seek table at the end (what `tar -I zstd -cf` writes),
// which OpenArchive() refuses with kUnimplemented and which can only be read front to back
// (LoadStreamedArchive(), src/load/stream_load.h). Reads the first 4 and the last 9 bytes through
// the registry (`opener` when set). Errors: those of opening and reading the archive.
Result<bool> IsPlainZstdArchive(const std::string& path_or_uri, const OpenOptions& options,
                                const SourceOpener& opener = {});

// The registry's factory for "tar:" URIs: the member source, from the cached archive.
Result<std::unique_ptr<Source>> OpenArchiveMemberUri(const std::string& uri,
                                                     const OpenOptions& options);
// The caps a member source of `uri` will report, from the cached archive (the strategy code sizes
// a member's reads before opening it).
Result<SourceCaps> ArchiveMemberCaps(const std::string& uri, const OpenOptions& options);
// A ModelStore over the archive of a member URI (any member or folder of it).
Result<std::unique_ptr<ModelStore>> OpenArchiveModelStore(const std::string& uri,
                                                          const OpenOptions& options);

// Resolves the model inside an archive: `path_or_uri` is an archive (LooksLikeArchive) or a
// "tar:" URI of a folder or file in one. When the archive's root holds no model but one folder,
// the model in that folder (archives packed as "NAME/..."). Files come back as member URIs.
Result<ModelLayout> ResolveArchiveModel(const std::string& path_or_uri,
                                        const ResolveOptions& options, const OpenOptions& open);

}  // namespace flashload

#endif  // FLASHLOAD_IO_ARCHIVE_SOURCE_H_
