// PlaceShards: shards assembled in host memory, converted and placed on a (stand-in) device.
#include "dist/placement.h"

#include <gtest/gtest.h>

#include <cstring>

#include "sink/cpu_copy_engine.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::dist {
namespace {

struct Fixture {
  std::shared_ptr<std::vector<std::byte>> memory;
  std::vector<HostShard> shards;
};

Fixture Shards() {
  Fixture f;
  f.memory = std::make_shared<std::vector<std::byte>>(testing::PositionalBytes(4096, 3));
  f.shards = {{"a", Dtype::kF32, {4, 8}, f.memory->data(), 128},
              {"b", Dtype::kBF16, {10}, f.memory->data() + 256, 20},
              {"empty", Dtype::kF32, {0, 3}, f.memory->data() + 512, 0},
              {"c", Dtype::kU8, {7}, f.memory->data() + 600, 7}};
  // Finite floats in "a" (positional bytes may spell NaNs, which convert to a canonical NaN).
  for (int i = 0; i < 32; ++i) {
    const float v = 0.25f * static_cast<float>(i) - 3.0f;
    std::memcpy(f.memory->data() + 4 * i, &v, 4);
  }
  return f;
}

std::vector<std::byte> Bytes(const Tensor& t) {
  const auto* p = static_cast<const std::byte*>(t.data());
  return std::vector<std::byte>(p, p + t.byte_size());
}

TEST(PlaceShardsTest, HostWithoutConversionKeepsViews) {
  Fixture f = Shards();
  FL_ASSERT_OK_AND_ASSIGN(TensorMap m, PlaceShards(f.shards, f.memory, ConvertSpec{}, nullptr));
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m.at("a").data(), f.memory->data());
  EXPECT_EQ(m.at("b").shape(), (std::vector<uint64_t>{10}));
}

TEST(PlaceShardsTest, ConvertsOnTheHostAndCopiesToTheDevice) {
  for (bool device_is_host : {true, false}) {
    SCOPED_TRACE(device_is_host);
    Fixture f = Shards();
    sink::CpuCopyEngineOptions eo;
    eo.device_is_host = device_is_host;
    auto engine = std::make_shared<sink::CpuCopyEngine>(eo);
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("F32=F16"));
    FL_ASSERT_OK_AND_ASSIGN(TensorMap m, PlaceShards(f.shards, f.memory, spec, engine));
    f.memory.reset();  // the placed tensors own their memory
    const Tensor& a = m.at("a");
    EXPECT_EQ(a.dtype(), Dtype::kF16);
    EXPECT_EQ(a.byte_size(), 64u);
    std::vector<std::byte> want(64);
    Fixture again = Shards();
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, again.memory->data(), want.data(), 32));
    EXPECT_EQ(Bytes(a), want);
    EXPECT_EQ(Bytes(m.at("b")),
              std::vector<std::byte>(again.memory->data() + 256, again.memory->data() + 276));
    EXPECT_EQ(m.at("empty").byte_size(), 0u);
    EXPECT_EQ(Bytes(m.at("c")),
              std::vector<std::byte>(again.memory->data() + 600, again.memory->data() + 607));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(m.at("b").data()) % 256, 0u);
  }
}

TEST(PlaceShardsTest, AFailedCopyIsAnError) {
  Fixture f = Shards();
  sink::CpuCopyEngineOptions eo;
  eo.device_is_host = false;
  eo.fail_copy_at = 1;
  auto engine = std::make_shared<sink::CpuCopyEngine>(eo);
  Result<TensorMap> m = PlaceShards(f.shards, f.memory, ConvertSpec{}, engine);
  EXPECT_FALSE(m.ok());
}

}  // namespace
}  // namespace flashload::dist
