#include "io/archive_source.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "io/archive_test_builder.h"
#include "io/memory_source.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using testing::BuildTestTar;
using testing::BuildTestZst;
using ::testing::HasSubstr;
using testing::PositionalText;
using testing::TestMember;

std::vector<TestMember> Members() {
  return {
      {"model_index.json", PositionalText("index", 300)},
      {"unet", "", true},
      {"unet/diffusion_pytorch_model.safetensors", PositionalText("unet", 70'000)},
      {"unet/config.json", PositionalText("unet-config", 1)},
      {"vae/empty.bin", ""},
      {std::string(150, 'l') + "/" + std::string(120, 'n') + ".bin", PositionalText("long", 5000)},
      {"text_encoder/model.safetensors", PositionalText("te", 20'000)},
  };
}

std::unique_ptr<Source> Memory(const std::string& bytes, const std::string& name) {
  MemorySourceOptions o;
  o.name = name;
  return NewMemorySource(
      std::vector<std::byte>(reinterpret_cast<const std::byte*>(bytes.data()),
                             reinterpret_cast<const std::byte*>(bytes.data()) + bytes.size()),
      o);
}

std::string ReadAll(const Source& s, uint64_t offset, uint64_t n) {
  std::string out(n, '\0');
  Result<size_t> got = s.ReadAt(offset, std::as_writable_bytes(std::span(out)));
  EXPECT_THAT(got, IsOk());
  if (!got.ok()) return {};
  out.resize(*got);
  return out;
}

// Reads of every member, at odd offsets and lengths, equal the original bytes; nothing past a
// member's end is returned.
void ExpectMembersRead(const Archive& archive, const std::vector<TestMember>& members) {
  std::mt19937_64 rng(7);
  for (const TestMember& m : members) {
    if (m.directory) continue;
    SCOPED_TRACE(m.path);
    FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, archive.OpenMember(m.path));
    ASSERT_EQ(s->size(), m.data.size());
    EXPECT_EQ(ReadAll(*s, 0, m.data.size() + 4096), m.data);  // short read at the member's end
    EXPECT_EQ(ReadAll(*s, m.data.size(), 10), "");
    for (int i = 0; i < 20 && !m.data.empty(); ++i) {
      const uint64_t off = rng() % m.data.size();
      const uint64_t len = 1 + rng() % 9000;
      EXPECT_EQ(ReadAll(*s, off, len), m.data.substr(off, len)) << off << "+" << len;
    }
  }
}

TEST(ArchiveSourceTest, PlainTarMembersReadBack) {
  const auto members = Members();
  const testing::TestTar tar = BuildTestTar(members);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(tar.bytes, "m.tar"), "m.tar"));
  EXPECT_EQ(a->compression(), Archive::Compression::kNone);
  ExpectMembersRead(*a, members);
  EXPECT_TRUE(a->index().IsFolder("unet"));
  EXPECT_TRUE(a->index().IsFolder("vae"));  // implied by vae/empty.bin
  EXPECT_TRUE(a->index().IsFolder(""));
}

TEST(ArchiveSourceTest, SeekableReadsAcrossFramesAndMembers) {
  const auto members = Members();
  const testing::TestTar tar = BuildTestTar(members);
  const testing::TestZst zst = BuildTestZst(tar, 1000);
  ASSERT_GT(zst.frames.size(), 100u);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(zst.bytes, "m.tar.zst"), "m.tar.zst"));
  EXPECT_EQ(a->compression(), Archive::Compression::kZstdSeekable);
  ASSERT_EQ(a->content().size(), tar.bytes.size());
  ExpectMembersRead(*a, members);
  // The whole content across every frame and member boundary.
  EXPECT_EQ(ReadAll(a->content(), 0, tar.bytes.size()), tar.bytes);
  EXPECT_EQ(ReadAll(a->content(), 999, 1002), tar.bytes.substr(999, 1002));
  const SourceCaps caps = a->content().caps();
  EXPECT_EQ(caps.preferred_chunk % 1000, 0u);
  EXPECT_GE(caps.max_in_flight, 4u);
}

TEST(ArchiveSourceTest, ReadsThatShareAFrameDecompressItOnce) {
  const testing::TestTar tar = BuildTestTar({{"a.bin", PositionalText("a", 100'000)}});
  const testing::TestZst zst = BuildTestZst(tar, 64 << 10);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Source> compressed,
                          Result<std::shared_ptr<const Source>>(Memory(zst.bytes, "a.tar.zst")));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SeekableZstdSource> z, OpenSeekableZstd(compressed));
  EXPECT_EQ(ReadAll(*z, 600, 100), tar.bytes.substr(600, 100));
  EXPECT_EQ(ReadAll(*z, 700, 100), tar.bytes.substr(700, 100));
  EXPECT_EQ(z->frames_decompressed(), 1u);
  // Many threads reading one frame at once: still decompressed once more at most (the cached
  // first frame is not it).
  std::vector<std::thread> readers;
  for (int i = 0; i < 8; ++i) {
    readers.emplace_back([&, i] {
      EXPECT_EQ(ReadAll(*z, 70'000 + i * 10, 10), tar.bytes.substr(70'000 + i * 10, 10));
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(z->frames_decompressed(), 2u);
}

// Counts the reads that reach the archive's raw bytes.
class CountingSource final : public SourceWrapper {
 public:
  CountingSource(std::unique_ptr<Source> target, std::atomic<int>* reads)
      : SourceWrapper(std::move(target)), reads_(reads) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    ++*reads_;
    return SourceWrapper::ReadAt(offset, dst, options);
  }

 private:
  std::atomic<int>* const reads_;
};

TEST(ArchiveSourceTest, HeadersAndSmallMembersAreFetchedUpFrontInParallel) {
  const auto members = Members();
  const testing::TestTar tar = BuildTestTar(members);
  const testing::TestZst zst = BuildTestZst(tar, 64 << 10);
  std::atomic<int> reads{0};
  FL_ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<Archive> a,
      OpenArchiveFromSource(
          std::make_unique<CountingSource>(Memory(zst.bytes, "p.tar.zst"), &reads), "p.tar.zst"));
  // The magic, the footer, the table, and one read per small frame: nothing more for the walk.
  size_t small = 0;
  for (const auto& f : zst.frames) small += f.decompressed_size <= (64u << 10) ? 1 : 0;
  EXPECT_EQ(reads.load(), static_cast<int>(3 + small));
  const int before = reads.load();
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("model_index.json"));
  EXPECT_EQ(ReadAll(*s, 0, 1000), members[0].data);
  EXPECT_EQ(reads.load(), before) << "a small member is served from the pinned frames";
}

TEST(ArchiveSourceTest, BatchesCompleteEveryRequestOnce) {
  const auto members = Members();
  const testing::TestTar tar = BuildTestTar(members);
  const testing::TestZst zst = BuildTestZst(tar, 4096);
  for (const std::string* bytes : {&tar.bytes, &zst.bytes}) {
    FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                            OpenArchiveFromSource(Memory(*bytes, "b.tar"), "b.tar"));
    FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s,
                            a->OpenMember("unet/diffusion_pytorch_model.safetensors"));
    const std::string& want = members[2].data;
    std::string got(want.size(), '\0');
    std::vector<ReadRequest> reqs;
    const uint64_t chunk = 3000;
    for (uint64_t off = 0; off < want.size(); off += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, want.size() - off);
      reqs.push_back({off, n, reinterpret_cast<std::byte*>(got.data()) + off, off});
    }
    FL_ASSERT_OK(s->Submit(reqs));
    size_t done = 0;
    std::vector<ReadResult> out(8);
    while (done < reqs.size()) {
      FL_ASSERT_OK_AND_ASSIGN(size_t n, s->Reap(out, Deadline::Infinite()));
      for (size_t i = 0; i < n; ++i) {
        FL_EXPECT_OK(out[i].status);
        EXPECT_EQ(out[i].bytes, std::min<uint64_t>(chunk, want.size() - out[i].tag));
      }
      done += n;
    }
    EXPECT_EQ(got, want);
  }
}

TEST(ArchiveSourceTest, CancelCompletesEveryRequestOnce) {
  const testing::TestTar tar = BuildTestTar({{"a.bin", PositionalText("a", 400'000)}});
  const testing::TestZst zst = BuildTestZst(tar, 4096);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(zst.bytes, "x.tar.zst"), "x.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("a.bin"));
  std::string got(400'000, '\0');
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < got.size(); off += 1000) {
    reqs.push_back({off, 1000, reinterpret_cast<std::byte*>(got.data()) + off, off});
  }
  FL_ASSERT_OK(s->Submit(reqs));
  s->Cancel();
  std::vector<bool> seen(reqs.size());
  size_t done = 0;
  std::vector<ReadResult> out(16);
  while (done < reqs.size()) {
    FL_ASSERT_OK_AND_ASSIGN(size_t n, s->Reap(out, Deadline::Infinite()));
    for (size_t i = 0; i < n; ++i) {
      const size_t k = out[i].tag / 1000;
      ASSERT_FALSE(seen[k]) << "request " << k << " completed twice";
      seen[k] = true;
      if (out[i].status.ok()) {
        EXPECT_EQ(got.substr(out[i].tag, 1000), tar.bytes.substr(512 + out[i].tag, 1000));
      } else {
        EXPECT_THAT(out[i].status, StatusIs(StatusCode::kCancelled));
      }
    }
    done += n;
  }
}

TEST(ArchiveSourceTest, CorruptedFrameIsDataLossNamingTheFrame) {
  const testing::TestTar tar = BuildTestTar({{"a.bin", PositionalText("a", 50'000)}});
  testing::TestZst zst = BuildTestZst(tar, 8192, /*checksums=*/false);
  const format::SeekFrame& f = zst.frames[3];
  for (uint64_t i = f.compressed_offset + 6; i < f.compressed_offset + f.compressed_size - 2; ++i) {
    zst.bytes[i] ^= 0x5a;
  }
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(zst.bytes, "c.tar.zst"), "c.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("a.bin"));
  std::string buf(50'000, '\0');
  EXPECT_THAT(
      s->ReadAt(0, std::as_writable_bytes(std::span(buf))),
      StatusIs(StatusCode::kDataLoss,
               AllOf(HasSubstr("c.tar.zst"), HasSubstr("zstd frame 3"),
                     HasSubstr(fmt::format("compressed byte offset {}", f.compressed_offset)),
                     HasSubstr(fmt::format("decompressed byte offset {}", f.decompressed_offset)),
                     HasSubstr("member byte offset"))));
  // Frames before it still read.
  EXPECT_EQ(ReadAll(*s, 0, 1000), tar.bytes.substr(512, 1000));
}

TEST(ArchiveSourceTest, ChecksumMismatchIsDataLoss) {
  const testing::TestTar tar = BuildTestTar({{"a.bin", PositionalText("a", 30'000)}});
  testing::TestZst zst = BuildTestZst(tar, 8192);
  // Rewrite the table with a wrong checksum for frame 2.
  const uint64_t table_size =
      zst.bytes.size() - (zst.frames.back().compressed_offset + zst.frames.back().compressed_size);
  zst.bytes.resize(zst.bytes.size() - table_size);
  zst.frames[2].checksum = *zst.frames[2].checksum ^ 1;
  FL_ASSERT_OK_AND_ASSIGN(std::string table, format::BuildSeekTable(zst.frames));
  zst.bytes += table;
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(zst.bytes, "k.tar.zst"), "k.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("a.bin"));
  std::string buf(30'000, '\0');
  EXPECT_THAT(
      s->ReadAt(0, std::as_writable_bytes(std::span(buf))),
      StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("zstd frame 2"), HasSubstr("checksum"))));
  // Without verification the same read passes (the bytes are intact; the table lies).
  ArchiveOptions no_verify;
  no_verify.zstd.verify_checksums = false;
  FL_ASSERT_OK_AND_ASSIGN(
      a, OpenArchiveFromSource(Memory(zst.bytes, "k.tar.zst"), "k.tar.zst", no_verify));
  FL_ASSERT_OK_AND_ASSIGN(s, a->OpenMember("a.bin"));
  EXPECT_EQ(ReadAll(*s, 0, 30'000), tar.bytes.substr(512, 30'000));
}

TEST(ArchiveSourceTest, TruncatedArchivesAreDataLoss) {
  const testing::TestTar tar =
      BuildTestTar({{"a.bin", PositionalText("a", 3000)}, {"b.bin", PositionalText("b", 3000)}});
  // Cut inside b.bin's data.
  const std::string cut = tar.bytes.substr(0, tar.header_offsets[1] + 512 + 1000);
  EXPECT_THAT(OpenArchiveFromSource(Memory(cut, "t.tar"), "t.tar"),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("t.tar"), HasSubstr("'b.bin'"), HasSubstr("truncated"))));
  // Cut inside a header.
  const std::string in_header = tar.bytes.substr(0, tar.header_offsets[1] + 100);
  EXPECT_THAT(OpenArchiveFromSource(Memory(in_header, "t.tar"), "t.tar"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("inside a tar header")));
  // Without end blocks but whole: accepted, as tar does.
  const testing::TestTar no_end = BuildTestTar({{"a.bin", "abc"}}, /*end_blocks=*/false);
  FL_EXPECT_OK(OpenArchiveFromSource(Memory(no_end.bytes, "n.tar"), "n.tar").status());
}

TEST(ArchiveSourceTest, SeekTableThatDoesNotCoverTheTar) {
  const testing::TestTar tar = BuildTestTar({{"a.bin", PositionalText("a", 20'000)}});
  testing::TestZst zst = BuildTestZst(tar, 4096);
  // Keep the first three frames only (the member's data runs past them).
  const auto& f = zst.frames[2];
  std::vector<format::SeekFrame> kept(zst.frames.begin(), zst.frames.begin() + 3);
  std::string bytes = zst.bytes.substr(0, f.compressed_offset + f.compressed_size);
  FL_ASSERT_OK_AND_ASSIGN(std::string table, format::BuildSeekTable(kept));
  EXPECT_THAT(
      OpenArchiveFromSource(Memory(bytes + table, "s.tar.zst"), "s.tar.zst"),
      StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("'a.bin'"), HasSubstr("past the end"))));
  // A table whose frame sizes lie: frame 1 said to hold more than it does.
  std::vector<format::SeekFrame> lying = zst.frames;
  lying[1].decompressed_size += 10;
  lying[1].checksum.reset();
  for (auto& fr : lying) fr.checksum.reset();
  FL_ASSERT_OK_AND_ASSIGN(table, format::BuildSeekTable(lying));
  const uint64_t data_end = zst.frames.back().compressed_offset + zst.frames.back().compressed_size;
  FL_ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<Archive> a,
      OpenArchiveFromSource(Memory(zst.bytes.substr(0, data_end) + table, "l.tar.zst"),
                            "l.tar.zst"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("a.bin"));
  std::string buf(20'000, '\0');
  EXPECT_THAT(s->ReadAt(0, std::as_writable_bytes(std::span(buf))),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("zstd frame 1"), HasSubstr("seek table says"))));
}

TEST(ArchiveSourceTest, MissingMembersFoldersAndLinks) {
  testing::TestTar tar = BuildTestTar({{"a.bin", "abc"}, {"dir/x.bin", "x"}, {"link", ""}});
  // Turn "link" into a symbolic link to a.bin.
  std::string& b = tar.bytes;
  const uint64_t h = tar.header_offsets[2];
  b[h + 156] = '2';
  std::memcpy(b.data() + h + 157, "a.bin", 5);
  std::memset(b.data() + h + 148, ' ', 8);
  uint64_t sum = 0;
  for (uint64_t i = h; i < h + 512; ++i) sum += static_cast<uint8_t>(b[i]);
  snprintf(b.data() + h + 148, 8, "%06o", static_cast<unsigned>(sum));
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(b, "l.tar"), "l.tar"));
  EXPECT_THAT(a->OpenMember("nope.bin"),
              StatusIs(StatusCode::kNotFound, AllOf(HasSubstr("l.tar"), HasSubstr("nope.bin"))));
  EXPECT_THAT(a->OpenMember("dir"), StatusIs(StatusCode::kNotFound, HasSubstr("folder")));
  EXPECT_THAT(a->OpenMember("link"),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("symbolic link"), HasSubstr("'link'"))));
  EXPECT_THAT(a->OpenMember("../a.bin"), StatusIs(StatusCode::kInvalidArgument));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("./a.bin"));
  EXPECT_EQ(ReadAll(*s, 0, 10), "abc");
}

TEST(ArchiveSourceTest, LaterDuplicateWinsAndPathsAreChecked) {
  const testing::TestTar dup = BuildTestTar({{"a.bin", "first"}, {"a.bin", "second!"}});
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a,
                          OpenArchiveFromSource(Memory(dup.bytes, "d.tar"), "d.tar"));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, a->OpenMember("a.bin"));
  EXPECT_EQ(ReadAll(*s, 0, 100), "second!");
  ArchiveOptions few;
  few.limits.max_members = 1;
  EXPECT_THAT(OpenArchiveFromSource(Memory(dup.bytes, "d.tar"), "d.tar", few),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("more than 1 members")));
  few = {};
  few.limits.max_total_size = 6;
  EXPECT_THAT(OpenArchiveFromSource(Memory(dup.bytes, "d.tar"), "d.tar", few),
              StatusIs(StatusCode::kResourceExhausted));
}

TEST(ArchiveSourceTest, NotSeekableZstdAndGzipAreUnimplemented) {
  const std::string payload = BuildTestTar({{"a.bin", "abc"}}).bytes;
  std::string plain(ZSTD_compressBound(payload.size()), '\0');
  plain.resize(ZSTD_compress(plain.data(), plain.size(), payload.data(), payload.size(), 1));
  EXPECT_THAT(OpenArchiveFromSource(Memory(plain, "p.tar.zst"), "p.tar.zst"),
              StatusIs(StatusCode::kUnimplemented,
                       AllOf(HasSubstr("p.tar.zst"), HasSubstr("not in the zstd seekable format"),
                             HasSubstr("flashload unpack"))));
  EXPECT_THAT(
      OpenArchiveFromSource(
          Memory(std::string("\x1f\x8b\x08\0\0\0\0\0", 8) + std::string(600, 'x'), "g.tar.gz"),
          "g.tar.gz"),
      StatusIs(StatusCode::kUnimplemented, HasSubstr("gzip")));
  EXPECT_THAT(OpenArchiveFromSource(Memory(std::string(1024, 'j'), "j.tar"), "j.tar"),
              StatusIs(StatusCode::kDataLoss, HasSubstr("checksum")));
}

TEST(ArchiveUriTest, ParsesAndFormsMemberUris) {
  FL_ASSERT_OK_AND_ASSIGN(ArchiveMemberRef r,
                          ParseArchiveMemberUri("tar:s3://b/m.tar.zst!/unet//config.json"));
  EXPECT_EQ(r.archive, "s3://b/m.tar.zst");
  EXPECT_EQ(r.member, "unet/config.json");
  FL_ASSERT_OK_AND_ASSIGN(r, ParseArchiveMemberUri("TAR:/x/m.tar!/"));
  EXPECT_EQ(r.archive, "/x/m.tar");
  EXPECT_EQ(r.member, "");
  FL_ASSERT_OK_AND_ASSIGN(r, ParseArchiveMemberUri("tar:/x/m.tar!"));
  EXPECT_EQ(r.member, "");
  EXPECT_EQ(ArchiveMemberUri("/x/m.tar", "a/b"), "tar:/x/m.tar!/a/b");
  for (std::string_view bad :
       {"tar:/x/m.tar", "tar:!/a", "s3://b/k", "tar:/x.tar!/../a", "tar:/x.tar!//etc/../../p"}) {
    SCOPED_TRACE(bad);
    EXPECT_THAT(ParseArchiveMemberUri(bad), StatusIs(StatusCode::kInvalidArgument));
  }
  EXPECT_TRUE(LooksLikeArchive("/m/models--a--b--fp16.tar.zst"));
  EXPECT_TRUE(LooksLikeArchive("https://h/m.tar?X-Amz-Signature=abc"));
  EXPECT_TRUE(LooksLikeArchive("s3://b/m.tar"));
  EXPECT_FALSE(LooksLikeArchive("/m/model.safetensors"));
  EXPECT_FALSE(LooksLikeArchive("/m/m.tar.gz"));
  FL_ASSERT_OK_AND_ASSIGN(std::string loc, ArchiveLocation("file:///a/b/../m.tar"));
  EXPECT_EQ(loc, "/a/m.tar");
  FL_ASSERT_OK_AND_ASSIGN(loc, ArchiveLocation("s3://b/m.tar"));
  EXPECT_EQ(loc, "s3://b/m.tar");
}

TEST(ArchiveRegistryTest, MemberUrisOpenThroughTheRegistryAndShareOneArchive) {
  testing::TempDir dir;
  const auto members = Members();
  const testing::TestZst zst = BuildTestZst(BuildTestTar(members), 2048);
  const std::string path = dir.File("m.tar.zst");
  testing::WriteFile(path, zst.bytes);
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s,
                          OpenSource(ArchiveMemberUri(path, "model_index.json")));
  EXPECT_EQ(s->name(), "tar:" + path + "!/model_index.json");
  EXPECT_EQ(ReadAll(*s, 0, 1000), members[0].data);
  OpenOptions o;
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a1, OpenArchive(path, o));
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Archive> a2, OpenArchive(path, o));
  EXPECT_EQ(a1.get(), a2.get());
  EXPECT_THAT(OpenSource(ArchiveMemberUri(path, "missing")), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(OpenSource("tar:" + path + "!/"), StatusIs(StatusCode::kInvalidArgument));
  // A file replaced in place is opened again, not served from the cache.
  a1.reset();
  a2.reset();
  s.reset();
  testing::WriteFile(path, BuildTestTar({{"model_index.json", "{}"}}).bytes);
  FL_ASSERT_OK_AND_ASSIGN(s, OpenSource(ArchiveMemberUri(path, "model_index.json")));
  EXPECT_EQ(ReadAll(*s, 0, 100), "{}");
  ReleaseRecentArchive();
}

TEST(ArchiveModelStoreTest, StatListAndReadText) {
  testing::TempDir dir;
  const auto members = Members();
  const std::string path = dir.File("s.tar");
  testing::WriteFile(path, BuildTestTar(members).bytes);
  const std::string root = ArchiveMemberUri(path, "");
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelStore> store, OpenArchiveModelStore(root, {}));
  using K = ModelStore::EntryKind;
  FL_ASSERT_OK_AND_ASSIGN(K k, store->Stat(root));
  EXPECT_EQ(k, K::kFolder);
  FL_ASSERT_OK_AND_ASSIGN(k, store->Stat(JoinModelPath(root, "unet")));
  EXPECT_EQ(k, K::kFolder);
  FL_ASSERT_OK_AND_ASSIGN(k, store->Stat(JoinModelPath(root, "unet/config.json")));
  EXPECT_EQ(k, K::kFile);
  FL_ASSERT_OK_AND_ASSIGN(k, store->Stat(JoinModelPath(root, "nothing")));
  EXPECT_EQ(k, K::kMissing);
  FL_ASSERT_OK_AND_ASSIGN(std::vector<ModelStore::Entry> top, store->List(root));
  std::vector<std::string> names;
  for (const auto& e : top) names.push_back(e.name + (e.kind == K::kFolder ? "/" : ""));
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("model_index.json", "unet/", "vae/",
                                                     "text_encoder/", std::string(150, 'l') + "/"));
  FL_ASSERT_OK_AND_ASSIGN(std::string text,
                          store->ReadText(JoinModelPath(root, "model_index.json")));
  EXPECT_EQ(text, members[0].data);
  EXPECT_THAT(store->Stat("tar:/other.tar!/a"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_EQ(store->Canonical(JoinModelPath(root, "./unet//config.json")),
            ArchiveMemberUri(path, "unet/config.json"));
  ReleaseRecentArchive();
}

}  // namespace
}  // namespace flashload
