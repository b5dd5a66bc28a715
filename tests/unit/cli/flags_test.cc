// AddLoadFlags: the command line's load flags fill LoadFlags, every flag a ParseLoadFlags message
// names is one the command line takes, help texts state the defaults of defaults.h, and bench takes
// load's flags.
#include "cli/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "flashload/defaults.h"
#include "support/status_matchers.h"

namespace flashload::cli {
namespace {

using ::testing::HasSubstr;

constexpr LoadFlagGroups kAll{
    .reads = true, .header_limit = true, .variant = true, .device = true, .remote = true};

LoadFlags ParseArgs(std::vector<std::string> argv, const LoadFlagGroups& groups = kAll) {
  CLI::App app;
  LoadFlags f;
  AddLoadFlags(app, f, groups);
  std::reverse(argv.begin(), argv.end());  // CLI11 takes a reversed vector
  app.parse(argv);
  return f;
}

TEST(LoadFlagsCliTest, EveryFlagFillsItsField) {
  const LoadFlags f = ParseArgs({"--strategy",
                                 "direct",
                                 "--threads",
                                 "3",
                                 "--queue-depth",
                                 "4",
                                 "--chunk-mib",
                                 "2",
                                 "--budget-mib",
                                 "64",
                                 "--parallel-files",
                                 "5",
                                 "--zero-copy",
                                 "--header-limit",
                                 "4096",
                                 "--variant",
                                 "fp16",
                                 "--device",
                                 "cuda:1",
                                 "--dtype",
                                 "bf16",
                                 "--gds",
                                 "off",
                                 "--connections",
                                 "6",
                                 "--range-mib",
                                 "7",
                                 "--endpoint",
                                 "http://127.0.0.1:9000",
                                 "--region",
                                 "eu-west-1",
                                 "--addressing",
                                 "path",
                                 "--anonymous",
                                 "--ca-bundle",
                                 "/ca.pem",
                                 "--header",
                                 "A: 1",
                                 "--header",
                                 "B: 2",
                                 "--header-on-redirect",
                                 "--attempts",
                                 "9",
                                 "--retry-base-ms",
                                 "10",
                                 "--retry-cap-ms",
                                 "11"});
  EXPECT_EQ(f.strategy, "direct");
  EXPECT_EQ(f.threads, 3u);
  EXPECT_EQ(f.queue_depth, 4u);
  EXPECT_EQ(f.chunk_mib, 2u);
  EXPECT_EQ(f.budget_mib, 64u);
  EXPECT_EQ(f.parallel_files, 5u);
  EXPECT_TRUE(f.zero_copy);
  EXPECT_EQ(f.header_limit, 4096u);
  EXPECT_EQ(f.variant, "fp16");
  EXPECT_EQ(f.device, "cuda:1");
  EXPECT_EQ(f.dtype, "bf16");
  EXPECT_EQ(f.gds, "off");
  EXPECT_EQ(f.connections, 6u);
  EXPECT_EQ(f.range_mib, 7u);
  EXPECT_EQ(f.endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(f.region, "eu-west-1");
  EXPECT_EQ(f.addressing, "path");
  EXPECT_TRUE(f.anonymous);
  EXPECT_EQ(f.ca_bundle, "/ca.pem");
  EXPECT_EQ(f.headers, (std::vector<std::string>{"A: 1", "B: 2"}));
  EXPECT_TRUE(f.header_on_redirect);
  EXPECT_EQ(f.attempts, 9u);
  EXPECT_EQ(f.retry_base_ms, 10u);
  EXPECT_EQ(f.retry_cap_ms, 11u);
  FL_EXPECT_OK(ParseLoadFlags(f));
}

TEST(LoadFlagsCliTest, NoFlagsIsTheDefaultLoad) {
  const LoadFlags parsed = ParseArgs({});
  const LoadFlags want;
  EXPECT_EQ(parsed.budget_mib, want.budget_mib);
  EXPECT_EQ(parsed.parallel_files, want.parallel_files);
  EXPECT_EQ(parsed.attempts, want.attempts);
  EXPECT_EQ(parsed.header_limit, want.header_limit);
  EXPECT_EQ(parsed.strategy, want.strategy);
  EXPECT_EQ(parsed.device, want.device);
  EXPECT_EQ(parsed.gds, want.gds);
  EXPECT_EQ(parsed.addressing, want.addressing);
}

// Every message of ParseLoadFlags starts with the name of a flag the command line takes.
TEST(LoadFlagsCliTest, EveryRefusalNamesAFlagOfTheCommandLine) {
  CLI::App app;
  LoadFlags bound;
  AddLoadFlags(app, bound, kAll);
  const std::vector<std::function<void(LoadFlags&)>> bad = {
      [](LoadFlags& f) { f.strategy = "warp"; },  [](LoadFlags& f) { f.chunk_mib = ~0ull; },
      [](LoadFlags& f) { f.budget_mib = 0; },     [](LoadFlags& f) { f.parallel_files = 0; },
      [](LoadFlags& f) { f.header_limit = 0; },   [](LoadFlags& f) { f.device = "tpu"; },
      [](LoadFlags& f) { f.dtype = "int3"; },     [](LoadFlags& f) { f.gds = "maybe"; },
      [](LoadFlags& f) { f.range_mib = ~0ull; },  [](LoadFlags& f) { f.headers = {"no colon"}; },
      [](LoadFlags& f) { f.addressing = "dns"; }, [](LoadFlags& f) { f.attempts = 0; },
      [](LoadFlags& f) { f.retry_base_ms = 0; },  [](LoadFlags& f) { f.retry_cap_ms = 1; },
  };
  for (const auto& set : bad) {
    LoadFlags f;
    set(f);
    const Status s = ParseLoadFlags(f).status();
    ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    const std::string_view message = s.message();
    const std::string flag(message.substr(0, message.find(':')));
    EXPECT_NE(app.get_option_no_throw(flag), nullptr) << flag << " (" << message << ")";
  }
}

TEST(LoadFlagsCliTest, HelpStatesTheDefaults) {
  CLI::App app;
  LoadFlags f;
  AddLoadFlags(app, f, kAll);
  const std::string help = app.help();
  EXPECT_THAT(help, HasSubstr("(0: " + std::to_string(defaults::kRemoteConnections) + ")"));
  EXPECT_THAT(help, HasSubstr("(0: " + std::to_string(defaults::kRemoteChunkBytes >> 20) + ")"));
  EXPECT_THAT(help, HasSubstr(std::to_string(defaults::kNetworkChunkBytes >> 20) +
                              " MiB sequential ranges"));
  EXPECT_THAT(help,
              HasSubstr("--budget-mib UINT=" + std::to_string(defaults::kMemoryBudget >> 20)));
  EXPECT_THAT(help, HasSubstr("--parallel-files UINT=" + std::to_string(defaults::kParallelFiles)));
  EXPECT_THAT(help, HasSubstr("--attempts UINT=" + std::to_string(defaults::kRemoteMaxAttempts)));
}

TEST(LoadFlagsCliTest, OnlyTheAskedGroupsAreAdded) {
  CLI::App app;
  LoadFlags f;
  AddLoadFlags(app, f, {.header_limit = true, .remote = true});
  EXPECT_NE(app.get_option_no_throw("--header-limit"), nullptr);
  EXPECT_NE(app.get_option_no_throw("--connections"), nullptr);
  EXPECT_EQ(app.get_option_no_throw("--strategy"), nullptr);
  EXPECT_EQ(app.get_option_no_throw("--device"), nullptr);
  EXPECT_EQ(app.get_option_no_throw("--variant"), nullptr);
}

TEST(LoadFlagsCliTest, BenchTakesTheReadAndDeviceFlagsOfLoad) {
  CLI::App app;
  BenchArgs a;
  AddBenchOptions(app, a);
  std::vector<std::string> argv = {
      "model", "--strategy", "buffered", "--budget-mib", "32",          "--threads", "2",
      "--gds", "on",         "--device", "cuda:0",       "--chunk-mib", "1",         "--zero-copy"};
  std::reverse(argv.begin(), argv.end());
  app.parse(argv);
  EXPECT_EQ(a.load.strategy, "buffered");
  EXPECT_EQ(a.load.budget_mib, 32u);
  EXPECT_EQ(a.load.threads, 2u);
  EXPECT_EQ(a.load.gds, "on");
  EXPECT_EQ(a.load.device, "cuda:0");
  EXPECT_EQ(a.load.chunk_mib, 1u);
  EXPECT_TRUE(a.load.zero_copy);
  EXPECT_EQ(app.get_option_no_throw("--connections"), nullptr);  // bench reads local files only
}

}  // namespace
}  // namespace flashload::cli
