#include "io/read_text.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "io/memory_source.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<std::byte> Bytes(const std::string& s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

TEST(ReadTextFileTest, ReadsTheWholeSource) {
  const std::string text = R"({"weight_map": {"a": "b.safetensors"}})";
  auto source = NewMemorySource(Bytes(text), {.name = "index.json"});
  FL_ASSERT_OK_AND_ASSIGN(std::string got, ReadTextFile(*source));
  EXPECT_EQ(got, text);
}

TEST(ReadTextFileTest, OneLimitForEveryStoreNamingTheFile) {
  auto source = NewMemorySource(Bytes(std::string(100, 'x')), {.name = "s3://b/big.json"});
  EXPECT_THAT(
      ReadTextFile(*source, /*limit=*/99),
      StatusIs(StatusCode::kResourceExhausted,
               AllOf(HasSubstr("s3://b/big.json"), HasSubstr("100 bytes"), HasSubstr("99 bytes"))));
  EXPECT_EQ(kMaxTextFileBytes, 64ull << 20);
}

TEST(ReadTextFileTest, AFileThatShrinksWhileReadIsDataLossWithTheOffset) {
  const std::string text = "0123456789";
  // Claims 20 bytes, has 10: the read ends early.
  auto read = [&](uint64_t offset, std::span<std::byte> dst) -> Result<size_t> {
    if (offset >= text.size()) return size_t{0};
    const size_t n = std::min(dst.size(), text.size() - offset);
    std::memcpy(dst.data(), text.data() + offset, n);
    return n;
  };
  EXPECT_THAT(ReadTextFile("model_index.json", 20, read),
              StatusIs(StatusCode::kDataLoss,
                       AllOf(HasSubstr("model_index.json"), HasSubstr("byte offset 10"))));
}

TEST(ReadTextFileTest, ReadErrorsPassThrough) {
  auto read = [](uint64_t, std::span<std::byte>) -> Result<size_t> {
    return UnavailableError("index.json: HTTP 503");
  };
  EXPECT_THAT(ReadTextFile("index.json", 5, read), StatusIs(StatusCode::kUnavailable));
}

}  // namespace
}  // namespace flashload
