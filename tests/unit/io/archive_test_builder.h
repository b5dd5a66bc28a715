// Archives built in tests: plain tar (format::BuildTarHeader + data) and zstd seekable .tar.zst
// (one ZSTD_compress call per frame, a frame starting at every member's first header block and
// every `frame_bytes` of data, XXH64 checksums, format::BuildSeekTable), as the packer lays them
// out. Header-only, shared by the io and load tests.
#ifndef FLASHLOAD_TESTS_UNIT_IO_ARCHIVE_TEST_BUILDER_H_
#define FLASHLOAD_TESTS_UNIT_IO_ARCHIVE_TEST_BUILDER_H_

#include <gtest/gtest.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "format/tar.h"
#include "format/zstd_seekable.h"

namespace flashload::testing {

struct TestMember {
  std::string path;
  std::string data;
  bool directory = false;
};

struct TestTar {
  std::string bytes;
  std::vector<uint64_t> header_offsets;  // of each member's first header block
};

inline TestTar BuildTestTar(const std::vector<TestMember>& members, bool end_blocks = true) {
  TestTar tar;
  for (const TestMember& m : members) {
    format::TarEntry e;
    e.path = m.path;
    e.directory = m.directory;
    e.size = m.data.size();
    e.mode = m.directory ? 0755 : 0644;
    Result<std::string> header = format::BuildTarHeader(e);
    EXPECT_TRUE(header.ok()) << header.status().ToString();
    if (!header.ok()) return {};
    tar.header_offsets.push_back(tar.bytes.size());
    tar.bytes += *header;
    tar.bytes += m.data;
    tar.bytes.append(format::TarPadding(m.data.size()), '\0');
  }
  if (end_blocks) tar.bytes += format::TarEnd();
  return tar;
}

struct TestZst {
  std::string bytes;
  std::vector<format::SeekFrame> frames;
};

// Frames cut at every member header and every `frame_bytes` after it; `checksums` in the table.
inline TestZst BuildTestZst(const TestTar& tar, uint64_t frame_bytes, bool checksums = true,
                            int level = 1) {
  std::vector<uint64_t> cuts = tar.header_offsets;
  std::vector<uint64_t> all;
  cuts.push_back(tar.bytes.size());
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    for (uint64_t at = cuts[i]; at < cuts[i + 1]; at += frame_bytes) all.push_back(at);
  }
  if (all.empty() || all.front() != 0) all.insert(all.begin(), 0);
  all.push_back(tar.bytes.size());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  TestZst out;
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    const std::string_view piece = std::string_view(tar.bytes).substr(all[i], all[i + 1] - all[i]);
    std::string frame(ZSTD_compressBound(piece.size()), '\0');
    const size_t n = ZSTD_compress(frame.data(), frame.size(), piece.data(), piece.size(), level);
    EXPECT_FALSE(ZSTD_isError(n));
    frame.resize(n);
    format::SeekFrame f;
    f.compressed_offset = out.bytes.size();
    f.compressed_size = static_cast<uint32_t>(n);
    f.decompressed_offset = all[i];
    f.decompressed_size = static_cast<uint32_t>(piece.size());
    if (checksums) f.checksum = static_cast<uint32_t>(XXH64(piece.data(), piece.size(), 0));
    out.frames.push_back(f);
    out.bytes += frame;
  }
  Result<std::string> table = format::BuildSeekTable(out.frames);
  EXPECT_TRUE(table.ok());
  out.bytes += *table;
  return out;
}

// Data that says where it is: "<tag>@<offset>;" repeated, cut to `size` bytes.
inline std::string PositionalText(const std::string& tag, size_t size) {
  std::string s;
  while (s.size() < size) s += tag + "@" + std::to_string(s.size()) + ";";
  s.resize(size);
  return s;
}

}  // namespace flashload::testing

#endif  // FLASHLOAD_TESTS_UNIT_IO_ARCHIVE_TEST_BUILDER_H_
