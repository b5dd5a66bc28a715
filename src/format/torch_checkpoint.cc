#include "format/torch_checkpoint.h"

#include <fmt/format.h>

#include <unordered_set>

#include "format/json_text.h"

namespace flashload {
namespace {

using format_internal::Quote;

struct StorageClass {
  std::string_view global;
  std::optional<Dtype> dtype;  // nullopt: untyped (bytes; the dtype comes from the tensor)
  uint64_t element_bytes;
};
constexpr StorageClass kStorageClasses[] = {
    {"torch.FloatStorage", Dtype::kF32, 4},
    {"torch.DoubleStorage", Dtype::kF64, 8},
    {"torch.HalfStorage", Dtype::kF16, 2},
    {"torch.BFloat16Storage", Dtype::kBF16, 2},
    {"torch.LongStorage", Dtype::kI64, 8},
    {"torch.IntStorage", Dtype::kI32, 4},
    {"torch.ShortStorage", Dtype::kI16, 2},
    {"torch.CharStorage", Dtype::kI8, 1},
    {"torch.ByteStorage", Dtype::kU8, 1},
    {"torch.BoolStorage", Dtype::kBool, 1},
    {"torch.ComplexFloatStorage", Dtype::kC64, 8},
    {"torch.storage.UntypedStorage", std::nullopt, 1},
};

struct DtypeGlobal {
  std::string_view global;
  Dtype dtype;
};
constexpr DtypeGlobal kDtypeGlobals[] = {
    {"torch.float32", Dtype::kF32},
    {"torch.float64", Dtype::kF64},
    {"torch.float16", Dtype::kF16},
    {"torch.bfloat16", Dtype::kBF16},
    {"torch.int64", Dtype::kI64},
    {"torch.int32", Dtype::kI32},
    {"torch.int16", Dtype::kI16},
    {"torch.int8", Dtype::kI8},
    {"torch.uint8", Dtype::kU8},
    {"torch.uint16", Dtype::kU16},
    {"torch.uint32", Dtype::kU32},
    {"torch.uint64", Dtype::kU64},
    {"torch.bool", Dtype::kBool},
    {"torch.complex64", Dtype::kC64},
    {"torch.float8_e4m3fn", Dtype::kF8E4M3},
    {"torch.float8_e5m2", Dtype::kF8E5M2},
    {"torch.float8_e4m3fnuz", Dtype::kF8E4M3Fnuz},
    {"torch.float8_e5m2fnuz", Dtype::kF8E5M2Fnuz},
    {"torch.float8_e8m0fnu", Dtype::kF8E8M0},
};

constexpr std::string_view kUnwrapKeys[] = {"state_dict", "model", "module"};

bool IsTensorCall(const PickleTree& tree, const PickleNode& n) {
  if (n.kind != PickleKind::kCall) return false;
  const std::string& f = tree.node(n.items[0]).text;
  return f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor_v3" ||
         f == "torch._utils._rebuild_parameter" ||
         f == "torch._utils._rebuild_parameter_with_state";
}

class Reader {
 public:
  Reader(const PickleTree& tree, std::string_view name, const TorchReadLimits& limits)
      : tree_(tree),
        name_(name),
        limits_(limits),
        visit_budget_(uint64_t{4} * tree.nodes.size() + 1024) {}

  Result<TorchCheckpoint> Read();

 private:
  Status Bad(std::string_view tensor, uint64_t offset, std::string_view what) const {
    return DataLossError("checkpoint " + std::string(name_) + ": tensor " + Quote(tensor) +
                         " at byte " + std::to_string(offset) + " of its pickle: " +
                         std::string(what) + "; torch.save does not write this (corrupt file?)");
  }
  Status Walk(PickleNodeId id, const std::string& prefix, int depth);
  Status AddTensor(const PickleNode& call, const std::string& name);
  Result<bool> HoldsTensor(PickleNodeId id, int depth);
  void Skip(const std::string& name) {
    ++out_.skipped_entries;
    if (out_.skipped_names.size() < kMaxSkippedNames) out_.skipped_names.push_back(name);
  }
  Status Visit(const PickleNode& n, int depth) {
    if (depth > limits_.max_depth)
      return ResourceExhaustedError(
          "checkpoint " + std::string(name_) + ": values nested deeper than " +
          std::to_string(limits_.max_depth) + " at byte " + std::to_string(n.offset) +
          " of its pickle (a cycle, or not a state dict)");
    if (visit_budget_-- == 0)
      return ResourceExhaustedError("checkpoint " + std::string(name_) +
                                    ": values shared so often that listing them never ends (at "
                                    "byte " +
                                    std::to_string(n.offset) +
                                    " of its pickle); this is not a state dict torch.save writes");
    return Status::Ok();
  }
  Result<std::vector<uint64_t>> Ints(PickleNodeId id, std::string_view tensor, uint64_t at,
                                     std::string_view what) const {
    const PickleNode& n = tree_.node(id);
    if (n.kind != PickleKind::kTuple && n.kind != PickleKind::kList)
      return Bad(
          tensor, at,
          std::string(what) + " is a " + std::string(PickleKindName(n.kind)) + ", not a tuple");
    std::vector<uint64_t> v;
    for (PickleNodeId i : n.items) {
      const PickleNode& x = tree_.node(i);
      if (x.kind != PickleKind::kInt || x.integer < 0)
        return Bad(tensor, at,
                   std::string(what) + " holds something other than a non-negative integer");
      v.push_back(static_cast<uint64_t>(x.integer));
    }
    return v;
  }

  const PickleTree& tree_;
  std::string_view name_;
  const TorchReadLimits& limits_;
  uint64_t visit_budget_;
  TorchCheckpoint out_;
  std::unordered_set<std::string> names_;
};

Result<bool> Reader::HoldsTensor(PickleNodeId id, int depth) {
  const PickleNode& n = tree_.node(id);
  FL_RETURN_IF_ERROR(Visit(n, depth));
  if (IsTensorCall(tree_, n)) return true;
  if (n.kind == PickleKind::kDict) {
    for (size_t i = 1; i < n.items.size(); i += 2) {
      FL_ASSIGN_OR_RETURN(bool holds, HoldsTensor(n.items[i], depth + 1));
      if (holds) return true;
    }
  } else if (n.kind == PickleKind::kList || n.kind == PickleKind::kTuple) {
    for (PickleNodeId c : n.items) {
      FL_ASSIGN_OR_RETURN(bool holds, HoldsTensor(c, depth + 1));
      if (holds) return true;
    }
  }
  return false;
}

Status Reader::Walk(PickleNodeId id, const std::string& prefix, int depth) {
  const PickleNode& n = tree_.node(id);
  FL_RETURN_IF_ERROR(Visit(n, depth));
  auto join = [&](const std::string& key) { return prefix.empty() ? key : prefix + "." + key; };
  if (IsTensorCall(tree_, n)) return AddTensor(n, prefix);
  if (n.kind == PickleKind::kDict) {
    for (size_t i = 0; i + 1 < n.items.size(); i += 2) {
      const PickleNode& key = tree_.node(n.items[i]);
      std::string k;
      if (key.kind == PickleKind::kString) {
        k = key.text;
      } else if (key.kind == PickleKind::kInt) {
        k = std::to_string(key.integer);
      } else {
        Skip(join(fmt::format("<{} key>", PickleKindName(key.kind))));
        continue;
      }
      FL_RETURN_IF_ERROR(Walk(n.items[i + 1], join(k), depth + 1));
    }
    return Status::Ok();
  }
  if (n.kind == PickleKind::kList || n.kind == PickleKind::kTuple) {
    for (size_t i = 0; i < n.items.size(); ++i)
      FL_RETURN_IF_ERROR(Walk(n.items[i], join(std::to_string(i)), depth + 1));
    return Status::Ok();
  }
  Skip(prefix);
  return Status::Ok();
}

Status Reader::AddTensor(const PickleNode& call, const std::string& name) {
  const std::string& fn = tree_.node(call.items[0]).text;
  const PickleNode& args = tree_.node(call.items[1]);
  if (fn == "torch._utils._rebuild_parameter" ||
      fn == "torch._utils._rebuild_parameter_with_state") {
    if (args.items.empty()) return Bad(name, call.offset, "a parameter without its tensor");
    const PickleNode& data = tree_.node(args.items[0]);
    if (!IsTensorCall(tree_, data) ||
        tree_.node(data.items[0]).text.find("_rebuild_parameter") != std::string::npos)
      return Bad(name, call.offset, "a parameter whose data is not a tensor");
    return AddTensor(data, name);
  }
  const bool v3 = fn == "torch._utils._rebuild_tensor_v3";
  if (args.items.size() < (v3 ? 7u : 4u))
    return Bad(name, call.offset, std::to_string(args.items.size()) + " arguments to " + fn);
  if (name.empty())
    return Bad(name, call.offset,
               "a tensor without a name (the checkpoint is one tensor, not a dict)");
  if (!names_.insert(name).second) return Bad(name, call.offset, "a second tensor with this name");

  TorchTensor t;
  t.name = name;
  t.offset = call.offset;
  // The persistent id: ('storage', storage_type, key, location, size[, view_metadata]).
  const PickleNode& pid_node = tree_.node(args.items[0]);
  if (pid_node.kind != PickleKind::kPersistentId)
    return Bad(
        name, call.offset,
        "its storage is a " + std::string(PickleKindName(pid_node.kind)) + ", not a persistent id");
  const PickleNode& pid = tree_.node(pid_node.items[0]);
  if (pid.kind != PickleKind::kTuple || pid.items.size() < 5 ||
      tree_.node(pid.items[0]).kind != PickleKind::kString ||
      tree_.node(pid.items[0]).text != "storage")
    return Bad(name, pid_node.offset,
               "a persistent id that is not ('storage', type, key, location, size)");
  const PickleNode& type = tree_.node(pid.items[1]);
  const PickleNode& key = tree_.node(pid.items[2]);
  const PickleNode& size = tree_.node(pid.items[4]);
  if (type.kind != PickleKind::kGlobal)
    return Bad(name, pid_node.offset, "a storage type that is not a storage class");
  if (key.kind != PickleKind::kString && key.kind != PickleKind::kInt)
    return Bad(name, pid_node.offset, "a storage key that is not a string");
  if (size.kind != PickleKind::kInt || size.integer < 0)
    return Bad(name, pid_node.offset, "a storage size that is not a non-negative integer");
  const StorageClass* sc = nullptr;
  for (const StorageClass& c : kStorageClasses)
    if (c.global == type.text) sc = &c;
  if (sc == nullptr) {
    if (type.text == "torch.ComplexDoubleStorage")
      return UnimplementedError("checkpoint " + std::string(name_) + ": tensor " + Quote(name) +
                                " is complex128, which safetensors cannot hold; convert it to "
                                "complex64 in torch first");
    return Bad(name, pid_node.offset,
               "storage type " + Quote(type.text) + " is not a storage class");
  }
  t.storage_key = key.kind == PickleKind::kString ? key.text : std::to_string(key.integer);
  t.storage_element_bytes = sc->element_bytes;
  const uint64_t declared = static_cast<uint64_t>(size.integer);
  if (declared > UINT64_MAX / sc->element_bytes)
    return Bad(name, pid_node.offset, "a storage size that overflows 64 bits");
  t.view_bytes = declared * sc->element_bytes;
  if (pid.items.size() >= 6 && tree_.node(pid.items[5]).kind != PickleKind::kNone) {
    // Legacy storage view: (view_key, offset, view_size) of the root storage `key`.
    const PickleNode& view = tree_.node(pid.items[5]);
    if (view.kind != PickleKind::kTuple || view.items.size() != 3 ||
        tree_.node(view.items[1]).kind != PickleKind::kInt ||
        tree_.node(view.items[2]).kind != PickleKind::kInt ||
        tree_.node(view.items[1]).integer < 0 || tree_.node(view.items[2]).integer < 0)
      return Bad(name, pid_node.offset, "a storage view that is not (key, offset, size)");
    const uint64_t vo = static_cast<uint64_t>(tree_.node(view.items[1]).integer);
    const uint64_t vs = static_cast<uint64_t>(tree_.node(view.items[2]).integer);
    if (vo > UINT64_MAX / sc->element_bytes || vs > UINT64_MAX / sc->element_bytes)
      return Bad(name, pid_node.offset, "a storage view that overflows 64 bits");
    t.view_begin = vo * sc->element_bytes;
    t.view_bytes = vs * sc->element_bytes;
  }

  if (v3) {
    const PickleNode& dt = tree_.node(args.items[6]);
    const DtypeGlobal* found = nullptr;
    for (const DtypeGlobal& d : kDtypeGlobals)
      if (dt.kind == PickleKind::kGlobal && d.global == dt.text) found = &d;
    if (found == nullptr) {
      if (dt.kind == PickleKind::kGlobal && dt.text == "torch.complex128")
        return UnimplementedError("checkpoint " + std::string(name_) + ": tensor " + Quote(name) +
                                  " is complex128, which safetensors cannot hold; convert it to "
                                  "complex64 in torch first");
      return Bad(name, call.offset, "a dtype argument that is not a torch dtype");
    }
    t.dtype = found->dtype;
  } else {
    if (!sc->dtype)
      return Bad(name, call.offset, "an untyped storage without a dtype (_rebuild_tensor_v2)");
    t.dtype = *sc->dtype;
  }
  const PickleNode& off = tree_.node(args.items[1]);
  if (off.kind != PickleKind::kInt || off.integer < 0)
    return Bad(name, call.offset, "a storage offset that is not a non-negative integer");
  t.storage_offset = static_cast<uint64_t>(off.integer);
  FL_ASSIGN_OR_RETURN(t.shape, Ints(args.items[2], name, call.offset, "its size"));
  FL_ASSIGN_OR_RETURN(t.strides, Ints(args.items[3], name, call.offset, "its stride"));
  if (t.shape.size() != t.strides.size())
    return Bad(name, call.offset,
               std::to_string(t.shape.size()) + " sizes but " + std::to_string(t.strides.size()) +
                   " strides");
  out_.tensors.push_back(std::move(t));
  return Status::Ok();
}

Result<TorchCheckpoint> Reader::Read() {
  const PickleNode& root = tree_.root_node();
  if (root.kind != PickleKind::kDict)
    return DataLossError("checkpoint " + std::string(name_) + " holds a " +
                         std::string(PickleKindName(root.kind)) +
                         " at its top level, not a dict of tensors; save a state_dict() "
                         "(torch.save(model.state_dict(), path)) to convert it");
  PickleNodeId start = tree_.root;
  bool direct = false;
  for (size_t i = 1; i < root.items.size() && !direct; i += 2)
    direct = IsTensorCall(tree_, tree_.node(root.items[i]));
  if (!direct) {
    for (std::string_view want : kUnwrapKeys) {
      for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
        const PickleNode& key = tree_.node(root.items[i]);
        const PickleNode& value = tree_.node(root.items[i + 1]);
        if (key.kind != PickleKind::kString || key.text != want || value.kind != PickleKind::kDict)
          continue;
        FL_ASSIGN_OR_RETURN(bool holds, HoldsTensor(root.items[i + 1], 1));
        if (holds) {
          start = root.items[i + 1];
          out_.unwrapped_key = std::string(want);
          break;
        }
      }
      if (!out_.unwrapped_key.empty()) break;
    }
  }
  if (!out_.unwrapped_key.empty()) {
    for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
      if (root.items[i + 1] == start) continue;
      const PickleNode& key = tree_.node(root.items[i]);
      Skip(key.kind == PickleKind::kString ? key.text
                                           : fmt::format("<{} key>", PickleKindName(key.kind)));
    }
  }
  FL_RETURN_IF_ERROR(Walk(start, "", 0));
  return std::move(out_);
}

}  // namespace

uint64_t TorchTensor::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

Result<TorchCheckpoint> ReadTorchCheckpoint(const PickleTree& tree, std::string_view name,
                                            const TorchReadLimits& limits) {
  if (tree.nodes.empty()) return DataLossError("checkpoint " + std::string(name) + " is empty");
  Reader r(tree, name, limits);
  return r.Read();
}

Result<ViewExtent> TensorExtent(const TorchTensor& t, std::string_view file_name) {
  auto overflow = [&] {
    return DataLossError("checkpoint " + std::string(file_name) + ": tensor " + Quote(t.name) +
                         " at byte " + std::to_string(t.offset) +
                         " of its pickle: its size, strides and offset overflow 64 bits; the "
                         "file is corrupt or crafted");
  };
  const uint64_t el = DtypeBits(t.dtype) / 8;
  uint64_t last_index = t.storage_offset;  // index of the last element touched
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] == 0) return ViewExtent{};
    const uint64_t span = t.shape[i] - 1;
    if (span != 0 && t.strides[i] > UINT64_MAX / span) return overflow();
    const uint64_t add = span * t.strides[i];
    if (last_index > UINT64_MAX - add) return overflow();
    last_index += add;
  }
  if (t.storage_offset > UINT64_MAX / el || last_index >= UINT64_MAX / el - 1) return overflow();
  return ViewExtent{t.storage_offset * el, (last_index + 1) * el};
}

bool IsContiguous(const TorchTensor& t) {
  uint64_t expected = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] == 0) return true;
    if (t.shape[i] != 1 && t.strides[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

bool LooksLikeLegacyTorch(std::span<const std::byte> file) {
  static constexpr uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                       0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (file.size() < sizeof(kMagic)) return false;
  for (size_t i = 0; i < sizeof(kMagic); ++i)
    if (static_cast<uint8_t>(file[i]) != kMagic[i]) return false;
  return true;
}

Result<LegacyLayout> ReadLegacyPickles(std::span<const std::byte> file, std::string_view name,
                                       const PickleLimits& limits) {
  LegacyLayout out;
  uint64_t at = 0;
  auto next = [&](std::string_view what) -> Result<PickleTree> {
    const std::string label = std::string(name) + " (" + std::string(what) + ")";
    Result<PickleTree> tree = ParsePickle(file.subspan(at), label, limits, at);
    if (tree.ok()) at += tree->end;
    return tree;
  };
  FL_ASSIGN_OR_RETURN(PickleTree magic, next("magic number"));
  if (magic.root_node().kind != PickleKind::kBigInt || !LooksLikeLegacyTorch(file))
    return DataLossError("checkpoint " + std::string(name) +
                         " does not start with the magic number of a legacy torch file");
  const uint64_t version_at = at;
  FL_ASSIGN_OR_RETURN(PickleTree version, next("protocol version"));
  if (version.root_node().kind != PickleKind::kInt || version.root_node().integer != 1001)
    return DataLossError("checkpoint " + std::string(name) + ": protocol version at byte " +
                         std::to_string(version_at) +
                         " is not 1001; only files torch.save "
                         "writes (torch >= 0.4) convert");
  FL_ASSIGN_OR_RETURN(PickleTree sys_info, next("sys_info"));
  (void)sys_info;
  out.main_offset = at;
  FL_ASSIGN_OR_RETURN(out.main, next("main pickle"));
  const uint64_t keys_at = at;
  FL_ASSIGN_OR_RETURN(PickleTree keys, next("storage keys"));
  const PickleNode& list = keys.root_node();
  if (list.kind != PickleKind::kList)
    return DataLossError("checkpoint " + std::string(name) + ": the storage key list at byte " +
                         std::to_string(keys_at) + " is a " +
                         std::string(PickleKindName(list.kind)) + ", not a list");
  for (PickleNodeId id : list.items) {
    const PickleNode& k = keys.node(id);
    if (k.kind == PickleKind::kString) {
      out.storage_keys.push_back(k.text);
    } else if (k.kind == PickleKind::kInt) {
      out.storage_keys.push_back(std::to_string(k.integer));
    } else {
      return DataLossError("checkpoint " + std::string(name) + ": the storage key list at byte " +
                           std::to_string(keys_at) + " holds a " +
                           std::string(PickleKindName(k.kind)) + ", not a key");
    }
  }
  out.storages_offset = at;
  return out;
}

}  // namespace flashload
