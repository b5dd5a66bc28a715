#include "store/convert.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "flashload/header.h"
#include "flashload/model.h"
#include "format/torch_checkpoint.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::store {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

const std::string kDir = std::string(FL_TEST_DATA_DIR) + "/checkpoints/";

struct Expected {
  std::string dtype;
  std::vector<uint64_t> shape;
  std::string hex;
};

std::map<std::string, Expected> ExpectedTensors(const std::string& file) {
  std::ifstream in(kDir + "expected.txt");
  std::map<std::string, Expected> out;
  std::string f, name, dtype, shape, hex;
  while (in >> f >> name >> dtype >> shape >> hex) {
    if (f != file) continue;
    Expected e{dtype, {}, hex == "-" ? "" : hex};
    if (shape != "-") {
      std::stringstream ss(shape);
      std::string d;
      while (std::getline(ss, d, ',')) e.shape.push_back(std::stoull(d));
    }
    out[name] = e;
  }
  return out;
}

std::string Hex(std::span<const std::byte> b) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s += k[static_cast<uint8_t>(x) >> 4];
    s += k[static_cast<uint8_t>(x) & 15];
  }
  return s;
}

struct Written {
  Header header;
  std::vector<std::byte> file;
  std::span<const std::byte> Bytes(const std::string& name) const {
    const TensorInfo* t = header.Find(name);
    return std::span(file).subspan(header.data_offset() + t->data_begin,
                                   t->data_end - t->data_begin);
  }
};

Written ReadBack(const std::string& path) {
  Written w;
  w.file = testing::ReadFile(path);
  Result<Header> h = ParseHeaderFromBytes(w.file, path);
  EXPECT_THAT(h.status(), IsOk());
  if (h.ok()) w.header = *h;
  return w;
}

// Names in `dir` (not recursive).
std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

void ExpectSameTensors(const std::string& out, const std::string& fixture) {
  const Written w = ReadBack(out);
  const std::map<std::string, Expected> want = ExpectedTensors(fixture);
  ASSERT_EQ(w.header.tensors.size(), want.size());
  for (const auto& [name, e] : want) {
    const TensorInfo* t = w.header.Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(DtypeName(t->dtype), e.dtype) << name;
    EXPECT_EQ(t->shape, e.shape) << name;
    EXPECT_EQ(Hex(w.Bytes(name)), e.hex) << name;
  }
}

TEST(ConvertTest, RealCheckpointsConvertByteForByte) {
  for (const char* fixture :
       {"plain_zip.pt", "plain_legacy.pt", "lightning_zip.pt", "lightning_legacy.pt"}) {
    testing::TempDir dir;
    const std::string out = dir.File("out.safetensors");
    FL_ASSERT_OK_AND_ASSIGN(ConvertReport r, Convert(kDir + fixture, out));
    ExpectSameTensors(out, fixture);
    EXPECT_THAT(Listing(dir.path()), ElementsAre("out.safetensors")) << fixture;
    ASSERT_EQ(r.files.size(), 1u);
    EXPECT_EQ(r.files[0].format,
              std::string(fixture).find("zip") != std::string::npos ? "zip" : "legacy");
  }
}

TEST(ConvertTest, ReportsSharedStoragesAndSkippedEntries) {
  testing::TempDir dir;
  FL_ASSERT_OK_AND_ASSIGN(ConvertReport r, Convert(kDir + "plain_zip.pt", dir.File("a")));
  ASSERT_EQ(r.shared_storages, 1u);
  const SharedStorage& s = r.files[0].shared[0];
  EXPECT_THAT(s.tensors, UnorderedElementsAre("layer.weight", "layer.weight_t", "tied"));
  EXPECT_FALSE(s.identical);
  EXPECT_TRUE(s.overlapping);
  FL_ASSERT_OK_AND_ASSIGN(ConvertReport l, Convert(kDir + "lightning_zip.pt", dir.File("b")));
  EXPECT_EQ(l.files[0].unwrapped_key, "state_dict");
  EXPECT_EQ(l.skipped_entries, 2u);
}

TEST(ConvertTest, DtypeConvertsFloatsOnly) {
  testing::TempDir dir;
  const std::string out = dir.File("bf16.safetensors");
  ConvertOptions o;
  o.dtype = Dtype::kBF16;
  FL_ASSERT_OK_AND_ASSIGN(ConvertReport r, Convert(kDir + "plain_zip.pt", out, o));
  const Written w = ReadBack(out);
  EXPECT_EQ(w.header.Find("layer.weight")->dtype, Dtype::kBF16);
  EXPECT_EQ(w.header.Find("f64")->dtype, Dtype::kBF16);
  EXPECT_EQ(w.header.Find("layer.bias")->dtype, Dtype::kBF16);
  EXPECT_EQ(w.header.Find("emb")->dtype, Dtype::kBF16);
  EXPECT_EQ(w.header.Find("i64")->dtype, Dtype::kI64);
  EXPECT_EQ(w.header.Find("fp8")->dtype, Dtype::kF8E4M3);
  EXPECT_EQ(w.header.Find("c64")->dtype, Dtype::kC64);
  // ramp: -3, -2.25, -1.5 ... exactly representable in bf16.
  EXPECT_EQ(Hex(w.Bytes("f64")), "40c010c0c0bf");
  EXPECT_EQ(Hex(w.Bytes("layer.weight_t").first(4)), "40c0c03f");  // -3, 1.5 (transposed)
  EXPECT_EQ(r.files[0].converted_tensors, 8u);
}

TEST(ConvertTest, AlignmentAndMetadata) {
  testing::TempDir dir;
  const std::string out = dir.File("a.safetensors");
  ConvertOptions o;
  o.alignment = 4096;
  FL_ASSERT_OK(Convert(kDir + "plain_legacy.pt", out, o).status());
  const Written w = ReadBack(out);
  EXPECT_EQ(w.header.data_offset() % 4096, 0u);
  ExpectSameTensors(out, "plain_legacy.pt");
}

TEST(ConvertTest, RefusesExistingOutputUnlessForced) {
  testing::TempDir dir;
  const std::string out = dir.File("o.safetensors");
  testing::WriteFile(out, std::string("keep"));
  EXPECT_THAT(Convert(kDir + "plain_zip.pt", out),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("--force")));
  EXPECT_EQ(testing::ReadFile(out).size(), 4u);
  ConvertOptions o;
  o.force = true;
  FL_ASSERT_OK(Convert(kDir + "plain_zip.pt", out, o).status());
  ExpectSameTensors(out, "plain_zip.pt");
  EXPECT_THAT(Convert(kDir + "nothing.pt", dir.File("x")), StatusIs(StatusCode::kNotFound));
}

// `fixture` with the first occurrence of `from` replaced by `to` (same length).
std::string Patched(const std::string& fixture, const std::string& from, const std::string& to) {
  std::vector<std::byte> b = testing::ReadFile(kDir + fixture);
  std::string s(reinterpret_cast<const char*>(b.data()), b.size());
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(from.size(), to.size());
  s.replace(at, from.size(), to);
  return s;
}

void ExpectRefusedAndNothingLeft(const std::string& contents, StatusCode code,
                                 const std::vector<std::string>& substrings) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("in.pt"), contents);
  Result<ConvertReport> r = Convert(dir.File("in.pt"), dir.File("out.safetensors"));
  EXPECT_THAT(r, StatusIs(code));
  for (const std::string& s : substrings)
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(s));
  EXPECT_THAT(Listing(dir.path()), ElementsAre("in.pt"));
}

TEST(ConvertTest, RefusesForbiddenGlobalsInBothFormats) {
  for (const char* fixture : {"plain_zip.pt", "plain_legacy.pt"}) {
    ExpectRefusedAndNothingLeft(
        Patched(fixture, "collections\nOrderedDict\n", "subprocess\ncheck_output\n"),
        StatusCode::kFailedPrecondition,
        {"refused global 'subprocess.check_output' at byte ", "never runs code"});
  }
}

TEST(ConvertTest, PersistentIdNamingAMissingStorage) {
  // The first storage key '0' becomes '9', which the archive does not hold.
  using namespace std::string_literals;
  ExpectRefusedAndNothingLeft(
      Patched("plain_zip.pt", "X\x01\x00\x00\x00"s + "0", "X\x01\x00\x00\x00"s + "z"),
      StatusCode::kNotFound, {"storage 'z'", "plain_zip/data/z"});
}

TEST(ConvertTest, HugeStorageSizeInALegacyFile) {
  std::vector<std::byte> b = testing::ReadFile(kDir + "plain_legacy.pt");
  FL_ASSERT_OK_AND_ASSIGN(LegacyLayout layout, ReadLegacyPickles(b, "plain_legacy.pt"));
  std::string s(reinterpret_cast<const char*>(b.data()), b.size());
  for (int i = 0; i < 7; ++i) s[layout.storages_offset + i] = '\xff';
  ExpectRefusedAndNothingLeft(s, StatusCode::kDataLoss,
                              {"declares", "past the end of the file",
                               "at byte " + std::to_string(layout.storages_offset)});
}

TEST(ConvertTest, TruncatedAndForeignFiles) {
  std::vector<std::byte> b = testing::ReadFile(kDir + "plain_zip.pt");
  std::string s(reinterpret_cast<const char*>(b.data()), b.size());
  for (size_t n : {size_t{0}, size_t{10}, s.size() / 2, s.size() - 1}) {
    ExpectRefusedAndNothingLeft(s.substr(0, n), StatusCode::kDataLoss, {});
  }
  std::vector<std::byte> l = testing::ReadFile(kDir + "plain_legacy.pt");
  std::string ls(reinterpret_cast<const char*>(l.data()), l.size());
  ExpectRefusedAndNothingLeft(ls.substr(0, ls.size() - 3), StatusCode::kDataLoss,
                              {"past the end of the file"});
}

TEST(ConvertTest, NamesOfConvertedFiles) {
  EXPECT_EQ(SafetensorsNameFor("pytorch_model.bin"), "model.safetensors");
  EXPECT_EQ(SafetensorsNameFor("pytorch_model-00001-of-00002.bin"),
            "model-00001-of-00002.safetensors");
  EXPECT_EQ(SafetensorsNameFor("pytorch_model.bin.index.json"), "model.safetensors.index.json");
  EXPECT_EQ(SafetensorsNameFor("diffusion_pytorch_model.bin"),
            "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(SafetensorsNameFor("diffusion_pytorch_model.fp16.bin"),
            "diffusion_pytorch_model.fp16.safetensors");
  EXPECT_EQ(SafetensorsNameFor("model.ckpt"), "model.safetensors");
}

void Copy(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy_file(from, to);
}

TEST(ConvertTest, FolderKeepsItsLayout) {
  testing::TempDir dir;
  const std::string in = dir.File("in");
  Copy(kDir + "plain_zip.pt", in + "/pytorch_model-00001-of-00002.bin");
  Copy(kDir + "lightning_legacy.pt", in + "/pytorch_model-00002-of-00002.bin");
  std::string index = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
  for (const auto& [name, e] : ExpectedTensors("plain_zip.pt"))
    index += "\"" + name + "\": \"pytorch_model-00001-of-00002.bin\", ";
  index += "\"enc.w\": \"pytorch_model-00002-of-00002.bin\", ";
  index += "\"dec.w\": \"pytorch_model-00002-of-00002.bin\"}}";
  testing::WriteFile(in + "/pytorch_model.bin.index.json", index);
  testing::WriteFile(in + "/config.json", std::string("{}"));
  testing::WriteFile(in + "/training_args.bin", std::string("pickle"));
  Copy(kDir + "plain_legacy.pt", in + "/unet/diffusion_pytorch_model.bin");
  testing::WriteFile(in + "/unet/config.json", std::string("{\"a\": 1}"));

  const std::string out = dir.File("out");
  FL_ASSERT_OK_AND_ASSIGN(ConvertReport r, Convert(in, out));
  EXPECT_THAT(Listing(dir.path()), UnorderedElementsAre("in", "out"));
  EXPECT_THAT(
      Listing(out),
      UnorderedElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json", "unet"));
  EXPECT_THAT(Listing(out + "/unet"),
              UnorderedElementsAre("diffusion_pytorch_model.safetensors", "config.json"));
  ExpectSameTensors(out + "/model-00001-of-00002.safetensors", "plain_zip.pt");
  ExpectSameTensors(out + "/model-00002-of-00002.safetensors", "lightning_legacy.pt");
  ExpectSameTensors(out + "/unet/diffusion_pytorch_model.safetensors", "plain_legacy.pt");
  EXPECT_THAT(r.left_out, ElementsAre("training_args.bin"));
  EXPECT_THAT(r.indexes, ElementsAre("model.safetensors.index.json"));
  std::vector<std::byte> json = testing::ReadFile(out + "/model.safetensors.index.json");
  Result<std::map<std::string, std::string>> map = ParseIndexJson(
      std::string_view(reinterpret_cast<const char*>(json.data()), json.size()), "index");
  FL_ASSERT_OK(map.status());
  EXPECT_EQ((*map)["enc.w"], "model-00002-of-00002.safetensors");
  EXPECT_EQ((*map)["layer.weight"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(map->size(), 17u);

  // Again without --force: refused, nothing changed; with it: replaced.
  EXPECT_THAT(Convert(in, out), StatusIs(StatusCode::kFailedPrecondition));
  ConvertOptions o;
  o.force = true;
  FL_ASSERT_OK(Convert(in, out, o).status());
  EXPECT_THAT(Listing(dir.path()), UnorderedElementsAre("in", "out"));
}

TEST(ConvertTest, FolderOutputMayNotContainTheInput) {
  testing::TempDir dir;
  const std::string in = dir.File("in");
  Copy(kDir + "plain_zip.pt", in + "/pytorch_model.bin");
  ConvertOptions o;
  o.force = true;
  EXPECT_THAT(Convert(in, dir.path(), o),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("contain one another")));
  EXPECT_THAT(Convert(in, in + "/out", o),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("contain one another")));
  EXPECT_THAT(Listing(in), ElementsAre("pytorch_model.bin"));
}

TEST(ConvertTest, FolderWithOneBadFileLeavesNothing) {
  testing::TempDir dir;
  const std::string in = dir.File("in");
  Copy(kDir + "plain_zip.pt", in + "/a/pytorch_model.bin");
  fs::create_directories(in + "/b");
  testing::WriteFile(
      in + "/b/pytorch_model.bin",
      Patched("plain_legacy.pt", "collections\nOrderedDict\n", "subprocess\ncheck_output\n"));
  EXPECT_THAT(Convert(in, dir.File("out")),
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("b/pytorch_model.bin"), HasSubstr("subprocess"))));
  EXPECT_THAT(Listing(dir.path()), ElementsAre("in"));
}

TEST(ConvertTest, IndexNamingAMissingTensorIsRefused) {
  testing::TempDir dir;
  const std::string in = dir.File("in");
  Copy(kDir + "lightning_zip.pt", in + "/pytorch_model-00001-of-00001.bin");
  testing::WriteFile(
      in + "/pytorch_model.bin.index.json",
      std::string("{\"weight_map\": {\"enc.w\": \"pytorch_model-00001-of-00001.bin\","
                  " \"dec.w\": \"pytorch_model-00001-of-00001.bin\", \"ghost\": "
                  "\"pytorch_model-00001-of-00001.bin\"}}"));
  EXPECT_THAT(Convert(in, dir.File("out")), StatusIs(StatusCode::kDataLoss, HasSubstr("ghost")));
  EXPECT_THAT(Listing(dir.path()), ElementsAre("in"));
}

}  // namespace
}  // namespace flashload::store
