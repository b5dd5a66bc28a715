#include "format/tar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::format {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct ReadMember {
  TarMember member;
  std::string data;
};

std::span<const uint8_t> Bytes(std::string_view s, uint64_t offset, uint64_t n) {
  return std::span(reinterpret_cast<const uint8_t*>(s.data()) + offset, n);
}

// Walks a whole archive held in memory with ParseTarHeader and ApplyTarExtension, as a reader
// over any source does.
Result<std::vector<ReadMember>> ReadArchive(std::string_view archive,
                                            const TarLimits& limits = {}) {
  std::vector<ReadMember> out;
  TarPending pending;
  uint64_t offset = 0;
  while (true) {
    if (offset + kTarBlock > archive.size()) {
      return DataLossError("test archive: truncated at " + std::to_string(offset));
    }
    FL_ASSIGN_OR_RETURN(TarStep step, ParseTarHeader(Bytes(archive, offset, kTarBlock), offset,
                                                     "test.tar", pending, limits));
    if (step.kind == TarStep::Kind::kEnd) break;
    if (step.kind == TarStep::Kind::kExtension) {
      if (offset + kTarBlock + step.payload_size > archive.size()) {
        return DataLossError("test archive: truncated extension");
      }
      FL_RETURN_IF_ERROR(ApplyTarExtension(step,
                                           archive.substr(offset + kTarBlock, step.payload_size),
                                           offset, "test.tar", pending));
    } else {
      if (step.member.data_offset + step.member.size > archive.size()) {
        return DataLossError("test archive: truncated data");
      }
      out.push_back(
          {step.member, std::string(archive.substr(step.member.data_offset, step.member.size))});
    }
    offset = step.next_offset;
  }
  return out;
}

// Data that says where it came from: "<path>:<i>" repeated to `size` bytes.
std::string DataFor(const std::string& path, size_t size) {
  std::string s;
  for (size_t i = 0; s.size() < size; ++i) s += path + ":" + std::to_string(i) + ";";
  s.resize(size);
  return s;
}

std::string Archive(const std::vector<std::pair<TarEntry, std::string>>& entries) {
  std::string out;
  for (const auto& [entry, data] : entries) {
    Result<std::string> h = BuildTarHeader(entry);
    EXPECT_THAT(h, IsOk());
    if (!h.ok()) return {};
    out += *h;
    out += data;
    out.append(TarPadding(data.size()), '\0');
  }
  return out + TarEnd();
}

TarStep ExtensionStep(char type, uint64_t payload_size) {
  TarStep step;
  step.kind = TarStep::Kind::kExtension;
  step.extension_type = type;
  step.payload_size = payload_size;
  return step;
}

std::string FileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int RunQuiet(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

TEST(TarTest, RoundTripsUstarMembers) {
  const std::string long_dir(120, 'd');
  const std::vector<std::pair<TarEntry, std::string>> entries = {
      {{.path = "model_index.json", .size = 17}, DataFor("model_index.json", 17)},
      {{.path = "unet", .directory = true, .mode = 0755}, ""},
      {{.path = "unet/empty.bin", .size = 0}, ""},
      {{.path = "unet/diffusion_pytorch_model.safetensors", .size = 1500}, DataFor("unet", 1500)},
      // 120 + 1 + 20 bytes: fits as prefix + name, no pax header.
      {{.path = long_dir + "/" + std::string(20, 'n'), .size = 512}, DataFor("long", 512)},
  };
  const std::string archive = Archive(entries);
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ReadMember> members, ReadArchive(archive));
  ASSERT_EQ(members.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(entries[i].first.path);
    const std::string want =
        entries[i].first.directory ? entries[i].first.path + "/" : entries[i].first.path;
    EXPECT_EQ(members[i].member.path, want);
    EXPECT_EQ(members[i].member.size, entries[i].first.size);
    EXPECT_EQ(members[i].data, entries[i].second);
    EXPECT_EQ(members[i].member.kind,
              entries[i].first.directory ? TarMemberKind::kDirectory : TarMemberKind::kFile);
    EXPECT_EQ(members[i].member.data_offset % kTarBlock, 0u);
    EXPECT_EQ(members[i].member.data_offset, members[i].member.header_offset + kTarBlock);
  }
  EXPECT_EQ(members[1].member.mode, 0755u);
  EXPECT_EQ(members[0].member.mode, 0644u);
}

TEST(TarTest, LongPathsGoThroughAPaxHeader) {
  const std::string path = std::string(200, 'a') + "/" + std::string(150, 'b') + ".safetensors";
  const std::string data = DataFor(path, 700);
  const std::string archive = Archive({{{.path = path, .size = 700}, data}});
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ReadMember> members, ReadArchive(archive));
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0].member.path, path);
  EXPECT_EQ(members[0].data, data);
  // The member starts at its pax header; the data follows the pax block, payload and ustar block.
  EXPECT_EQ(members[0].member.header_offset, 0u);
  EXPECT_EQ(members[0].member.data_offset, 3 * kTarBlock);
}

TEST(TarTest, HugeSizesGoThroughPaxAndBase256) {
  const uint64_t size = uint64_t{10} << 30;  // beyond 11 octal digits (8 GiB)
  FL_ASSERT_OK_AND_ASSIGN(std::string header, BuildTarHeader({.path = "big.bin", .size = size}));
  TarPending pending;
  FL_ASSERT_OK_AND_ASSIGN(TarStep ext,
                          ParseTarHeader(Bytes(header, 0, kTarBlock), 0, "big.tar", pending));
  ASSERT_EQ(ext.kind, TarStep::Kind::kExtension);
  EXPECT_EQ(ext.extension_type, 'x');
  FL_ASSERT_OK(ApplyTarExtension(ext, std::string_view(header).substr(kTarBlock, ext.payload_size),
                                 0, "big.tar", pending));
  FL_ASSERT_OK_AND_ASSIGN(TarStep m, ParseTarHeader(Bytes(header, ext.next_offset, kTarBlock),
                                                    ext.next_offset, "big.tar", pending));
  ASSERT_EQ(m.kind, TarStep::Kind::kMember);
  EXPECT_EQ(m.member.size, size);
  EXPECT_EQ(m.member.path, "big.bin");
  EXPECT_TRUE(pending.empty());
  // Without the pax header, the base-256 size field alone gives the same size.
  TarPending none;
  FL_ASSERT_OK_AND_ASSIGN(TarStep plain, ParseTarHeader(Bytes(header, ext.next_offset, kTarBlock),
                                                        ext.next_offset, "big.tar", none));
  EXPECT_EQ(plain.member.size, size);
  EXPECT_EQ(plain.next_offset, ext.next_offset + kTarBlock + size);
}

// Rewrites the checksum of a header block after a test changed it.
void Reseal(std::string& block) {
  std::memset(block.data() + 148, ' ', 8);
  uint64_t sum = 0;
  for (char c : block) sum += static_cast<uint8_t>(c);
  snprintf(block.data() + 148, 8, "%06o", static_cast<unsigned>(sum));
  block[155] = ' ';
}

TEST(TarTest, ReadsBase256SizeField) {
  FL_ASSERT_OK_AND_ASSIGN(std::string block, BuildTarHeader({.path = "x.bin", .size = 3}));
  std::memset(block.data() + 124, 0, 12);
  block[124] = static_cast<char>(0x80);
  block[135] = 3;
  Reseal(block);
  TarPending pending;
  FL_ASSERT_OK_AND_ASSIGN(TarStep step,
                          ParseTarHeader(Bytes(block, 0, kTarBlock), 0, "b.tar", pending));
  EXPECT_EQ(step.member.size, 3u);
  block[124] = static_cast<char>(0xff);  // negative
  Reseal(block);
  EXPECT_THAT(ParseTarHeader(Bytes(block, 0, kTarBlock), 0, "b.tar", pending),
              StatusIs(StatusCode::kDataLoss, HasSubstr("negative")));
}

TEST(TarTest, BadChecksumIsDataLossNamingTheOffset) {
  std::string archive = Archive({{{.path = "a", .size = 1}, "A"}, {{.path = "b", .size = 1}, "B"}});
  archive[1024 + 1] = 'X';  // the second header's name
  EXPECT_THAT(
      ReadArchive(archive),
      StatusIs(StatusCode::kDataLoss,
               AllOf(HasSubstr("test.tar"), HasSubstr("byte offset 1024"), HasSubstr("checksum"))));
}

TEST(TarTest, NonOctalSizeIsDataLoss) {
  FL_ASSERT_OK_AND_ASSIGN(std::string block, BuildTarHeader({.path = "x.bin", .size = 3}));
  block[126] = '9';
  Reseal(block);
  TarPending pending;
  EXPECT_THAT(ParseTarHeader(Bytes(block, 0, kTarBlock), 4096, "b.tar", pending),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("size"), HasSubstr("octal"), HasSubstr("4096"))));
}

TEST(TarTest, EnforcesLimits) {
  const std::string archive = Archive({{{.path = "a.bin", .size = 2000}, DataFor("a", 2000)}});
  TarLimits small;
  small.max_member_size = 1000;
  EXPECT_THAT(ReadArchive(archive, small),
              StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("a.bin"), HasSubstr("limit"))));
  const std::string long_path = std::string(300, 'p');
  const std::string pax = Archive({{{.path = long_path, .size = 1}, "x"}});
  TarLimits tiny_ext;
  tiny_ext.max_extension_size = 16;
  EXPECT_THAT(ReadArchive(pax, tiny_ext),
              StatusIs(StatusCode::kDataLoss, HasSubstr("beyond the limit")));
}

TEST(TarTest, MalformedPaxRecordsAreDataLoss) {
  const TarStep step = ExtensionStep('x', 0);
  for (std::string_view payload :
       {"abc path=x\n", "99 path=x\n", "5 =x\n", "12 pathxxxx\n", "11 path=xy!"}) {
    SCOPED_TRACE(payload);
    TarStep s = step;
    s.payload_size = payload.size();
    TarPending pending;
    EXPECT_THAT(ApplyTarExtension(s, payload, 512, "p.tar", pending),
                StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("p.tar"), HasSubstr("512"))));
  }
  TarStep ok = step;
  const std::string_view good = "11 path=xy\n";
  ok.payload_size = good.size();
  TarPending pending;
  FL_EXPECT_OK(ApplyTarExtension(ok, good, 0, "p.tar", pending));
  // A non-numeric pax size is caught when the member's header applies it.
  FL_ASSERT_OK_AND_ASSIGN(std::string block, BuildTarHeader({.path = "m", .size = 0}));
  TarPending bad_size;
  bad_size.pax_records = "12 size=1x2\n";
  EXPECT_THAT(ParseTarHeader(Bytes(block, 0, kTarBlock), 0, "p.tar", bad_size),
              StatusIs(StatusCode::kDataLoss, HasSubstr("size")));
}

TEST(TarTest, ZeroBlockEndsTheArchiveAndGlobalPaxIsIgnored) {
  TarPending pending;
  const std::string zeros(kTarBlock, '\0');
  FL_ASSERT_OK_AND_ASSIGN(TarStep end, ParseTarHeader(Bytes(zeros, 0, kTarBlock), 0, "z", pending));
  EXPECT_EQ(end.kind, TarStep::Kind::kEnd);
  const TarStep g = ExtensionStep('g', 3);
  FL_EXPECT_OK(ApplyTarExtension(g, "any", 0, "z", pending));
  EXPECT_TRUE(pending.empty());
}

TEST(TarTest, RejectsWrongBlockSize) {
  TarPending pending;
  const std::string short_block(100, '\0');
  EXPECT_THAT(ParseTarHeader(Bytes(short_block, 0, 100), 0, "s", pending),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(CheckMemberPathTest, NormalizesAndRefuses) {
  FL_ASSERT_OK_AND_ASSIGN(std::string p, CheckMemberPath("./a//b/", "x.tar"));
  EXPECT_EQ(p, "a/b");
  FL_ASSERT_OK_AND_ASSIGN(p, CheckMemberPath("unet/./config.json", "x.tar"));
  EXPECT_EQ(p, "unet/config.json");
  for (std::string_view bad :
       {"", "/etc/passwd", "a/../../b", "..", "a\\b", "C:/x", "c:x", ".", "./", "//"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(CheckMemberPath(bad, "x.tar"),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("x.tar")));
  }
  EXPECT_THAT(CheckMemberPath(std::string_view("a\0b", 3), "x.tar"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("NUL")));
  FL_ASSERT_OK_AND_ASSIGN(p, CheckMemberPath("a..b/..c", "x.tar"));
  EXPECT_EQ(p, "a..b/..c");
}

TEST(BuildTarHeaderTest, RefusesBadEntries) {
  EXPECT_THAT(BuildTarHeader({.path = ""}), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(BuildTarHeader({.path = "../x"}), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(BuildTarHeader({.path = "d", .directory = true, .size = 3}),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_EQ(TarPadding(0), 0u);
  EXPECT_EQ(TarPadding(1), 511u);
  EXPECT_EQ(TarPadding(512), 0u);
  EXPECT_EQ(TarEnd(), std::string(1024, '\0'));
}

// ---- Against GNU tar and bsdtar -----------------------------------------------------------------

// A folder of files with long names, a deep path, empty files, a folder and a symlink.
struct Tree {
  std::map<std::string, std::string> files;  // relative path -> data
};

// `ustar`: names that fit the ustar fields (a name of 100 bytes at most, split at a '/' with a
// prefix of 155 at most), still longer than 100 bytes in all.
Tree MakeTree(const std::string& root, bool ustar) {
  Tree t;
  const std::string long_name = std::string(ustar ? 88 : 130, 'L') + ".safetensors";
  std::string deep = "deep";
  for (int i = 0; i < (ustar ? 6 : 12); ++i)
    deep += "/level" + std::to_string(i) + std::string(10, 'x');
  t.files["model_index.json"] = DataFor("model_index.json", 321);
  t.files["unet/" + long_name] = DataFor(long_name, 5000);
  t.files[deep + "/weights.bin"] = DataFor("deep", 1024);
  t.files["empty.txt"] = "";
  t.files["text_encoder/config.json"] = DataFor("te", 77);
  for (const auto& [path, data] : t.files) {
    fs::create_directories(fs::path(root + "/" + path).parent_path());
    testing::WriteFile(root + "/" + path, data);
  }
  fs::create_directories(root + "/empty_dir");
  fs::create_symlink("model_index.json", root + "/link.json");
  return t;
}

void ExpectArchiveHoldsTree(const std::string& archive_path, const Tree& tree) {
  const std::string archive = FileText(archive_path);
  ASSERT_FALSE(archive.empty());
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ReadMember> members, ReadArchive(archive));
  std::map<std::string, std::string> files;
  bool saw_dir = false, saw_link = false;
  for (const ReadMember& m : members) {
    if (m.member.path == "./" || m.member.path == ".") continue;  // the root folder
    Result<std::string> path = CheckMemberPath(m.member.path, archive_path);
    ASSERT_THAT(path, IsOk());
    if (m.member.kind == TarMemberKind::kFile) files[*path] = m.data;
    if (m.member.kind == TarMemberKind::kDirectory && *path == "empty_dir") saw_dir = true;
    if (m.member.kind == TarMemberKind::kSymlink && *path == "link.json") {
      saw_link = true;
      EXPECT_EQ(m.member.link_path, "model_index.json");
      EXPECT_EQ(m.member.size, 0u);
    }
  }
  EXPECT_EQ(files, tree.files);
  EXPECT_TRUE(saw_dir);
  EXPECT_TRUE(saw_link);
}

class TarInteropTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TarInteropTest, ReadsWhatTheToolWrote) {
  testing::TempDir dir;
  const std::string root = dir.File("tree");
  const Tree tree = MakeTree(root, GetParam().find("ustar") != std::string::npos);
  const std::string out = dir.File("out.tar");
  ASSERT_EQ(RunQuiet(GetParam() + " -cf " + out + " -C " + root + " ."), 0) << GetParam();
  ExpectArchiveHoldsTree(out, tree);
}

INSTANTIATE_TEST_SUITE_P(Tools, TarInteropTest,
                         ::testing::Values("tar --format=gnu", "tar --format=pax",
                                           "tar --format=ustar", "bsdtar", "bsdtar --format=pax",
                                           "bsdtar --format=gnutar"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

TEST(TarToolsTest, ListAndExtractWhatWeWrote) {
  testing::TempDir dir;
  const std::string very_long = std::string(180, 'v') + "/" + std::string(140, 'w') + ".bin";
  const std::vector<std::pair<TarEntry, std::string>> entries = {
      {{.path = "vae", .directory = true, .mode = 0755}, ""},
      {{.path = "vae/config.json", .size = 100}, DataFor("vae/config.json", 100)},
      {{.path = "empty", .size = 0}, ""},
      {{.path = std::string(120, 'p') + "/" + std::string(90, 'q'), .size = 2048},
       DataFor("split", 2048)},
      {{.path = very_long, .size = 1234}, DataFor(very_long, 1234)},
  };
  const std::string archive_path = dir.File("ours.tar");
  testing::WriteFile(archive_path, Archive(entries));
  for (const std::string tool : {"tar", "bsdtar"}) {
    SCOPED_TRACE(tool);
    const std::string listing = dir.File(tool + ".list");
    ASSERT_EQ(std::system((tool + " -tf " + archive_path + " > " + listing).c_str()), 0);
    std::vector<std::string> names;
    std::istringstream in(FileText(listing));
    for (std::string line; std::getline(in, line);) names.push_back(line);
    ASSERT_EQ(names.size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      EXPECT_EQ(names[i],
                entries[i].first.directory ? entries[i].first.path + "/" : entries[i].first.path);
    }
    ASSERT_EQ(RunQuiet(tool + " -tvf " + archive_path), 0);
    const std::string x = dir.File(tool + "_x");
    fs::create_directories(x);
    ASSERT_EQ(RunQuiet(tool + " -xf " + archive_path + " -C " + x), 0);
    for (const auto& [entry, data] : entries) {
      if (entry.directory) {
        EXPECT_TRUE(fs::is_directory(x + "/" + entry.path)) << entry.path;
      } else {
        EXPECT_EQ(FileText(x + "/" + entry.path), data) << entry.path;
      }
    }
  }
}

}  // namespace
}  // namespace flashload::format

namespace flashload::format {
namespace {

TEST(TarMemberKindTextTest, NamesEveryKindAndTellsDevicesApart) {
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kFile, '0'), "a regular file");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kDirectory, '5'), "a folder");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kSymlink, '2'), "a symbolic link");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kHardlink, '1'), "a hard link");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kOther, '3'), "a character device");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kOther, '4'), "a block device");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kOther, '6'), "a FIFO");
  EXPECT_EQ(TarMemberKindText(TarMemberKind::kOther, 'Z'), "a member of an unknown type");
}

}  // namespace
}  // namespace flashload::format
