#include "support/test_files.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace flashload::testing {

namespace {
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
}  // namespace

std::byte PositionByte(uint64_t offset, uint64_t seed) {
  const uint64_t word = Mix((offset & ~uint64_t{7}) ^ (seed * 0x9e3779b97f4a7c15ULL));
  return static_cast<std::byte>(word >> ((offset & 7) * 8));
}

void FillPositional(std::span<std::byte> dst, uint64_t offset, uint64_t seed) {
  for (size_t i = 0; i < dst.size(); ++i) dst[i] = PositionByte(offset + i, seed);
}

int64_t FirstPositionMismatch(std::span<const std::byte> bytes, uint64_t base, uint64_t seed) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != PositionByte(base + i, seed)) return static_cast<int64_t>(i);
  }
  return -1;
}

TensorToWrite PositionalTensor(std::string name, Dtype dtype, std::vector<uint64_t> shape,
                               uint64_t seed) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.fill = [seed](std::span<std::byte> dst, uint64_t off) { FillPositional(dst, off, seed); };
  return t;
}

std::vector<std::byte> PositionalBytes(uint64_t size, uint64_t seed) {
  std::vector<std::byte> v(size);
  FillPositional(v, 0, seed);
  return v;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/flashload-test-XXXXXX";
  char* made = mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  WriteFile(path, std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
}

std::vector<std::byte> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  if (!c.empty()) std::memcpy(out.data(), c.data(), c.size());
  return out;
}

}  // namespace flashload::testing
