// The batch contract of Source::Submit(): one validation per batch, at the outermost Submit(),
// before any backend sees it; wrappers forward validated batches without checking them again.
#include "flashload/source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <vector>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A direct-I/O source of zeros that counts how often its caps are asked and batches reach it.
class CountingSource : public Source {
 public:
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return 1 << 20; }
  SourceCaps caps() const override {
    ++caps_calls;
    return SourceCaps{.direct_io = true, .alignment = 512, .max_in_flight = 4};
  }
  std::string_view backend() const override { return "counting"; }
  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions&) const override {
    std::fill(dst.begin(), dst.end(), std::byte{0});
    return dst.size();
  }

  mutable std::atomic<int> caps_calls{0};
  std::atomic<int> batches{0};

 protected:
  Status DoSubmit(std::span<const ReadRequest> requests) override {
    ++batches;
    return Source::DoSubmit(requests);
  }

 private:
  std::string name_ = "/models/x.safetensors";
};

class PassThrough : public SourceWrapper {
 public:
  using SourceWrapper::SourceWrapper;
};

TEST(SourceSubmitTest, ABadBatchIsRefusedBeforeAnyBackendSeesIt) {
  auto counting = std::make_unique<CountingSource>();
  CountingSource* backend = counting.get();
  PassThrough outer(std::make_unique<PassThrough>(std::move(counting)));
  alignas(512) static std::byte buf[1024];
  const ReadRequest ok{0, 512, buf, 1};
  const ReadRequest unaligned{100, 512, buf, 2};
  const ReadRequest no_buffer{0, 512, nullptr, 3};
  const ReadRequest wraps{UINT64_MAX - 10, 512, buf, 4};
  for (const ReadRequest& bad : {unaligned, no_buffer, wraps}) {
    const std::vector<ReadRequest> batch = {ok, bad};
    EXPECT_THAT(outer.Submit(batch),
                StatusIs(StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("/models/x.safetensors"),
                               HasSubstr("byte offset " + std::to_string(bad.offset)))));
  }
  EXPECT_EQ(backend->batches, 0) << "none of a refused batch is queued";
}

TEST(SourceSubmitTest, AGoodBatchIsValidatedOnceThroughAChainOfWrappers) {
  auto counting = std::make_unique<CountingSource>();
  CountingSource* backend = counting.get();
  PassThrough outer(std::make_unique<PassThrough>(std::move(counting)));
  alignas(512) static std::byte buf[2048];
  const std::vector<ReadRequest> batch = {{0, 1024, buf, 7}, {1024, 1024, buf + 1024, 8}};
  FL_ASSERT_OK(outer.Submit(batch));
  EXPECT_EQ(backend->caps_calls, 1) << "one validation, at the outermost Submit()";
  EXPECT_EQ(backend->batches, 1);
  std::vector<ReadResult> done(4);
  FL_ASSERT_OK_AND_ASSIGN(size_t n, outer.Reap(done, Deadline::Infinite()));
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(done[0].tag, 7u);
  EXPECT_EQ(done[1].bytes, 1024u);
}

}  // namespace
}  // namespace flashload
