// The safetensors header: parsing, validation with the reference rules, and file diagnosis.
//
// A safetensors file is: 8 bytes little-endian N, N bytes of JSON (the header), then the data
// section. Offsets in the header are relative to the data section, which starts at byte 8 + N of
// the file.
//
// Thread-safety: every function may be called concurrently. ParseHeaderJson() parses with a JSON
// parser of the calling thread, kept between calls (its buffers are released after a header of more
// than 16 MiB). Header and TensorInfo are values; the views passed in are only read during the
// call, and nothing returned borrows from them.
#ifndef FLASHLOAD_HEADER_H_
#define FLASHLOAD_HEADER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/status.h"

namespace flashload {

// Default limit on the header length N, the reference's own.
inline constexpr uint64_t kDefaultHeaderLimit = 100'000'000;

// One tensor of a header.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<uint64_t> shape;  // empty for a 0-d (scalar) tensor
  uint64_t data_begin = 0;      // byte offsets into the data section, [begin, end)
  uint64_t data_end = 0;

  uint64_t byte_size() const { return data_end - data_begin; }
  // Product of shape (1 for 0-d); UINT64_MAX on overflow, which a parsed header never has.
  uint64_t element_count() const;
};

// A parsed and validated header.
struct Header {
  uint64_t header_length = 0;  // N
  uint64_t file_size = 0;      // 8 + N + data section
  // Tensors in file order (ascending data_begin); names are unique.
  std::vector<TensorInfo> tensors;
  // `__metadata__`, absent when the header has none (or null).
  std::optional<std::map<std::string, std::string>> metadata;

  // Start of the data section in the file.
  uint64_t data_offset() const { return 8 + header_length; }
  uint64_t data_size() const { return file_size - data_offset(); }
  // An index of `tensors` by name, filled by the parser so that Find takes constant time: an
  // open-addressing hash table (power-of-two size) of index + 1, 0 for an empty slot. Optional:
  // Find stays correct (falls back to a scan) when it is empty or stale.
  std::vector<uint32_t> name_index;

  // The tensor named `name`, or nullptr. The pointer is into `tensors`: valid while the Header
  // lives and `tensors` is not changed.
  const TensorInfo* Find(std::string_view name) const;
};

struct ParseOptions {
  uint64_t header_limit = kDefaultHeaderLimit;  // largest N accepted
  bool reject_duplicate_names = true;           // the reference keeps the last; flashload rejects
};

// Validates the 8-byte prefix and returns N. `prefix` holds the first min(file_size, k) bytes of
// the file (k >= 8; more lets the diagnosis name what the file really is). Errors name
// `file_name`: kDataLoss when the file is < 8 bytes, N exceeds the limit, or 8 + N overflows or
// exceeds `file_size`, with DiagnoseFileKind()'s finding appended when it has one;
// kInvalidArgument when `prefix` has fewer than 8 bytes of a file that has them (a caller bug).
Result<uint64_t> ParseHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                   std::string_view file_name, const ParseOptions& options = {});

// Parses and validates the header JSON (the N bytes after the prefix) with the reference checks, in
// the reference's order (UTF-8, JSON shape, dtype, offsets sorted/contiguous/start at 0, element
// and bit counts without overflow, whole bytes, byte span, data end + 8 + N == file_size), plus
// duplicate names: rejected, or with !reject_duplicate_names all but the last dropped, as the
// reference does. Errors are kDataLoss and name the file, the tensor and the byte offset at fault;
// kInvalidArgument (a caller bug) when json.size() != header_length or the header does not fit a
// file of `file_size` bytes.
Result<Header> ParseHeaderJson(std::string_view json, uint64_t header_length, uint64_t file_size,
                               std::string_view file_name, const ParseOptions& options = {});

// Both steps on a whole in-memory file (tests, fuzzing, small files). Errors as above; a header
// that is not valid UTF-8 or JSON also gets DiagnoseFileKind()'s finding appended.
Result<Header> ParseHeaderFromBytes(std::span<const std::byte> file, std::string_view file_name,
                                    const ParseOptions& options = {});

// Says what a file that is not a valid safetensors file really is, from its first bytes: a Git-LFS
// pointer, an HTML page, a zip (PyTorch) checkpoint, a pickle, a gzip/zstd/tar archive, GGUF,
// NumPy, HDF5, JSON, empty; the answer is a sentence saying what to do. Returns nullopt when the
// bytes look like nothing known. `prefix`: the first bytes (a few KiB; a tar needs 262).
std::optional<std::string> DiagnoseFileKind(std::span<const std::byte> prefix, uint64_t file_size);

// Serializes a header the way the writer lays it out (see writer.h). Exposed for tests.
std::string HeaderToJson(const Header& header);

}  // namespace flashload

#endif  // FLASHLOAD_HEADER_H_
