#include "flashload/header.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "format/json_text.h"

namespace flashload {
namespace {

using format_internal::Quote;

// serde_json's recursion limit: documents nested 128 deep are rejected by the reference.
constexpr size_t kMaxJsonDepth = 127;
// A parser keeps its buffers between calls; past this size they are released after the parse.
constexpr size_t kRetainedParserCapacity = 16 << 20;

uint64_t LoadLe64(std::span<const std::byte> b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(b[i]);
  return v;
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string DiagnosisSuffix(std::span<const std::byte> prefix, uint64_t file_size) {
  std::optional<std::string> kind = DiagnoseFileKind(prefix, file_size);
  return kind ? fmt::format(": not a safetensors file: {}", *kind) : std::string();
}

// Context for building messages about one header.
class HeaderErrors {
 public:
  HeaderErrors(std::string_view json, uint64_t header_length, std::string_view file_name)
      : json_(json), header_length_(header_length), file_name_(file_name) {}

  // Where the tensor's key is in the file, for errors about its JSON entry.
  std::string KeyWhere(std::string_view name) const {
    std::string needle;
    format_internal::AppendJsonString(needle, name);
    const size_t at = json_.find(needle);
    if (at == std::string_view::npos) return std::string();
    return fmt::format(" (header byte offset {} of the file)", 8 + at);
  }

  Status Entry(std::string_view name, std::string_view what) const {
    return DataLossError(
        fmt::format("{}: tensor {}{}: {}", file_name_, Quote(name), KeyWhere(name), what));
  }

  Status Header(std::string_view what) const {
    return DataLossError(fmt::format("{}: header (bytes 8 to {} of the file): {}", file_name_,
                                     8 + header_length_, what));
  }

  std::string TensorAt(const TensorInfo& t) const {
    return fmt::format("tensor {} data_offsets [{}, {}] (at byte offset {} of the file)",
                       Quote(t.name), t.data_begin, t.data_end, 8 + header_length_ + t.data_begin);
  }

  std::string_view file_name() const { return file_name_; }

 private:
  std::string_view json_;
  uint64_t header_length_;
  std::string_view file_name_;
};

std::string_view TypeName(simdjson::dom::element_type type) {
  using T = simdjson::dom::element_type;
  switch (type) {
    case T::ARRAY:
      return "an array";
    case T::OBJECT:
      return "an object";
    case T::INT64:
    case T::UINT64:
      return "an integer";
    case T::DOUBLE:
      return "a floating-point number";
    case T::STRING:
      return "a string";
    case T::BOOL:
      return "a boolean";
    case T::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

// A usize as serde reads it: a non-negative integer that fits 64 bits; a float (even 2.0) fails.
bool ReadUsize(simdjson::dom::element e, uint64_t& out, std::string& error) {
  if (e.is_uint64()) {
    out = e.get_uint64().value_unsafe();
    return true;
  }
  if (e.is_int64()) {
    error = fmt::format("a negative value {}", e.get_int64().value_unsafe());
    return false;
  }
  error = fmt::format("{} instead of a non-negative integer", TypeName(e.type()));
  return false;
}

// dtype: a string naming the variant, or (as serde accepts for a unit enum variant) an object with
// exactly one key, the variant, whose value is null.
Status ReadDtype(simdjson::dom::element e, const HeaderErrors& err, std::string_view name,
                 Dtype& out) {
  std::string_view spelling;
  if (e.is_string()) {
    spelling = e.get_string().value_unsafe();
  } else if (e.is_object()) {
    simdjson::dom::object obj = e.get_object().value_unsafe();
    if (obj.size() != 1) return err.Entry(name, "dtype object must have exactly one key");
    simdjson::dom::key_value_pair kv = *obj.begin();
    if (!kv.value.is_null()) return err.Entry(name, "dtype object's value must be null");
    spelling = kv.key;
  } else {
    return err.Entry(name, fmt::format("dtype must be a string, got {}", TypeName(e.type())));
  }
  std::optional<Dtype> dtype = ParseDtype(spelling);
  if (!dtype) {
    std::string upper(spelling);
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string hint;
    if (upper != spelling && ParseDtype(upper))
      hint = fmt::format(" (dtypes are upper case: {})", upper);
    return err.Entry(name, fmt::format("unknown dtype {}{}", Quote(spelling), hint));
  }
  out = *dtype;
  return Status::Ok();
}

Status ReadShape(simdjson::dom::element e, const HeaderErrors& err, std::string_view name,
                 std::vector<uint64_t>& out) {
  if (!e.is_array()) {
    return err.Entry(name, fmt::format("shape must be an array, got {}", TypeName(e.type())));
  }
  simdjson::dom::array arr = e.get_array().value_unsafe();
  out.reserve(arr.size());
  std::string why;
  for (simdjson::dom::element dim : arr) {
    uint64_t v;
    if (!ReadUsize(dim, v, why)) return err.Entry(name, "shape holds " + why);
    out.push_back(v);
  }
  return Status::Ok();
}

Status ReadOffsets(simdjson::dom::element e, const HeaderErrors& err, std::string_view name,
                   TensorInfo& t) {
  if (!e.is_array()) {
    return err.Entry(name, fmt::format("data_offsets must be an array [begin, end], got {}",
                                       TypeName(e.type())));
  }
  simdjson::dom::array arr = e.get_array().value_unsafe();
  if (arr.size() != 2) {
    return err.Entry(
        name, fmt::format("data_offsets must have 2 elements [begin, end], got {}", arr.size()));
  }
  std::string why;
  auto it = arr.begin();
  if (!ReadUsize(*it, t.data_begin, why) || !ReadUsize(*++it, t.data_end, why)) {
    return err.Entry(name, "data_offsets holds " + why);
  }
  return Status::Ok();
}

Status ReadTensor(std::string_view name, simdjson::dom::element value, const HeaderErrors& err,
                  TensorInfo& t) {
  t.name = std::string(name);
  if (value.is_array()) {
    // serde also reads a struct from a sequence of its fields in declaration order.
    simdjson::dom::array arr = value.get_array().value_unsafe();
    if (arr.size() != 3) {
      return err.Entry(name, fmt::format("entry given as an array must have 3 elements [dtype, "
                                         "shape, data_offsets], got {}",
                                         arr.size()));
    }
    auto it = arr.begin();
    FL_RETURN_IF_ERROR(ReadDtype(*it, err, name, t.dtype));
    FL_RETURN_IF_ERROR(ReadShape(*++it, err, name, t.shape));
    return ReadOffsets(*++it, err, name, t);
  }
  if (!value.is_object()) {
    return err.Entry(name, fmt::format("entry must be an object {{dtype, shape, data_offsets}}, "
                                       "got {}",
                                       TypeName(value.type())));
  }
  bool has_dtype = false, has_shape = false, has_offsets = false;
  const simdjson::dom::object fields = value.get_object().value_unsafe();
  for (simdjson::dom::key_value_pair field : fields) {
    bool* seen = nullptr;
    if (field.key == "dtype") {
      seen = &has_dtype;
    } else if (field.key == "shape") {
      seen = &has_shape;
    } else if (field.key == "data_offsets") {
      seen = &has_offsets;
    } else {
      continue;  // unknown fields are ignored, as by the reference
    }
    if (*seen) return err.Entry(name, fmt::format("duplicate field `{}`", field.key));
    *seen = true;
    if (seen == &has_dtype) {
      FL_RETURN_IF_ERROR(ReadDtype(field.value, err, name, t.dtype));
    } else if (seen == &has_shape) {
      FL_RETURN_IF_ERROR(ReadShape(field.value, err, name, t.shape));
    } else {
      FL_RETURN_IF_ERROR(ReadOffsets(field.value, err, name, t));
    }
  }
  if (!has_dtype) return err.Entry(name, "missing field `dtype`");
  if (!has_shape) return err.Entry(name, "missing field `shape`");
  if (!has_offsets) return err.Entry(name, "missing field `data_offsets`");
  return Status::Ok();
}

Status ReadMetadata(simdjson::dom::element value, const HeaderErrors& err,
                    std::optional<std::map<std::string, std::string>>& out) {
  if (value.is_null()) return Status::Ok();
  if (!value.is_object()) {
    return err.Header(
        fmt::format("__metadata__ must be an object of strings, got {}", TypeName(value.type())));
  }
  auto& map = out.emplace();
  const simdjson::dom::object entries = value.get_object().value_unsafe();
  for (simdjson::dom::key_value_pair kv : entries) {
    if (!kv.value.is_string()) {
      return err.Header(fmt::format("__metadata__ value of key {} must be a string, got {}",
                                    Quote(kv.key), TypeName(kv.value.type())));
    }
    map.insert_or_assign(std::string(kv.key), std::string(kv.value.get_string().value_unsafe()));
  }
  return Status::Ok();
}

// simdjson reads `-0` as the integer 0 where serde_json reads it as the float -0.0, which the
// reference rejects in shape and data_offsets. Only called when the text holds "-0": scans the raw
// JSON for a `-0` number token sitting directly in a tensor's shape or data_offsets.
std::optional<std::string> FindNegativeZeroDim(std::string_view json) {
  struct Frame {
    bool is_object;
    std::string key;
    size_t index = 0;
  };
  std::vector<Frame> stack;
  std::string last_string;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') {
      const size_t start = ++i;
      while (i < json.size() && json[i] != '"') i += json[i] == '\\' ? 2 : 1;
      last_string = std::string(json.substr(start, i - start));
    } else if (c == ':') {
      if (!stack.empty()) stack.back().key = last_string;
    } else if (c == '{' || c == '[') {
      stack.push_back({c == '{', "", 0});
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    } else if (c == ',') {
      if (!stack.empty()) ++stack.back().index;
    } else if (c == '-' && i + 1 < json.size() && json[i + 1] == '0') {
      const char next = i + 2 < json.size() ? json[i + 2] : ' ';
      if (std::isdigit(static_cast<unsigned char>(next)) || next == '.' || next == 'e' ||
          next == 'E') {
        continue;
      }
      if (stack.size() != 3 || !stack[0].is_object || stack[0].key == "__metadata__" ||
          stack[2].is_object) {
        continue;
      }
      const Frame& entry = stack[1];
      if ((entry.is_object && (entry.key == "shape" || entry.key == "data_offsets")) ||
          (!entry.is_object && (entry.index == 1 || entry.index == 2))) {
        return stack[0].key;
      }
    }
  }
  return std::nullopt;
}

void ResetParser(simdjson::dom::parser& parser) {
  parser = simdjson::dom::parser();
  // On failure parse() allocates again, with the default depth limit.
  const simdjson::error_code ignored = parser.allocate(4096, kMaxJsonDepth);
  static_cast<void>(ignored);
}

simdjson::dom::parser& ThreadParser() {
  thread_local simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    ResetParser(p);
    return p;
  }();
  return parser;
}

Status ParseEntries(std::string_view json, const HeaderErrors& err, Header& header) {
  simdjson::dom::parser& parser = ThreadParser();
  simdjson::dom::element root;
  const simdjson::error_code code = parser.parse(json.data(), json.size(), true).get(root);
  if (code != simdjson::SUCCESS) {
    return err.Header(fmt::format("not valid JSON: {}", simdjson::error_message(code)));
  }
  if (!root.is_object()) {
    return err.Header(fmt::format("must be a JSON object mapping tensor names to entries, got {}",
                                  TypeName(root.type())));
  }
  simdjson::dom::object obj = root.get_object().value_unsafe();
  header.tensors.reserve(obj.size());
  bool has_metadata = false;
  for (simdjson::dom::key_value_pair kv : obj) {
    if (kv.key == "__metadata__") {
      if (has_metadata) return err.Header("duplicate field `__metadata__`");
      has_metadata = true;
      FL_RETURN_IF_ERROR(ReadMetadata(kv.value, err, header.metadata));
      continue;
    }
    FL_RETURN_IF_ERROR(ReadTensor(kv.key, kv.value, err, header.tensors.emplace_back()));
  }
  return Status::Ok();
}

size_t NameSlot(std::string_view name, size_t mask) {
  return std::hash<std::string_view>{}(name)&mask;
}

// Builds the name index; rejects duplicates or keeps the last one, as the reference does.
Status IndexNames(const HeaderErrors& err, bool reject, std::vector<TensorInfo>& tensors,
                  std::vector<uint32_t>& index) {
  size_t slots = 16;
  while (slots < tensors.size() * 2) slots *= 2;
  index.assign(slots, 0);
  const size_t mask = slots - 1;
  // Full hashes per slot keep the probes off the (cache-cold) name strings.
  std::vector<size_t> slot_hash(slots);
  std::vector<bool> drop;
  for (uint32_t i = 0; i < tensors.size(); ++i) {
    const size_t hash = std::hash<std::string_view>{}(tensors[i].name);
    size_t slot = hash & mask;
    while (index[slot] != 0 &&
           (slot_hash[slot] != hash || tensors[index[slot] - 1].name != tensors[i].name)) {
      slot = (slot + 1) & mask;
    }
    slot_hash[slot] = hash;
    if (index[slot] != 0) {
      if (reject) {
        return err.Entry(tensors[i].name,
                         "appears twice in the header (duplicate tensor name; the reference "
                         "implementation silently keeps the last one)");
      }
      if (drop.empty()) drop.resize(tensors.size());
      drop[index[slot] - 1] = true;
    }
    index[slot] = i + 1;
  }
  if (drop.empty()) return Status::Ok();
  size_t kept = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!drop[i]) tensors[kept++] = std::move(tensors[i]);
  }
  tensors.resize(kept);
  return IndexNames(err, true, tensors, index);
}

// Puts tensors in file order; ties (empty tensors at one offset) keep header order.
void SortByOffsets(Header& header) {
  auto before = [](const TensorInfo& x, const TensorInfo& y) {
    return x.data_begin != y.data_begin ? x.data_begin < y.data_begin : x.data_end < y.data_end;
  };
  std::vector<TensorInfo>& tensors = header.tensors;
  if (std::is_sorted(tensors.begin(), tensors.end(), before)) return;
  std::vector<uint32_t> position(tensors.size());
  std::iota(position.begin(), position.end(), 0);
  std::stable_sort(position.begin(), position.end(),
                   [&](uint32_t a, uint32_t b) { return before(tensors[a], tensors[b]); });
  std::vector<TensorInfo> sorted;
  sorted.reserve(tensors.size());
  std::vector<uint32_t> new_index(position.size());
  for (uint32_t i = 0; i < position.size(); ++i) {
    new_index[position[i]] = i;
    sorted.push_back(std::move(tensors[position[i]]));
  }
  tensors = std::move(sorted);
  for (uint32_t& entry : header.name_index) {
    if (entry != 0) entry = new_index[entry - 1] + 1;
  }
}

Status CheckLayout(const HeaderErrors& err, const Header& header) {
  uint64_t start = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (t.data_begin != start || t.data_end < t.data_begin) {
      std::string why;
      if (t.data_end < t.data_begin) {
        why = "end is before begin";
      } else if (previous == nullptr) {
        why = "the first tensor must start at offset 0 of the data section";
      } else if (t.data_begin > start) {
        why = fmt::format("leaves a gap of {} bytes after tensor {}, which ends at {}",
                          t.data_begin - start, Quote(previous->name), start);
      } else {
        why = fmt::format("overlaps tensor {}, which ends at {}, by {} bytes",
                          Quote(previous->name), start, start - t.data_begin);
      }
      return DataLossError(
          fmt::format("{}: {}: invalid offsets: {}", err.file_name(), err.TensorAt(t), why));
    }
    start = t.data_end;
    previous = &t;
    uint64_t elements = 1;
    for (uint64_t d : t.shape) {
      if (__builtin_mul_overflow(elements, d, &elements)) {
        return DataLossError(fmt::format("{}: {}: element count of shape {} overflows 64 bits",
                                         err.file_name(), err.TensorAt(t), ShapeString(t.shape)));
      }
    }
    uint64_t bits;
    if (__builtin_mul_overflow(elements, uint64_t{DtypeBits(t.dtype)}, &bits)) {
      return DataLossError(fmt::format("{}: {}: bit count of {} {} overflows 64 bits",
                                       err.file_name(), err.TensorAt(t), DtypeName(t.dtype),
                                       ShapeString(t.shape)));
    }
    if (bits % 8 != 0) {
      return DataLossError(fmt::format(
          "{}: {}: {} {} is {} bits, not a whole number of bytes (sub-byte tensors must fill "
          "whole bytes)",
          err.file_name(), err.TensorAt(t), DtypeName(t.dtype), ShapeString(t.shape), bits));
    }
    if (t.byte_size() != bits / 8) {
      return DataLossError(fmt::format("{}: {}: span of {} bytes, expected {} bytes for {} {}",
                                       err.file_name(), err.TensorAt(t), t.byte_size(), bits / 8,
                                       DtypeName(t.dtype), ShapeString(t.shape)));
    }
  }
  return Status::Ok();
}

Status CheckFileSize(std::string_view file_name, const Header& header) {
  const uint64_t data_end = header.tensors.empty() ? 0 : header.tensors.back().data_end;
  uint64_t expected;
  if (__builtin_add_overflow(data_end, header.data_offset(), &expected)) {
    return DataLossError(fmt::format("{}: data section end {} + header {} overflows 64 bits",
                                     file_name, data_end, header.data_offset()));
  }
  if (expected > header.file_size) {
    std::string who;
    for (const TensorInfo& t : header.tensors) {
      if (header.data_offset() + t.data_end > header.file_size) {
        who = fmt::format(" (tensor {} is the first one cut off)", Quote(t.name));
        break;
      }
    }
    return DataLossError(fmt::format(
        "{}: truncated: data section should end at byte {} but the file has {} bytes ({} bytes "
        "missing){}",
        file_name, expected, header.file_size, expected - header.file_size, who));
  }
  if (expected < header.file_size) {
    return DataLossError(fmt::format(
        "{}: trailing bytes: data section should end at byte {} but the file has {} bytes ({} "
        "bytes too many)",
        file_name, expected, header.file_size, header.file_size - expected));
  }
  return Status::Ok();
}

}  // namespace

uint64_t TensorInfo::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return UINT64_MAX;
  }
  return n;
}

const TensorInfo* Header::Find(std::string_view name) const {
  const size_t slots = name_index.size();
  if (slots > tensors.size() && (slots & (slots - 1)) == 0) {
    for (size_t slot = NameSlot(name, slots - 1);; slot = (slot + 1) & (slots - 1)) {
      const uint32_t entry = name_index[slot];
      if (entry == 0 || entry > tensors.size()) break;
      if (tensors[entry - 1].name == name) return &tensors[entry - 1];
    }
  }
  // A header built or edited by hand may have a stale index: a miss is confirmed by a scan.
  for (const TensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<uint64_t> ParseHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                   std::string_view file_name, const ParseOptions& options) {
  if (file_size < 8 || prefix.size() < 8) {
    if (file_size >= 8) {
      return InvalidArgumentError(fmt::format(
          "{}: ParseHeaderLength needs the first 8 bytes, got {}", file_name, prefix.size()));
    }
    return DataLossError(fmt::format(
        "{}: header too small: the file has {} bytes, fewer than the 8 of the header length{}",
        file_name, file_size, DiagnosisSuffix(prefix, file_size)));
  }
  const uint64_t n = LoadLe64(prefix);
  if (n > options.header_limit) {
    return DataLossError(fmt::format(
        "{}: header too large: header length {} (bytes 0-7 of the file) exceeds the limit of {} "
        "bytes{}",
        file_name, n, options.header_limit, DiagnosisSuffix(prefix, file_size)));
  }
  uint64_t stop;
  if (__builtin_add_overflow(n, uint64_t{8}, &stop)) {
    return DataLossError(fmt::format(
        "{}: invalid header length {} (bytes 0-7 of the file): 8 + {} overflows 64 bits{}",
        file_name, n, n, DiagnosisSuffix(prefix, file_size)));
  }
  if (stop > file_size) {
    std::string kind = DiagnosisSuffix(prefix, file_size);
    if (kind.empty()) kind = ": the file is truncated, or not a safetensors file";
    return DataLossError(fmt::format(
        "{}: invalid header length {} (bytes 0-7 of the file): the header would end at byte {} "
        "but the file has {} bytes{}",
        file_name, n, stop, file_size, kind));
  }
  return n;
}

Result<Header> ParseHeaderJson(std::string_view json, uint64_t header_length, uint64_t file_size,
                               std::string_view file_name, const ParseOptions& options) {
  if (json.size() != header_length) {
    return InvalidArgumentError(fmt::format("{}: header JSON has {} bytes, header length says {}",
                                            file_name, json.size(), header_length));
  }
  if (header_length > file_size || file_size - header_length < 8) {
    return InvalidArgumentError(fmt::format("{}: header length {} does not fit a file of {} bytes",
                                            file_name, header_length, file_size));
  }
  const HeaderErrors err(json, header_length, file_name);
  if (!simdjson::validate_utf8(json.data(), json.size())) {
    const size_t at = format_internal::FirstInvalidUtf8(json).value_or(0);
    return DataLossError(fmt::format(
        "{}: header is not valid UTF-8: byte 0x{:02x} at byte offset {} of the file", file_name,
        at < json.size() ? static_cast<unsigned char>(json[at]) : 0, 8 + at));
  }
  Header header;
  header.header_length = header_length;
  header.file_size = file_size;
  Status parsed = ParseEntries(json, err, header);
  if (ThreadParser().capacity() > kRetainedParserCapacity) {
    ResetParser(ThreadParser());
  }
  FL_RETURN_IF_ERROR(parsed);
  if (json.find("-0") != std::string_view::npos) {
    if (std::optional<std::string> name = FindNegativeZeroDim(json)) {
      return err.Entry(*name,
                       "shape or data_offsets holds -0, which is a floating-point number "
                       "to the reference parser, not an integer");
    }
  }
  FL_RETURN_IF_ERROR(
      IndexNames(err, options.reject_duplicate_names, header.tensors, header.name_index));
  SortByOffsets(header);
  FL_RETURN_IF_ERROR(CheckLayout(err, header));
  FL_RETURN_IF_ERROR(CheckFileSize(file_name, header));
  return header;
}

Result<Header> ParseHeaderFromBytes(std::span<const std::byte> file, std::string_view file_name,
                                    const ParseOptions& options) {
  FL_ASSIGN_OR_RETURN(const uint64_t n,
                      ParseHeaderLength(file.first(std::min<size_t>(file.size(), 4096)),
                                        file.size(), file_name, options));
  const std::string_view json(reinterpret_cast<const char*>(file.data()) + 8, n);
  Result<Header> header = ParseHeaderJson(json, n, file.size(), file_name, options);
  if (!header.ok() && header.status().message().find("not valid") != std::string_view::npos) {
    if (std::optional<std::string> kind =
            DiagnoseFileKind(file.first(std::min<size_t>(file.size(), 4096)), file.size())) {
      return Status(header.status().code(),
                    fmt::format("{} ({})", header.status().message(), *kind));
    }
  }
  return header;
}

std::string HeaderToJson(const Header& header) {
  std::string out;
  out.reserve(64 + header.tensors.size() * 96);
  out.push_back('{');
  if (header.metadata) {
    out += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : *header.metadata) {
      if (!first) out.push_back(',');
      first = false;
      format_internal::AppendJsonString(out, key);
      out.push_back(':');
      format_internal::AppendJsonString(out, value);
    }
    out.push_back('}');
    if (!header.tensors.empty()) out.push_back(',');
  }
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const TensorInfo& t = header.tensors[i];
    if (i > 0) out.push_back(',');
    format_internal::AppendJsonString(out, t.name);
    fmt::format_to(std::back_inserter(out),
                   ":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                   DtypeName(t.dtype), fmt::join(t.shape, ","), t.data_begin, t.data_end);
  }
  out.push_back('}');
  return out;
}

}  // namespace flashload
