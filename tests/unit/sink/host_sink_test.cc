#include "sink/host_sink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "sink/host_arena.h"
#include "support/status_matchers.h"

namespace flashload::sink {
namespace {

plan::LoadPlan TwoFilePlan() {
  plan::LoadPlan plan;
  for (int i = 0; i < 2; ++i) {
    plan::FilePlan f;
    f.path = "f" + std::to_string(i);
    f.component = i == 0 ? "unet" : "";
    f.header.header_length = 100 - 8;  // data at byte 100
    f.header.tensors = {{"a", Dtype::kU8, {10}, 0, 10}, {"b", Dtype::kF16, {2, 3}, 10, 22}};
    f.header.file_size = 122;
    plan::PlanOptions po;
    po.chunk_bytes = 4096;
    EXPECT_TRUE(plan::PlanFile(f, i, po).ok());
    plan.files.push_back(f);
  }
  return plan;
}

TEST(HostArenaTest, AlignedZeroSizeAndLarge) {
  FL_ASSERT_OK_AND_ASSIGN(auto empty, HostArena::Allocate(0));
  EXPECT_EQ(empty->data(), nullptr);
  FL_ASSERT_OK_AND_ASSIGN(auto a, HostArena::Allocate((8 << 20) + 5));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % 4096, 0u);
  std::memset(a->data(), 7, a->size());
  EXPECT_EQ(a->data()[a->size() - 1], std::byte{7});
}

TEST(HostArenaTest, ImpossibleSizeIsResourceExhausted) {
  EXPECT_THAT(HostArena::Allocate(uint64_t{1} << 62), StatusIs(StatusCode::kResourceExhausted));
}

TEST(HostSinkTest, TensorsPointIntoTheArenaAndOutliveTheSink) {
  plan::LoadPlan plan = TwoFilePlan();
  TensorMap tensors;
  {
    HostSink sink;
    FL_ASSERT_OK(sink.Prepare(plan));
    for (const plan::FilePlan& f : plan.files) {
      for (const plan::Chunk& c : f.chunks) {
        FL_ASSERT_OK_AND_ASSIGN(std::span<std::byte> mem, sink.Acquire(c));
        ASSERT_EQ(mem.size(), c.length);
        for (size_t i = 0; i < mem.size(); ++i)
          mem[i] = static_cast<std::byte>((i + c.file) & 0xff);
        FL_ASSERT_OK(sink.Commit(c));
      }
    }
    FL_ASSERT_OK_AND_ASSIGN(tensors, sink.Finish());
  }
  ASSERT_EQ(tensors.size(), 4u);
  const Tensor& a = tensors.at("unet/a");
  EXPECT_EQ(a.bytes()[0], std::byte{100});  // file byte 100 of file 0
  const Tensor& b = tensors.at("b");        // no component: plain name
  EXPECT_EQ(b.byte_size(), 12u);
  EXPECT_EQ(b.bytes()[0], std::byte{111});  // file byte 110 of file 1 (+1)
  EXPECT_EQ(b.shape(), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(a.owner().use_count(), 2);  // both tensors of file 0 share its arena
}

TEST(HostSinkTest, ChunkOutsideTheArenaIsAnInternalError) {
  plan::LoadPlan plan = TwoFilePlan();
  HostSink sink;
  FL_ASSERT_OK(sink.Prepare(plan));
  plan::Chunk bad{0, 0, 8192, 0};
  EXPECT_THAT(sink.Acquire(bad), StatusIs(StatusCode::kInternal));
  sink.Abort();
  EXPECT_TRUE(sink.arenas().empty());
}

TEST(HostSinkTest, QualifiedNames) {
  EXPECT_EQ(QualifiedTensorName("", "w"), "w");
  EXPECT_EQ(QualifiedTensorName("vae", "w"), "vae/w");
}

}  // namespace
}  // namespace flashload::sink
