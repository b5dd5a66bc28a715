#include "format/torch_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "format/zip_dir.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::string_literals;

const std::string kDir = std::string(FL_TEST_DATA_DIR) + "/checkpoints/";

struct Expected {
  std::string dtype;
  std::vector<uint64_t> shape;
};

// expected.txt: `file name dtype shape hex` per tensor.
std::map<std::string, Expected> ExpectedTensors(const std::string& file) {
  std::ifstream in(kDir + "expected.txt");
  std::map<std::string, Expected> out;
  std::string f, name, dtype, shape, hex;
  while (in >> f >> name >> dtype >> shape >> hex) {
    if (f != file) continue;
    Expected e{dtype, {}};
    if (shape != "-") {
      std::stringstream ss(shape);
      std::string d;
      while (std::getline(ss, d, ',')) e.shape.push_back(std::stoull(d));
    }
    out[name] = e;
  }
  return out;
}

Result<TorchCheckpoint> ReadZip(const std::vector<std::byte>& file, const std::string& stem) {
  FL_ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ParseZipDirectory(file, stem));
  FL_ASSIGN_OR_RETURN(const ZipEntry* pkl, FindStoredEntry(entries, stem + "/data.pkl", stem));
  FL_ASSIGN_OR_RETURN(PickleTree tree,
                      ParsePickle(std::span(file).subspan(pkl->data_offset, pkl->size), stem));
  return ReadTorchCheckpoint(tree, stem);
}

Result<TorchCheckpoint> ReadLegacy(const std::vector<std::byte>& file, const std::string& name) {
  FL_ASSIGN_OR_RETURN(LegacyLayout layout, ReadLegacyPickles(file, name));
  return ReadTorchCheckpoint(layout.main, name);
}

void ExpectMatches(const TorchCheckpoint& ckpt, const std::string& file) {
  std::map<std::string, Expected> want = ExpectedTensors(file);
  ASSERT_FALSE(want.empty());
  ASSERT_EQ(ckpt.tensors.size(), want.size());
  for (const TorchTensor& t : ckpt.tensors) {
    ASSERT_TRUE(want.contains(t.name)) << t.name;
    EXPECT_EQ(DtypeName(t.dtype), want[t.name].dtype) << t.name;
    EXPECT_EQ(t.shape, want[t.name].shape) << t.name;
  }
}

TEST(TorchCheckpointTest, ReadsEveryTensorOfARealZipCheckpoint) {
  std::vector<std::byte> file = testing::ReadFile(kDir + "plain_zip.pt");
  FL_ASSERT_OK_AND_ASSIGN(TorchCheckpoint ckpt, ReadZip(file, "plain_zip"));
  ExpectMatches(ckpt, "plain_zip.pt");
  EXPECT_EQ(ckpt.unwrapped_key, "");
  EXPECT_EQ(ckpt.skipped_entries, 0u);
  std::map<std::string, const TorchTensor*> by;
  for (const TorchTensor& t : ckpt.tensors) by[t.name] = &t;
  // The transposed view shares the storage of the weight, with swapped strides.
  EXPECT_EQ(by["layer.weight_t"]->storage_key, by["layer.weight"]->storage_key);
  EXPECT_THAT(by["layer.weight_t"]->strides, ElementsAre(1, 6));
  EXPECT_FALSE(IsContiguous(*by["layer.weight_t"]));
  EXPECT_TRUE(IsContiguous(*by["layer.weight"]));
  EXPECT_EQ(by["tied"]->storage_key, by["layer.weight"]->storage_key);
  EXPECT_EQ(by["strided"]->storage_offset, 2u);
  EXPECT_THAT(by["strided"]->strides, ElementsAre(3));
  EXPECT_EQ(by["fp8"]->storage_element_bytes, 1u);  // an UntypedStorage, through v3
  EXPECT_EQ(by["emb"]->dtype, Dtype::kBF16);        // a Parameter
  FL_ASSERT_OK_AND_ASSIGN(ViewExtent e, TensorExtent(*by["strided"], "f"));
  EXPECT_EQ(e.first, 8u);
  EXPECT_EQ(e.last, 4u * (2 + 5 * 3 + 1));
}

TEST(TorchCheckpointTest, ReadsARealLegacyCheckpoint) {
  std::vector<std::byte> file = testing::ReadFile(kDir + "plain_legacy.pt");
  EXPECT_TRUE(LooksLikeLegacyTorch(file));
  FL_ASSERT_OK_AND_ASSIGN(LegacyLayout layout, ReadLegacyPickles(file, "plain_legacy.pt"));
  EXPECT_FALSE(layout.storage_keys.empty());
  EXPECT_LT(layout.storages_offset, file.size());
  FL_ASSERT_OK_AND_ASSIGN(TorchCheckpoint ckpt, ReadLegacy(file, "plain_legacy.pt"));
  ExpectMatches(ckpt, "plain_legacy.pt");
}

TEST(TorchCheckpointTest, UnwrapsLightningStateDictAndCountsTheRest) {
  for (const char* stem : {"lightning_zip", "lightning_legacy"}) {
    std::vector<std::byte> file = testing::ReadFile(kDir + stem + ".pt");
    Result<TorchCheckpoint> ckpt = std::string(stem).ends_with("zip")
                                       ? ReadZip(file, stem)
                                       : ReadLegacy(file, std::string(stem) + ".pt");
    FL_ASSERT_OK(ckpt.status());
    ExpectMatches(*ckpt, std::string(stem) + ".pt");
    EXPECT_EQ(ckpt->unwrapped_key, "state_dict");
    EXPECT_EQ(ckpt->skipped_entries, 2u);  // epoch, hyper_parameters
    EXPECT_THAT(ckpt->skipped_names, ElementsAre("epoch", "hyper_parameters"));
  }
}

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A pickle of {'w': _rebuild_tensor_v2(pid, offset, size, stride, False, OrderedDict())} with the
// persistent id tuple and argument bytes given.
std::string TensorPickle(const std::string& pid, const std::string& size_stride,
                         const std::string& offset = "K\x00"s) {
  return "\x80\x02}X\x01\x00\x00\x00w"s + "ctorch._utils\n_rebuild_tensor_v2\n(" + pid + "Q" +
         offset + size_stride + "\x89" + "ccollections\nOrderedDict\n)RtRs.";
}
std::string Pid(const std::string& type, const std::string& size) {
  return "(X\x07\x00\x00\x00storage"s + "c" + type + "\n" +
         "X\x01\x00\x00\x00"
         "0X\x03\x00\x00\x00"
         "cpu"s +
         size + "t";
}

Result<TorchCheckpoint> ReadBytes(const std::string& p) {
  FL_ASSIGN_OR_RETURN(PickleTree tree, ParsePickle(Bytes(p), "x.pt"));
  return ReadTorchCheckpoint(tree, "x.pt");
}

TEST(TorchCheckpointTest, HandBuiltTensorAndItsErrors) {
  const std::string shape = "K\x02K\x03\x86K\x03K\x01\x86"s;
  FL_ASSERT_OK_AND_ASSIGN(TorchCheckpoint ok,
                          ReadBytes(TensorPickle(Pid("torch\nHalfStorage", "K\x06"), shape)));
  ASSERT_EQ(ok.tensors.size(), 1u);
  EXPECT_EQ(ok.tensors[0].dtype, Dtype::kF16);
  EXPECT_EQ(ok.tensors[0].view_bytes, 12u);
  EXPECT_THAT(ok.tensors[0].shape, ElementsAre(2, 3));

  EXPECT_THAT(ReadBytes(TensorPickle(Pid("torch\nComplexDoubleStorage", "K\x06"), shape)),
              StatusIs(StatusCode::kUnimplemented, HasSubstr("complex128")));
  EXPECT_THAT(ReadBytes(TensorPickle(Pid("torch\nHalfStorage", "J\xff\xff\xff\xff"), shape)),
              StatusIs(StatusCode::kDataLoss, HasSubstr("storage size")));
  EXPECT_THAT(
      ReadBytes(TensorPickle(Pid("torch\nHalfStorage", "K\x06"), "K\x02\x85K\x03K\x01\x86"s)),
      StatusIs(StatusCode::kDataLoss, HasSubstr("1 sizes but 2 strides")));
  EXPECT_THAT(
      ReadBytes(TensorPickle(Pid("torch\nHalfStorage", "K\x06"), shape, "J\xff\xff\xff\xff")),
      StatusIs(StatusCode::kDataLoss, HasSubstr("storage offset")));
  // A persistent id that is not a storage tuple.
  EXPECT_THAT(ReadBytes(TensorPickle("X\x01\x00\x00\x00z"s, shape)),
              StatusIs(StatusCode::kDataLoss, HasSubstr("persistent id")));
  // The top level is not a dict.
  EXPECT_THAT(ReadBytes("\x80\x02]q\x00."s),
              StatusIs(StatusCode::kDataLoss, HasSubstr("not a dict of tensors")));
}

TEST(TorchCheckpointTest, ExtentOverflowIsRefused) {
  TorchTensor t;
  t.name = "huge";
  t.dtype = Dtype::kF32;
  t.shape = {uint64_t{1} << 40, 1 << 30};
  t.strides = {uint64_t{1} << 40, 1};
  EXPECT_THAT(TensorExtent(t, "f"), StatusIs(StatusCode::kDataLoss, HasSubstr("'huge'")));
  t.shape = {0, 5};
  FL_ASSERT_OK_AND_ASSIGN(ViewExtent e, TensorExtent(t, "f"));
  EXPECT_EQ(e.last, 0u);
}

TEST(TorchCheckpointTest, CyclesAndExponentialSharingAreBounded) {
  // d = {}; d['a'] = d  (a cycle through the memo)
  EXPECT_THAT(ReadBytes("\x80\x02}q\x00X\x01\x00\x00\x00\x61h\x00s."s),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("deeper")));
  // t0 = (None,); t_{i+1} = (t_i, t_i): 2^40 paths from 40 tuples.
  std::string p = "\x80\x02}X\x01\x00\x00\x00kN\x85"s;
  for (int i = 0; i < 40; ++i) p += "\x94\x32\x86";  // MEMOIZE DUP TUPLE2
  p += "s.";
  TorchReadLimits deep;
  deep.max_depth = 100;
  FL_ASSERT_OK_AND_ASSIGN(PickleTree tree, ParsePickle(Bytes(p), "x.pt"));
  EXPECT_THAT(ReadTorchCheckpoint(tree, "x.pt", deep),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("never ends")));
}

}  // namespace
}  // namespace flashload
