#include "format/pickle.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_map>

#include "format/json_text.h"

namespace flashload {
namespace {

using format_internal::Quote;

// Every entry is a name torch.save writes; none is ever called (REDUCE only records a call node).
constexpr std::string_view kAllowed[] = {
    // A state dict is an OrderedDict: REDUCE of it with no arguments becomes an empty dict.
    "collections.OrderedDict",
    // How a tensor is pickled: (storage, storage_offset, size, stride, requires_grad,
    // backward_hooks[, metadata]); v3 adds the dtype, for storages without a typed class.
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    // nn.Parameter: (tensor, requires_grad, backward_hooks[, state]).
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    // Storage classes: they appear only inside persistent ids, naming the element type of a
    // storage. UntypedStorage (bytes) goes with a dtype global below.
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.ComplexFloatStorage",
    "torch.ComplexDoubleStorage",  // allowed so the error can say complex128 has no safetensors dtype
    "torch.storage.UntypedStorage",
    // Dtypes, as _rebuild_tensor_v3 names them (a torch.dtype pickles as the global of its name).
    "torch.float32",
    "torch.float64",
    "torch.float16",
    "torch.bfloat16",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.uint16",
    "torch.uint32",
    "torch.uint64",
    "torch.bool",
    "torch.complex64",
    "torch.complex128",
    "torch.float8_e4m3fn",
    "torch.float8_e5m2",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu",
};

constexpr std::string_view kRefusal =
    "flashload converts tensors only and never runs code from a checkpoint";

struct OpcodeName {
  uint8_t code;
  std::string_view name;
};
constexpr OpcodeName kOpcodeNames[] = {
    {'(', "MARK"},
    {'.', "STOP"},
    {'0', "POP"},
    {'1', "POP_MARK"},
    {'2', "DUP"},
    {'F', "FLOAT"},
    {'I', "INT"},
    {'J', "BININT"},
    {'K', "BININT1"},
    {'L', "LONG"},
    {'M', "BININT2"},
    {'N', "NONE"},
    {'P', "PERSID"},
    {'Q', "BINPERSID"},
    {'R', "REDUCE"},
    {'S', "STRING"},
    {'T', "BINSTRING"},
    {'U', "SHORT_BINSTRING"},
    {'V', "UNICODE"},
    {'X', "BINUNICODE"},
    {'a', "APPEND"},
    {'b', "BUILD"},
    {'c', "GLOBAL"},
    {'d', "DICT"},
    {'}', "EMPTY_DICT"},
    {'e', "APPENDS"},
    {'g', "GET"},
    {'h', "BINGET"},
    {'i', "INST"},
    {'j', "LONG_BINGET"},
    {'l', "LIST"},
    {']', "EMPTY_LIST"},
    {'o', "OBJ"},
    {'p', "PUT"},
    {'q', "BINPUT"},
    {'r', "LONG_BINPUT"},
    {'s', "SETITEM"},
    {'t', "TUPLE"},
    {')', "EMPTY_TUPLE"},
    {'u', "SETITEMS"},
    {'G', "BINFLOAT"},
    {0x80, "PROTO"},
    {0x81, "NEWOBJ"},
    {0x82, "EXT1"},
    {0x83, "EXT2"},
    {0x84, "EXT4"},
    {0x85, "TUPLE1"},
    {0x86, "TUPLE2"},
    {0x87, "TUPLE3"},
    {0x88, "NEWTRUE"},
    {0x89, "NEWFALSE"},
    {0x8a, "LONG1"},
    {0x8b, "LONG4"},
    {'B', "BINBYTES"},
    {'C', "SHORT_BINBYTES"},
    {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"},
    {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"},
    {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"},
    {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"},
    {0x94, "MEMOIZE"},
    {0x95, "FRAME"},
    {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"},
    {0x98, "READONLY_BUFFER"},
};

std::string OpcodeLabel(uint8_t code) {
  for (const OpcodeName& o : kOpcodeNames) {
    if (o.code == code) return std::string(o.name);
  }
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%02x", code);
  return buf;
}

class Machine {
 public:
  Machine(std::span<const std::byte> bytes, std::string_view name, const PickleLimits& limits,
          uint64_t base)
      : bytes_(bytes), name_(name), limits_(limits), base_(base) {}

  Result<PickleTree> Run();

 private:
  uint64_t At() const { return base_ + op_pos_; }
  Status Malformed(std::string_view what) const {
    return DataLossError("malformed pickle " + std::string(name_) + ": " + OpcodeLabel(op_) +
                         " at byte " + std::to_string(At()) + " " + std::string(what) +
                         "; the file is not a valid PyTorch checkpoint (truncated or corrupt?)");
  }
  Status Limit(std::string_view what, uint64_t limit) const {
    return ResourceExhaustedError("pickle " + std::string(name_) + ": " + OpcodeLabel(op_) +
                                  " at byte " + std::to_string(At()) + " goes past the limit of " +
                                  std::to_string(limit) + " " + std::string(what) +
                                  "; a checkpoint this large or deep is not one torch.save writes");
  }

  Result<std::span<const std::byte>> Take(uint64_t n) {
    if (n > bytes_.size() - pos_) return Malformed("runs past the end of the pickle");
    std::span<const std::byte> s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  Result<uint64_t> TakeLe(int n) {
    FL_ASSIGN_OR_RETURN(std::span<const std::byte> s, Take(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[i]);
    return v;
  }
  Result<std::string_view> TakeLine() {
    const std::byte* begin = bytes_.data() + pos_;
    const void* nl = std::memchr(begin, '\n', bytes_.size() - pos_);
    if (nl == nullptr) return Malformed("has no end of line");
    const size_t n = static_cast<const std::byte*>(nl) - begin;
    pos_ += n + 1;
    return std::string_view(reinterpret_cast<const char*>(begin), n);
  }

  Result<PickleNodeId> New(PickleKind kind) {
    if (tree_.nodes.size() >= limits_.max_nodes) return Limit("values", limits_.max_nodes);
    PickleNode n;
    n.kind = kind;
    n.offset = At();
    tree_.nodes.push_back(std::move(n));
    return static_cast<PickleNodeId>(tree_.nodes.size() - 1);
  }
  Status Push(PickleNodeId id) {
    if (stack_.size() >= limits_.max_stack) return Limit("stack entries", limits_.max_stack);
    stack_.push_back(id);
    return Status::Ok();
  }
  Status PushNew(PickleKind kind, PickleNode** out = nullptr) {
    FL_ASSIGN_OR_RETURN(PickleNodeId id, New(kind));
    if (out != nullptr) *out = &tree_.nodes[id];
    return Push(id);
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Result<PickleNodeId> Pop() {
    if (stack_.size() <= Floor()) return Malformed("pops an empty stack");
    PickleNodeId id = stack_.back();
    stack_.pop_back();
    return id;
  }
  Result<PickleNodeId> Top() {
    if (stack_.size() <= Floor()) return Malformed("needs a value on the stack");
    return stack_.back();
  }
  Result<std::vector<PickleNodeId>> PopMark() {
    if (marks_.empty()) return Malformed("has no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleNodeId> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  PickleNode& N(PickleNodeId id) { return tree_.nodes[id]; }

  Status Text(PickleKind kind, uint64_t n) {
    if (n > limits_.max_value_bytes) return Limit("bytes in one value", limits_.max_value_bytes);
    FL_ASSIGN_OR_RETURN(std::span<const std::byte> s, Take(n));
    PickleNode* node = nullptr;
    FL_RETURN_IF_ERROR(PushNew(kind, &node));
    node->text.assign(reinterpret_cast<const char*>(s.data()), s.size());
    return Status::Ok();
  }
  Status Int(int64_t v) {
    PickleNode* node = nullptr;
    FL_RETURN_IF_ERROR(PushNew(PickleKind::kInt, &node));
    node->integer = v;
    return Status::Ok();
  }
  Status Long(std::span<const std::byte> s);
  Status Global(std::string_view module, std::string_view name);
  Status Memo(uint64_t index) {
    FL_ASSIGN_OR_RETURN(PickleNodeId top, Top());
    if (memo_.size() >= limits_.max_memo && !memo_.contains(index))
      return Limit("memo entries", limits_.max_memo);
    memo_[index] = top;
    return Status::Ok();
  }
  Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end())
      return Malformed("reads memo entry " + std::to_string(index) + ", never stored");
    return Push(it->second);
  }
  Status Tuple(std::vector<PickleNodeId> items) {
    PickleNode* node = nullptr;
    FL_RETURN_IF_ERROR(PushNew(PickleKind::kTuple, &node));
    node->items = std::move(items);
    return Status::Ok();
  }
  Status Step();

  std::span<const std::byte> bytes_;
  std::string_view name_;
  const PickleLimits& limits_;
  uint64_t base_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  bool stopped_ = false;
  PickleTree tree_;
  std::vector<PickleNodeId> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleNodeId> memo_;
};

Status Machine::Long(std::span<const std::byte> s) {
  if (s.empty()) return Int(0);
  const bool negative = (static_cast<uint8_t>(s.back()) & 0x80) != 0;
  const uint8_t fill = negative ? 0xff : 0x00;
  size_t significant = s.size();
  while (significant > 1 && static_cast<uint8_t>(s[significant - 1]) == fill &&
         ((static_cast<uint8_t>(s[significant - 2]) & 0x80) != 0) == negative)
    --significant;
  if (significant <= 8) {
    uint64_t v = negative ? ~uint64_t{0} : 0;
    for (size_t i = 0; i < significant; ++i) {
      v &= ~(uint64_t{0xff} << (8 * i));
      v |= uint64_t{static_cast<uint8_t>(s[i])} << (8 * i);
    }
    return Int(static_cast<int64_t>(v));
  }
  PickleNode* node = nullptr;
  FL_RETURN_IF_ERROR(PushNew(PickleKind::kBigInt, &node));
  node->text.assign(reinterpret_cast<const char*>(s.data()), s.size());
  return Status::Ok();
}

Status Machine::Global(std::string_view module, std::string_view name) {
  std::string qualified = std::string(module) + "." + std::string(name);
  if (!IsAllowedPickleGlobal(qualified)) {
    return FailedPreconditionError("refused global " + Quote(qualified) + " at byte " +
                                   std::to_string(At()) + " of " + std::string(name_) + ": " +
                                   std::string(kRefusal) +
                                   " (docs/convert.md lists the globals a checkpoint may name)");
  }
  PickleNode* node = nullptr;
  FL_RETURN_IF_ERROR(PushNew(PickleKind::kGlobal, &node));
  node->text = std::move(qualified);
  return Status::Ok();
}

Status Machine::Step() {
  op_pos_ = pos_;
  FL_ASSIGN_OR_RETURN(std::span<const std::byte> opb, Take(1));
  op_ = static_cast<uint8_t>(opb[0]);
  switch (op_) {
    case 0x80: {  // PROTO
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(1));
      if (v > 5) return Malformed("names protocol " + std::to_string(v) + " (at most 5 exists)");
      tree_.protocol = static_cast<int>(v);
      return Status::Ok();
    }
    case 0x95: {  // FRAME: a hint for buffering; the opcodes inside read as usual.
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(8));
      if (n > bytes_.size() - pos_)
        return Malformed("announces a frame past the end of the pickle");
      return Status::Ok();
    }
    case '.': {  // STOP
      FL_ASSIGN_OR_RETURN(PickleNodeId root, Pop());
      tree_.root = root;
      stopped_ = true;
      return Status::Ok();
    }
    case '(':
      if (marks_.size() >= limits_.max_marks) return Limit("open marks", limits_.max_marks);
      marks_.push_back(stack_.size());
      return Status::Ok();
    case '0':  // POP: pops the top value, or the mark when it sits on top
      if (!marks_.empty() && marks_.back() == stack_.size()) {
        marks_.pop_back();
        return Status::Ok();
      }
      return Pop().status();
    case '1':  // POP_MARK
      return PopMark().status();
    case '2': {  // DUP
      FL_ASSIGN_OR_RETURN(PickleNodeId top, Top());
      return Push(top);
    }
    case 'N':
      return PushNew(PickleKind::kNone);
    case 0x88:
    case 0x89: {
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kBool, &node));
      node->boolean = op_ == 0x88;
      return Status::Ok();
    }
    case 'I':
    case 'L': {  // INT, LONG (text)
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      if (op_ == 'I' && (line == "00" || line == "01")) {
        PickleNode* node = nullptr;
        FL_RETURN_IF_ERROR(PushNew(PickleKind::kBool, &node));
        node->boolean = line == "01";
        return Status::Ok();
      }
      if (op_ == 'L' && !line.empty() && line.back() == 'L') line.remove_suffix(1);
      bool negative = !line.empty() && line[0] == '-';
      if (negative || (!line.empty() && line[0] == '+')) line.remove_prefix(1);
      if (line.empty() || line.size() > 19) return Malformed("holds no integer that fits 64 bits");
      int64_t v = 0;
      for (char c : line) {
        if (c < '0' || c > '9') return Malformed("holds no decimal integer");
        v = v * 10 + (c - '0');
      }
      return Int(negative ? -v : v);
    }
    case 'J': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(4));
      return Int(static_cast<int32_t>(static_cast<uint32_t>(v)));
    }
    case 'K': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(1));
      return Int(static_cast<int64_t>(v));
    }
    case 'M': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(2));
      return Int(static_cast<int64_t>(v));
    }
    case 0x8a:
    case 0x8b: {  // LONG1, LONG4
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(op_ == 0x8a ? 1 : 4));
      if (n > limits_.max_value_bytes) return Limit("bytes in one value", limits_.max_value_bytes);
      FL_ASSIGN_OR_RETURN(std::span<const std::byte> s, Take(n));
      return Long(s);
    }
    case 'F': {
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      std::string text(line);
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size()) return Malformed("holds no number");
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kFloat, &node));
      node->real = v;
      return Status::Ok();
    }
    case 'G': {  // BINFLOAT: big-endian
      FL_ASSIGN_OR_RETURN(std::span<const std::byte> s, Take(8));
      uint64_t bits = 0;
      for (std::byte b : s) bits = (bits << 8) | static_cast<uint8_t>(b);
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kFloat, &node));
      node->real = std::bit_cast<double>(bits);
      return Status::Ok();
    }
    case 'X': {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(4));
      return Text(PickleKind::kString, n);
    }
    case 0x8c: {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(1));
      return Text(PickleKind::kString, n);
    }
    case 0x8d: {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(8));
      return Text(PickleKind::kString, n);
    }
    case 'T': {  // BINSTRING (a Python 2 str): kept as text
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(4));
      return Text(PickleKind::kString, n);
    }
    case 'U': {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(1));
      return Text(PickleKind::kString, n);
    }
    case 'V':    // UNICODE (raw-unicode-escape; kept as written)
    case 'S': {  // STRING (a quoted repr; the quotes are removed, escapes kept as written)
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      if (op_ == 'S') {
        if (line.size() < 2 || line.front() != line.back() ||
            (line.front() != '\'' && line.front() != '"'))
          return Malformed("holds no quoted string");
        line = line.substr(1, line.size() - 2);
      }
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kString, &node));
      node->text = std::string(line);
      return Status::Ok();
    }
    case 'B': {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(4));
      return Text(PickleKind::kBytes, n);
    }
    case 'C': {
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(1));
      return Text(PickleKind::kBytes, n);
    }
    case 0x8e:
    case 0x96: {  // BINBYTES8, BYTEARRAY8
      FL_ASSIGN_OR_RETURN(uint64_t n, TakeLe(8));
      return Text(PickleKind::kBytes, n);
    }
    case ']':
      return PushNew(PickleKind::kList);
    case ')':
      return PushNew(PickleKind::kTuple);
    case '}':
      return PushNew(PickleKind::kDict);
    case 0x8f:
      return PushNew(PickleKind::kSet);
    case 'l':
    case 't':
    case 'd':
    case 0x91: {  // LIST, TUPLE, DICT, FROZENSET from the values above the mark
      FL_ASSIGN_OR_RETURN(std::vector<PickleNodeId> items, PopMark());
      if (op_ == 'd' && items.size() % 2 != 0) return Malformed("has a key without a value");
      const PickleKind kind = op_ == 'l'   ? PickleKind::kList
                              : op_ == 't' ? PickleKind::kTuple
                              : op_ == 'd' ? PickleKind::kDict
                                           : PickleKind::kSet;
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(kind, &node));
      node->items = std::move(items);
      return Status::Ok();
    }
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      const size_t n = op_ - 0x84;
      if (stack_.size() < Floor() + n)
        return Malformed("needs " + std::to_string(n) + " values on the stack");
      std::vector<PickleNodeId> items(stack_.end() - n, stack_.end());
      stack_.resize(stack_.size() - n);
      return Tuple(std::move(items));
    }
    case 'a': {  // APPEND
      FL_ASSIGN_OR_RETURN(PickleNodeId value, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId list, Top());
      if (N(list).kind != PickleKind::kList)
        return Malformed("appends to a " + std::string(PickleKindName(N(list).kind)) +
                         ", not a list");
      N(list).items.push_back(value);
      return Status::Ok();
    }
    case 'e':
    case 0x90: {  // APPENDS, ADDITEMS
      FL_ASSIGN_OR_RETURN(std::vector<PickleNodeId> items, PopMark());
      FL_ASSIGN_OR_RETURN(PickleNodeId target, Top());
      const PickleKind want = op_ == 'e' ? PickleKind::kList : PickleKind::kSet;
      if (N(target).kind != want)
        return Malformed("adds items to a " + std::string(PickleKindName(N(target).kind)) +
                         ", not a " + std::string(PickleKindName(want)));
      N(target).items.insert(N(target).items.end(), items.begin(), items.end());
      return Status::Ok();
    }
    case 's': {  // SETITEM
      FL_ASSIGN_OR_RETURN(PickleNodeId value, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId key, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId dict, Top());
      if (N(dict).kind != PickleKind::kDict)
        return Malformed("sets an item of a " + std::string(PickleKindName(N(dict).kind)) +
                         ", not a dict");
      N(dict).items.push_back(key);
      N(dict).items.push_back(value);
      return Status::Ok();
    }
    case 'u': {  // SETITEMS
      FL_ASSIGN_OR_RETURN(std::vector<PickleNodeId> items, PopMark());
      if (items.size() % 2 != 0) return Malformed("has a key without a value");
      FL_ASSIGN_OR_RETURN(PickleNodeId dict, Top());
      if (N(dict).kind != PickleKind::kDict)
        return Malformed("sets items of a " + std::string(PickleKindName(N(dict).kind)) +
                         ", not a dict");
      N(dict).items.insert(N(dict).items.end(), items.begin(), items.end());
      return Status::Ok();
    }
    case 'p': {
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      std::optional<uint64_t> v;
      uint64_t acc = 0;
      if (!line.empty() && line.size() <= 18 &&
          std::all_of(line.begin(), line.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        for (char c : line) acc = acc * 10 + (c - '0');
        v = acc;
      }
      if (!v) return Malformed("holds no memo index");
      return Memo(*v);
    }
    case 'q': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(1));
      return Memo(v);
    }
    case 'r': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(4));
      return Memo(v);
    }
    case 0x94:
      return Memo(memo_.size());
    case 'g': {
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      uint64_t acc = 0;
      if (line.empty() || line.size() > 18 ||
          !std::all_of(line.begin(), line.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return Malformed("holds no memo index");
      for (char c : line) acc = acc * 10 + (c - '0');
      return Get(acc);
    }
    case 'h': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(1));
      return Get(v);
    }
    case 'j': {
      FL_ASSIGN_OR_RETURN(uint64_t v, TakeLe(4));
      return Get(v);
    }
    case 'c': {  // GLOBAL "module\nname\n"
      FL_ASSIGN_OR_RETURN(std::string_view module, TakeLine());
      FL_ASSIGN_OR_RETURN(std::string_view name, TakeLine());
      return Global(module, name);
    }
    case 0x93: {  // STACK_GLOBAL
      FL_ASSIGN_OR_RETURN(PickleNodeId name, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId module, Pop());
      if (N(name).kind != PickleKind::kString || N(module).kind != PickleKind::kString)
        return Malformed("needs two strings (module and name)");
      return Global(N(module).text, N(name).text);
    }
    case 'R': {  // REDUCE: records the call, calls nothing
      FL_ASSIGN_OR_RETURN(PickleNodeId args, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId callable, Pop());
      if (N(callable).kind != PickleKind::kGlobal)
        return FailedPreconditionError("refused REDUCE at byte " + std::to_string(At()) + " of " +
                                       std::string(name_) + ": it calls a " +
                                       std::string(PickleKindName(N(callable).kind)) +
                                       ", not an allowed global; " + std::string(kRefusal));
      if (N(args).kind != PickleKind::kTuple)
        return Malformed("has arguments that are not a tuple");
      if (N(callable).text == "collections.OrderedDict" && N(args).items.empty())
        return PushNew(PickleKind::kDict);
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kCall, &node));
      node->items = {callable, args};
      return Status::Ok();
    }
    case 'b': {  // BUILD: records the state on a call or dict, sets nothing
      FL_ASSIGN_OR_RETURN(PickleNodeId state, Pop());
      FL_ASSIGN_OR_RETURN(PickleNodeId target, Top());
      if (N(target).kind != PickleKind::kCall && N(target).kind != PickleKind::kDict)
        return FailedPreconditionError(
            "refused BUILD at byte " + std::to_string(At()) + " of " + std::string(name_) +
            ": it sets the state of a " + std::string(PickleKindName(N(target).kind)) +
            ", not of an object an allowed global made; " + std::string(kRefusal));
      N(target).state = state;
      return Status::Ok();
    }
    case 'P': {
      FL_ASSIGN_OR_RETURN(std::string_view line, TakeLine());
      FL_ASSIGN_OR_RETURN(PickleNodeId pid, New(PickleKind::kString));
      N(pid).text = std::string(line);
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kPersistentId, &node));
      node->items = {pid};
      return Status::Ok();
    }
    case 'Q': {
      FL_ASSIGN_OR_RETURN(PickleNodeId pid, Pop());
      PickleNode* node = nullptr;
      FL_RETURN_IF_ERROR(PushNew(PickleKind::kPersistentId, &node));
      node->items = {pid};
      return Status::Ok();
    }
    case 'i':
    case 'o':
    case 0x81:
    case 0x92:
    case 0x82:
    case 0x83:
    case 0x84:
    case 0x97:
    case 0x98:
      return FailedPreconditionError("refused opcode " + OpcodeLabel(op_) + " at byte " +
                                     std::to_string(At()) + " of " + std::string(name_) +
                                     ": torch.save never writes it; " + std::string(kRefusal));
    default:
      return DataLossError(
          "unknown pickle opcode " + OpcodeLabel(op_) + " at byte " + std::to_string(At()) +
          " of " + std::string(name_) +
          "; the file is not a valid PyTorch checkpoint (corrupt, or not a pickle)");
  }
}

Result<PickleTree> Machine::Run() {
  while (!stopped_) {
    if (pos_ >= bytes_.size()) {
      op_pos_ = pos_;
      return DataLossError("pickle " + std::string(name_) + " ends at byte " +
                           std::to_string(base_ + pos_) +
                           " without its STOP opcode; the file is truncated");
    }
    FL_RETURN_IF_ERROR(Step());
  }
  tree_.end = pos_;
  return std::move(tree_);
}

}  // namespace

std::span<const std::string_view> AllowedPickleGlobals() { return kAllowed; }

bool IsAllowedPickleGlobal(std::string_view qualified_name) {
  return std::find(std::begin(kAllowed), std::end(kAllowed), qualified_name) != std::end(kAllowed);
}

std::string_view PickleKindName(PickleKind kind) {
  switch (kind) {
    case PickleKind::kNone:
      return "None";
    case PickleKind::kBool:
      return "bool";
    case PickleKind::kInt:
      return "int";
    case PickleKind::kBigInt:
      return "big int";
    case PickleKind::kFloat:
      return "float";
    case PickleKind::kString:
      return "string";
    case PickleKind::kBytes:
      return "bytes";
    case PickleKind::kList:
      return "list";
    case PickleKind::kTuple:
      return "tuple";
    case PickleKind::kSet:
      return "set";
    case PickleKind::kDict:
      return "dict";
    case PickleKind::kGlobal:
      return "global";
    case PickleKind::kCall:
      return "call";
    case PickleKind::kPersistentId:
      return "persistent id";
  }
  return "?";
}

Result<PickleTree> ParsePickle(std::span<const std::byte> bytes, std::string_view name,
                               const PickleLimits& limits, uint64_t base_offset) {
  Machine m(bytes, name, limits, base_offset);
  return m.Run();
}

}  // namespace flashload
