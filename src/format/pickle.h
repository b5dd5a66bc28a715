// A restricted unpickler: Python pickle bytes (protocols 0 to 5) into an inert tree of values,
// executing nothing.
//
// What it is for: reading PyTorch checkpoints (torch.save) without running the code a pickle can
// name. A pickle is a program for a small stack machine whose GLOBAL/STACK_GLOBAL opcodes import
// any Python callable and whose REDUCE opcode calls it; a checkpoint downloaded from the internet
// can therefore run anything when Python unpickles it. This machine interprets the same opcodes
// but never imports or calls anything:
// - GLOBAL/STACK_GLOBAL produce a kGlobal node only for a name on kAllowedPickleGlobals (below);
//   any other name is refused with kFailedPrecondition naming `module.name` and the byte offset of
//   the opcode.
// - REDUCE records a kCall node (the callable and its argument tuple) and calls nothing; its
//   callable must be a kGlobal node. `collections.OrderedDict()` with no arguments becomes an
//   empty kDict, so the SETITEMS that torch emits after it fill an ordinary dict.
// - BUILD only records its state on a kCall or kDict node made by an allowed global; on anything
//   else it is refused.
// - Opcodes that construct instances of classes (INST, OBJ, NEWOBJ, NEWOBJ_EX), extension
//   registries (EXT1/2/4) and out-of-band buffers (NEXT_BUFFER, READONLY_BUFFER) are refused.
// - Persistent ids (PERSID, BINPERSID) become kPersistentId nodes holding the id; resolving them
//   (torch: storages) is the caller's business.
//
// Limits (PickleLimits) bound the memory a crafted input can make it use: the number of values,
// the stack and mark depth, the memo, and the length of one string or bytes value. Exceeding one is
// kResourceExhausted naming the limit and the offset. Every other malformed input (an unknown
// opcode, a truncated argument, a stack underflow, a value of the wrong kind for an opcode) is
// kDataLoss naming the opcode, its byte offset and `name`.
//
// Offsets in messages are `base_offset` + the position in `bytes`, so a pickle read from the middle
// of a file is reported at its offset in that file.
//
// Thread-safety: ParsePickle is a pure function of its arguments; a PickleTree is a value (read it
// from any number of threads). Lifetime: the tree owns every node; NodeIds index tree.nodes and are
// valid as long as the tree. The tree may contain cycles (a list appended to itself through the
// memo), so code walking it must bound its depth (see torch_checkpoint.h).
#ifndef FLASHLOAD_FORMAT_PICKLE_H_
#define FLASHLOAD_FORMAT_PICKLE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload {

// The globals a pickle may name, as "module.name", each documented in pickle.cc. These are exactly
// the names torch.save writes for tensors, parameters, storages, dtypes and state dicts; none of
// them is ever called.
std::span<const std::string_view> AllowedPickleGlobals();
bool IsAllowedPickleGlobal(std::string_view qualified_name);

using PickleNodeId = uint32_t;

enum class PickleKind : uint8_t {
  kNone,
  kBool,          // `boolean`
  kInt,           // `integer` (fits in int64)
  kBigInt,        // an integer beyond int64: `text` holds its two's-complement bytes, little-endian
  kFloat,         // `real`
  kString,        // `text` (UTF-8 as written; not validated)
  kBytes,         // `text` holds the bytes
  kList,          // `items`
  kTuple,         // `items`
  kSet,           // `items` (set or frozenset)
  kDict,          // `items` as key, value, key, value... in insertion order
  kGlobal,        // `text` = "module.name", always one of AllowedPickleGlobals()
  kCall,          // items[0] = the callable (a kGlobal), items[1] = its argument tuple
  kPersistentId,  // items[0] = the persistent id value
};

std::string_view PickleKindName(PickleKind kind);

struct PickleNode {
  PickleKind kind = PickleKind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;
  std::vector<PickleNodeId> items;
  // The state a BUILD opcode gave this node (kCall or kDict from OrderedDict); kNoState if none.
  PickleNodeId state = kNoState;
  uint64_t offset = 0;  // byte offset (with base_offset) of the opcode that made the node

  static constexpr PickleNodeId kNoState = 0xffffffffu;
};

struct PickleTree {
  std::vector<PickleNode> nodes;
  PickleNodeId root = 0;
  uint64_t end = 0;  // bytes consumed, STOP included (relative to the start of `bytes`)
  int protocol = 0;  // from PROTO; 0 when absent

  const PickleNode& node(PickleNodeId id) const { return nodes[id]; }
  const PickleNode& root_node() const { return nodes[root]; }
};

struct PickleLimits {
  uint64_t max_nodes = 8u << 20;          // values built, in all
  uint64_t max_stack = 1u << 20;          // values on the stack at once
  uint64_t max_marks = 1u << 16;          // open MARKs at once
  uint64_t max_memo = 4u << 20;           // memo entries
  uint64_t max_value_bytes = 256u << 20;  // one string or bytes value
};

// Runs the pickle at the start of `bytes` up to its STOP opcode (bytes after it are not read: a
// legacy torch file is several pickles in a row, see PickleTree::end). `name` names the pickle in
// messages ("model.pt", "archive/data.pkl"). Errors as in the file comment: kFailedPrecondition for
// a refused global or opcode, kResourceExhausted for a limit, kDataLoss for anything malformed.
Result<PickleTree> ParsePickle(std::span<const std::byte> bytes, std::string_view name,
                               const PickleLimits& limits = {}, uint64_t base_offset = 0);

}  // namespace flashload

#endif  // FLASHLOAD_FORMAT_PICKLE_H_
