// ParseLoadFlags: every flag's parsing, its refusals (kInvalidArgument naming the flag, as the
// command line or a Python keyword spells it, and the value) and the defaults.
#include "load/load_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "flashload/defaults.h"
#include "flashload/header.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

LoadOptions Parse(const std::function<void(LoadFlags&)>& set) {
  LoadFlags f;
  set(f);
  Result<LoadOptions> o = ParseLoadFlags(f);
  EXPECT_THAT(o, IsOk());
  return o.ok() ? *std::move(o) : LoadOptions{};
}

Status Refusal(const std::function<void(LoadFlags&)>& set,
               FlagStyle style = FlagStyle::kCommandLine) {
  LoadFlags f;
  set(f);
  return ParseLoadFlags(f, style).status();
}

TEST(LoadFlagsTest, DefaultFlagsAreTheDefaultLoad) {
  FL_ASSERT_OK_AND_ASSIGN(const LoadOptions o, ParseLoadFlags(LoadFlags{}));
  const LoadOptions want;
  EXPECT_EQ(o.strategy, want.strategy);
  EXPECT_EQ(o.threads, want.threads);
  EXPECT_EQ(o.queue_depth, want.queue_depth);
  EXPECT_EQ(o.chunk_bytes, want.chunk_bytes);
  EXPECT_EQ(o.memory_budget, want.memory_budget);
  EXPECT_EQ(o.parallel_files, want.parallel_files);
  EXPECT_EQ(o.zero_copy_hot, want.zero_copy_hot);
  EXPECT_EQ(o.header_limit, want.header_limit);
  EXPECT_EQ(o.variant, want.variant);
  EXPECT_EQ(o.device.type, want.device.type);
  EXPECT_EQ(o.device.index, want.device.index);
  EXPECT_EQ(o.dtype, want.dtype);
  EXPECT_EQ(o.gpu_direct, want.gpu_direct);
  const RemoteOpenOptions& r = o.remote;
  const RemoteOpenOptions& wr = want.remote;
  EXPECT_EQ(r.connections, wr.connections);
  EXPECT_EQ(r.chunk_bytes, wr.chunk_bytes);
  EXPECT_EQ(r.ca_bundle, wr.ca_bundle);
  EXPECT_EQ(r.verify_tls, wr.verify_tls);
  EXPECT_EQ(r.headers, wr.headers);
  EXPECT_EQ(r.header_on_redirect, wr.header_on_redirect);
  EXPECT_EQ(r.endpoint, wr.endpoint);
  EXPECT_EQ(r.region, wr.region);
  EXPECT_EQ(r.path_style, wr.path_style);
  EXPECT_EQ(r.anonymous, wr.anonymous);
  EXPECT_EQ(r.max_attempts, wr.max_attempts);
  EXPECT_EQ(r.retry_base_ms, wr.retry_base_ms);
  EXPECT_EQ(r.retry_cap_ms, wr.retry_cap_ms);
  EXPECT_FALSE(o.progress);
  EXPECT_FALSE(o.opener);
  EXPECT_EQ(o.cancel, nullptr);
}

TEST(LoadFlagsTest, DefaultsComeFromDefaultsH) {
  const LoadFlags f;
  EXPECT_EQ(f.budget_mib << 20, defaults::kMemoryBudget);
  EXPECT_EQ(f.parallel_files, defaults::kParallelFiles);
  EXPECT_EQ(f.attempts, defaults::kRemoteMaxAttempts);
  EXPECT_EQ(f.retry_base_ms, defaults::kRetryBaseMs);
  EXPECT_EQ(f.retry_cap_ms, defaults::kRetryCapMs);
  EXPECT_EQ(f.header_limit, kDefaultHeaderLimit);
  EXPECT_EQ(LoadOptions{}.memory_budget, defaults::kMemoryBudget);
  EXPECT_EQ(LoadOptions{}.parallel_files, defaults::kParallelFiles);
  EXPECT_EQ(RemoteOpenOptions{}.max_attempts, defaults::kRemoteMaxAttempts);
  EXPECT_EQ(RemoteOpenOptions{}.retry_base_ms, defaults::kRetryBaseMs);
  EXPECT_EQ(RemoteOpenOptions{}.retry_cap_ms, defaults::kRetryCapMs);
}

TEST(LoadFlagsTest, EveryStrategyByName) {
  for (Strategy s : {Strategy::kAuto, Strategy::kDirect, Strategy::kBuffered, Strategy::kMmap,
                     Strategy::kNetwork, Strategy::kMapped}) {
    const std::string name(StrategyName(s));
    EXPECT_EQ(Parse([&](LoadFlags& f) { f.strategy = name; }).strategy, s) << name;
    // The refusal lists every strategy there is.
    EXPECT_THAT(Refusal([](LoadFlags& f) { f.strategy = "warp"; }).message(), HasSubstr(name));
  }
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.strategy = "warp"; }),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(StartsWith("--strategy: "), HasSubstr("'warp'"))));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.strategy = "Auto"; }),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(LoadFlagsTest, ReadSizesAreMibAndZeroMeansTheSourcesPreference) {
  const LoadOptions o = Parse([](LoadFlags& f) {
    f.threads = 7;
    f.queue_depth = 3;
    f.chunk_mib = 1;
    f.budget_mib = 512;
    f.parallel_files = 4;
    f.zero_copy = true;
  });
  EXPECT_EQ(o.threads, 7u);
  EXPECT_EQ(o.queue_depth, 3u);
  EXPECT_EQ(o.chunk_bytes, 1ull << 20);
  EXPECT_EQ(o.memory_budget, 512ull << 20);
  EXPECT_EQ(o.parallel_files, 4u);
  EXPECT_TRUE(o.zero_copy_hot);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.chunk_mib = 0; }).chunk_bytes, 0u);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.budget_mib = kMaxFlagMib; }).memory_budget,
            kMaxFlagMib << 20);
}

TEST(LoadFlagsTest, SizesOutOfRangeAreRefusedNamingFlagAndValue) {
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.budget_mib = 0; }),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(StartsWith("--budget-mib: 0 "), HasSubstr("expected 1 to"))));
  // A byte count that would not fit 64 bits is refused, never wrapped to a small one.
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.budget_mib = kMaxFlagMib + 1; }),
              StatusIs(StatusCode::kInvalidArgument,
                       StartsWith("--budget-mib: " + std::to_string(kMaxFlagMib + 1))));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.chunk_mib = ~0ull; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--chunk-mib: ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.range_mib = 1ull << 50; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--range-mib: ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.parallel_files = 0; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--parallel-files: 0 ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.header_limit = 0; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--header-limit: 0 ")));
}

TEST(LoadFlagsTest, ModelFlags) {
  const LoadOptions o = Parse([](LoadFlags& f) {
    f.header_limit = 4096;
    f.variant = "fp16";
  });
  EXPECT_EQ(o.header_limit, 4096u);
  EXPECT_EQ(o.variant, "fp16");
}

TEST(LoadFlagsTest, Device) {
  EXPECT_EQ(Parse([](LoadFlags& f) { f.device = "cpu"; }).device.type, DeviceType::kCpu);
  const Device cuda = Parse([](LoadFlags& f) { f.device = "cuda"; }).device;
  EXPECT_EQ(cuda.type, DeviceType::kCuda);
  EXPECT_EQ(cuda.index, 0);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.device = "cuda:3"; }).device.index, 3);
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.device = "tpu"; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--device: unknown device 'tpu'")));
}

TEST(LoadFlagsTest, Dtype) {
  EXPECT_EQ(Parse([](LoadFlags& f) { f.dtype = "bf16"; }).dtype, "bf16");
  EXPECT_EQ(Parse([](LoadFlags& f) { f.dtype = "F32=BF16,lm_head.*:keep"; }).dtype,
            "F32=BF16,lm_head.*:keep");
  EXPECT_THAT(
      Refusal([](LoadFlags& f) { f.dtype = "int3"; }),
      StatusIs(StatusCode::kInvalidArgument, AllOf(StartsWith("--dtype: "), HasSubstr("int3"))));
}

TEST(LoadFlagsTest, GpuDirect) {
  EXPECT_EQ(Parse([](LoadFlags& f) { f.gds = "auto"; }).gpu_direct, GpuDirect::kAuto);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.gds = "on"; }).gpu_direct, GpuDirect::kOn);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.gds = "off"; }).gpu_direct, GpuDirect::kOff);
  EXPECT_THAT(
      Refusal([](LoadFlags& f) { f.gds = "maybe"; }),
      StatusIs(StatusCode::kInvalidArgument, AllOf(StartsWith("--gds: "), HasSubstr("'maybe'"))));
}

TEST(LoadFlagsTest, RemoteFlags) {
  const RemoteOpenOptions r = Parse([](LoadFlags& f) {
                                f.connections = 4;
                                f.range_mib = 2;
                                f.ca_bundle = "/etc/ca.pem";
                                f.verify_tls = false;
                                f.headers = {"Authorization: Bearer x", "X-A: b"};
                                f.header_on_redirect = true;
                                f.endpoint = "http://127.0.0.1:9000";
                                f.region = "eu-west-1";
                                f.addressing = "path";
                                f.anonymous = true;
                                f.attempts = 5;
                                f.retry_base_ms = 10;
                                f.retry_cap_ms = 10;
                              }).remote;
  EXPECT_EQ(r.connections, 4u);
  EXPECT_EQ(r.chunk_bytes, 2ull << 20);
  EXPECT_EQ(r.ca_bundle, "/etc/ca.pem");
  EXPECT_FALSE(r.verify_tls);
  EXPECT_EQ(r.headers, (std::vector<std::string>{"Authorization: Bearer x", "X-A: b"}));
  EXPECT_TRUE(r.header_on_redirect);
  EXPECT_EQ(r.endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(r.region, "eu-west-1");
  EXPECT_EQ(r.path_style, 1);
  EXPECT_TRUE(r.anonymous);
  EXPECT_EQ(r.max_attempts, 5u);
  EXPECT_EQ(r.retry_base_ms, 10u);
  EXPECT_EQ(r.retry_cap_ms, 10u);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.addressing = "virtual"; }).remote.path_style, 0);
  EXPECT_EQ(Parse([](LoadFlags& f) { f.addressing = "auto"; }).remote.path_style, -1);
}

TEST(LoadFlagsTest, RemoteRefusals) {
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.addressing = "dns"; }),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(StartsWith("--addressing: "), HasSubstr("'dns'"))));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.attempts = 0; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--attempts: 0 ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.retry_base_ms = 0; }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--retry-base-ms: 0 ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) {
                f.retry_base_ms = 500;
                f.retry_cap_ms = 100;
              }),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(StartsWith("--retry-cap-ms: 100 "), HasSubstr("expected 500 to"))));
}

// Headers may carry credentials: a refusal says what is wrong, never what the header was.
TEST(LoadFlagsTest, BadHeadersAreRefusedWithoutShowingThem) {
  for (const std::string& header :
       {std::string("Authorization: Bearer SECRET\r\nX-Injected: y"),
        std::string("X-Api-Key: SECRET\n"), std::string("X-Api-Key: SECRET\0", 18)}) {
    const Status s = Refusal([&](LoadFlags& f) { f.headers = {"X-Ok: 1", header}; });
    EXPECT_THAT(s, StatusIs(StatusCode::kInvalidArgument,
                            AllOf(StartsWith("--header: a header holds a CR, LF or NUL byte"),
                                  Not(HasSubstr("SECRET")))));
  }
  EXPECT_THAT(
      Refusal([](LoadFlags& f) { f.headers = {"Bearer SECRET"}; }),
      StatusIs(StatusCode::kInvalidArgument,
               AllOf(StartsWith("--header: expected 'Name: value'"), Not(HasSubstr("SECRET")))));
}

TEST(LoadFlagsTest, KeywordStyleSpellsFlagsAsPythonArguments) {
  EXPECT_EQ(FlagName("budget_mib", FlagStyle::kCommandLine), "--budget-mib");
  EXPECT_EQ(FlagName("budget_mib", FlagStyle::kKeyword), "budget_mib");
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.budget_mib = 0; }, FlagStyle::kKeyword),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("budget_mib: 0 ")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.strategy = "warp"; }, FlagStyle::kKeyword),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("strategy: unknown strategy")));
  EXPECT_THAT(Refusal([](LoadFlags& f) { f.dtype = "F32=I8"; }, FlagStyle::kKeyword),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("dtype: ")));
}

TEST(LoadFlagsTest, TheFirstBadFlagIsReported) {
  EXPECT_THAT(Refusal([](LoadFlags& f) {
                f.strategy = "warp";
                f.budget_mib = 0;
              }),
              StatusIs(StatusCode::kInvalidArgument, StartsWith("--strategy: ")));
}

}  // namespace
}  // namespace flashload
