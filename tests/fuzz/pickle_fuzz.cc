// libFuzzer target for the restricted unpickler and the checkpoint reader: any input either fails
// cleanly (a non-empty message) or yields a tree whose every node reference is in range, whose
// globals are all on the allow-list, and whose tensors (if it reads as a checkpoint) have as many
// strides as sizes and an extent that is either an error or ordered. Inputs that look like a legacy
// file or a zip go through those readers too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "format/pickle.h"
#include "format/torch_checkpoint.h"
#include "format/zip_dir.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckTree(const flashload::PickleTree& tree) {
  Check(tree.root < tree.nodes.size());
  for (const flashload::PickleNode& n : tree.nodes) {
    for (flashload::PickleNodeId id : n.items) Check(id < tree.nodes.size());
    Check(n.state == flashload::PickleNode::kNoState || n.state < tree.nodes.size());
    if (n.kind == flashload::PickleKind::kGlobal) Check(flashload::IsAllowedPickleGlobal(n.text));
    if (n.kind == flashload::PickleKind::kCall) {
      Check(n.items.size() == 2);
      Check(tree.node(n.items[0]).kind == flashload::PickleKind::kGlobal);
    }
  }
  flashload::Result<flashload::TorchCheckpoint> ckpt = flashload::ReadTorchCheckpoint(tree, "fuzz");
  if (!ckpt.ok()) {
    Check(!ckpt.status().message().empty());
    return;
  }
  for (const flashload::TorchTensor& t : ckpt->tensors) {
    Check(t.shape.size() == t.strides.size());
    flashload::Result<flashload::ViewExtent> e = flashload::TensorExtent(t, "fuzz");
    if (e.ok()) Check(e->first <= e->last);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  flashload::PickleLimits limits;
  limits.max_nodes = 1 << 16;
  limits.max_value_bytes = 1 << 20;
  flashload::Result<flashload::PickleTree> tree = flashload::ParsePickle(bytes, "fuzz", limits);
  if (tree.ok()) {
    Check(tree->end <= size);
    CheckTree(*tree);
  } else {
    Check(!tree.status().message().empty());
  }
  if (flashload::LooksLikeLegacyTorch(bytes)) {
    flashload::Result<flashload::LegacyLayout> legacy =
        flashload::ReadLegacyPickles(bytes, "fuzz", limits);
    if (legacy.ok()) {
      Check(legacy->storages_offset <= size);
      CheckTree(legacy->main);
    }
  }
  if (flashload::LooksLikeZip(bytes)) {
    flashload::Result<std::vector<flashload::ZipEntry>> entries =
        flashload::ParseZipDirectory(bytes, "fuzz");
    if (entries.ok()) {
      for (const flashload::ZipEntry& e : *entries) {
        Check(e.data_offset <= size && e.compressed_size <= size - e.data_offset);
      }
    }
  }
  return 0;
}
