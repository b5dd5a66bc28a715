// Test data that encodes its own position, and temporary folders.
#ifndef FLASHLOAD_TESTS_SUPPORT_TEST_FILES_H_
#define FLASHLOAD_TESTS_SUPPORT_TEST_FILES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/writer.h"

namespace flashload::testing {

// The byte that belongs at absolute `offset` of a position-encoded object seeded with `seed`: every
// 8-byte word holds (offset_of_word ^ seed) mixed, so a byte read from the wrong place is caught.
std::byte PositionByte(uint64_t offset, uint64_t seed = 0);
void FillPositional(std::span<std::byte> dst, uint64_t offset, uint64_t seed = 0);
// The first offset in [0, bytes.size()) whose byte is not PositionByte(base + i), or -1.
int64_t FirstPositionMismatch(std::span<const std::byte> bytes, uint64_t base, uint64_t seed = 0);
std::vector<std::byte> PositionalBytes(uint64_t size, uint64_t seed = 0);
// A tensor to write whose bytes are FillPositional() with `seed` (filled as it is written).
TensorToWrite PositionalTensor(std::string name, Dtype dtype, std::vector<uint64_t> shape,
                               uint64_t seed);

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes bytes to a file (test helper; aborts the test on failure).
void WriteFile(const std::string& path, std::span<const std::byte> bytes);
void WriteFile(const std::string& path, const std::string& bytes);
std::vector<std::byte> ReadFile(const std::string& path);

}  // namespace flashload::testing

#endif  // FLASHLOAD_TESTS_SUPPORT_TEST_FILES_H_
