#include "format/zip_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;

void Put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

struct Entry {
  std::string name;
  std::string data;
  uint16_t method = 0;
  std::string local_extra;  // padding, as torch.save aligns data to 64 bytes
};

// A zip as torch.save writes it (stored entries), optionally with ZIP64 end records and ZIP64
// extra fields in the central directory.
std::string MakeZip(const std::vector<Entry>& entries, bool zip64 = false) {
  std::string out, cd;
  for (const Entry& e : entries) {
    const uint64_t header = out.size();
    Put(out, 0x04034b50, 4);
    Put(out, 20, 2);
    Put(out, 0, 2);
    Put(out, e.method, 2);
    Put(out, 0, 4);
    Put(out, 0, 4);
    Put(out, e.data.size(), 4);
    Put(out, e.data.size(), 4);
    Put(out, e.name.size(), 2);
    Put(out, e.local_extra.size(), 2);
    out += e.name + e.local_extra + e.data;
    Put(cd, 0x02014b50, 4);
    Put(cd, 45, 2);
    Put(cd, 45, 2);
    Put(cd, 0, 2);
    Put(cd, e.method, 2);
    Put(cd, 0, 4);
    Put(cd, 0, 4);
    Put(cd, zip64 ? 0xffffffff : e.data.size(), 4);
    Put(cd, zip64 ? 0xffffffff : e.data.size(), 4);
    Put(cd, e.name.size(), 2);
    Put(cd, zip64 ? 28 : 0, 2);
    Put(cd, 0, 2);
    Put(cd, 0, 2);
    Put(cd, 0, 2);
    Put(cd, 0, 4);
    Put(cd, zip64 ? 0xffffffff : header, 4);
    cd += e.name;
    if (zip64) {
      Put(cd, 1, 2);
      Put(cd, 24, 2);
      Put(cd, e.data.size(), 8);
      Put(cd, e.data.size(), 8);
      Put(cd, header, 8);
    }
  }
  const uint64_t cd_offset = out.size();
  out += cd;
  if (zip64) {
    const uint64_t z64 = out.size();
    Put(out, 0x06064b50, 4);
    Put(out, 44, 8);
    Put(out, 45, 2);
    Put(out, 45, 2);
    Put(out, 0, 4);
    Put(out, 0, 4);
    Put(out, entries.size(), 8);
    Put(out, entries.size(), 8);
    Put(out, cd.size(), 8);
    Put(out, cd_offset, 8);
    Put(out, 0x07064b50, 4);
    Put(out, 0, 4);
    Put(out, z64, 8);
    Put(out, 1, 4);
  }
  Put(out, 0x06054b50, 4);
  Put(out, 0, 2);
  Put(out, 0, 2);
  Put(out, zip64 ? 0xffff : entries.size(), 2);
  Put(out, zip64 ? 0xffff : entries.size(), 2);
  Put(out, zip64 ? 0xffffffff : cd.size(), 4);
  Put(out, zip64 ? 0xffffffff : cd_offset, 4);
  Put(out, 0, 2);
  return out;
}

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(ZipDirTest, ReadsStoredEntriesWithPaddedLocalHeaders) {
  std::string zip = MakeZip({{"archive/data.pkl", "PICKLE", 0, ""},
                             {"archive/data/0", "0123456789abcdef", 0, std::string(37, 'F')}});
  EXPECT_TRUE(LooksLikeZip(Bytes(zip)));
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ZipEntry> entries, ParseZipDirectory(Bytes(zip), "m.pt"));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].name, "archive/data/0");
  EXPECT_EQ(entries[1].size, 16u);
  EXPECT_EQ(zip.substr(entries[1].data_offset, 16), "0123456789abcdef");
  EXPECT_EQ(zip.substr(entries[0].data_offset, 6), "PICKLE");
  FL_ASSERT_OK_AND_ASSIGN(const ZipEntry* e, FindStoredEntry(entries, "archive/data/0", "m.pt"));
  EXPECT_EQ(e, &entries[1]);
}

TEST(ZipDirTest, ReadsZip64Records) {
  std::string zip =
      MakeZip({{"a/data.pkl", "P", 0, ""}, {"a/data/1", "xyz", 0, ""}}, /*zip64=*/true);
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ZipEntry> entries, ParseZipDirectory(Bytes(zip), "m.pt"));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(zip.substr(entries[1].data_offset, entries[1].size), "xyz");
}

TEST(ZipDirTest, ReadsARealTorchZip) {
  std::vector<std::byte> file =
      testing::ReadFile(std::string(FL_TEST_DATA_DIR) + "/checkpoints/plain_zip.pt");
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ZipEntry> entries, ParseZipDirectory(file, "plain_zip.pt"));
  FL_ASSERT_OK_AND_ASSIGN(const ZipEntry* pkl,
                          FindStoredEntry(entries, "plain_zip/data.pkl", "plain_zip.pt"));
  EXPECT_EQ(static_cast<uint8_t>(file[pkl->data_offset]), 0x80);  // PROTO
}

TEST(ZipDirTest, RefusesCompressedEntriesNamingThem) {
  std::string zip = MakeZip({{"a/data/0", "xx", 8, ""}});
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ZipEntry> entries, ParseZipDirectory(Bytes(zip), "m.pt"));
  EXPECT_THAT(FindStoredEntry(entries, "a/data/0", "m.pt"),
              StatusIs(StatusCode::kUnimplemented,
                       HasSubstr("'a/data/0' at byte 0 is compressed (method 8)")));
  EXPECT_THAT(FindStoredEntry(entries, "a/data/9", "m.pt"),
              StatusIs(StatusCode::kNotFound, HasSubstr("'a/data/9'")));
}

TEST(ZipDirTest, TruncationAndCorruptionAreDataLoss) {
  std::string zip =
      MakeZip({{"a/data.pkl", "PICKLE", 0, ""}, {"a/data/0", std::string(100, 'x'), 0, ""}});
  // Every truncation fails cleanly.
  for (size_t n = 0; n < zip.size(); ++n) {
    EXPECT_THAT(ParseZipDirectory(Bytes(zip.substr(0, n)), "m.pt"), StatusIs(StatusCode::kDataLoss))
        << n;
  }
  // An entry size past the end of the file.
  std::string bad = zip;
  const size_t cd = bad.rfind(std::string("\x50\x4b\x01\x02", 4));
  bad[cd + 20] = '\xff';
  bad[cd + 24] = '\xff';
  EXPECT_THAT(ParseZipDirectory(Bytes(bad), "m.pt"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("runs past the end of the file")));
}

}  // namespace
}  // namespace flashload
