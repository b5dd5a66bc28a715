// `flashload pack` and `flashload unpack` through the command line: exit codes (0 done, 1 refused
// or failed, 2 bad usage), help texts that state the defaults, and the limits' flags reaching
// unpack.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/commands.h"
#include "support/test_files.h"

namespace flashload::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

int RunFlashload(std::vector<std::string> args) {
  args.insert(args.begin(), "flashload");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunCli(static_cast<int>(argv.size()), argv.data());
}

std::string Help(const std::string& command) {
  CLI::App app;
  std::vector<Command> commands;
  AddPackCommands(app, commands);
  return app.get_subcommand(command)->help();
}

TEST(PackCommandTest, PacksAndUnpacksWithExitCodes) {
  testing::TempDir tmp;
  const std::string model = tmp.File("m");
  fs::create_directories(model + "/unet");
  testing::WriteFile(model + "/unet/w.bin", testing::PositionalBytes(100'000, 1));
  testing::WriteFile(model + "/model_index.json", std::string("{}"));
  EXPECT_EQ(RunFlashload({"pack", model, "-o", tmp.File("m.tar.zst"), "--quiet"}), 0);
  EXPECT_EQ(RunFlashload({"unpack", tmp.File("m.tar.zst"), "-o", tmp.File("out"), "--quiet"}), 0);
  EXPECT_EQ(testing::ReadFile(tmp.File("out/unet/w.bin")),
            testing::ReadFile(model + "/unet/w.bin"));
  // Refused or failed: 1.
  EXPECT_EQ(RunFlashload({"pack", model, "-o", tmp.File("m.tar.zst"), "--quiet"}), 1);  // exists
  EXPECT_EQ(RunFlashload({"pack", model, "-o", tmp.File("m.zip"), "--quiet"}), 1);
  EXPECT_EQ(RunFlashload({"unpack", tmp.File("m.tar.zst"), "-o", tmp.File("out"), "--quiet"}), 1);
  // The limits reach unpack: one member of 100,000 bytes is over 0 GiB.
  EXPECT_EQ(RunFlashload({"unpack", tmp.File("m.tar.zst"), "-o", tmp.File("out2"), "--quiet",
                          "--max-member-gib", "0"}),
            1);
  EXPECT_EQ(RunFlashload({"unpack", tmp.File("m.tar.zst"), "-o", tmp.File("out2"), "--quiet",
                          "--max-members", "2"}),
            1);
  EXPECT_FALSE(fs::exists(tmp.File("out2")));
  // Bad usage: 2.
  EXPECT_EQ(RunFlashload({"pack", model, "-o", tmp.File("x.tar"), "--precision", "fp8"}), 2);
  EXPECT_EQ(RunFlashload({"pack", model, "-o", tmp.File("x.tar"), "--format", "zip"}), 2);
  EXPECT_EQ(RunFlashload({"pack", model}), 2);
  EXPECT_EQ(RunFlashload(
                {"unpack", tmp.File("m.tar.zst"), "-o", tmp.File("o"), "--max-window-log", "40"}),
            2);
}

TEST(PackCommandTest, HelpStatesFormatsAndDefaults) {
  const std::string pack = Help("pack");
  EXPECT_THAT(pack, HasSubstr("models--ORG--NAME--PRECISION.tar.zst"));
  EXPECT_THAT(pack, HasSubstr("--frame-mib UINT:INT in [1 - 1024]=4"));
  EXPECT_THAT(pack, HasSubstr("--level INT:INT in [-7 - 22]=3"));
  EXPECT_THAT(pack, HasSubstr("Symbolic links"));
  const std::string unpack = Help("unpack");
  EXPECT_THAT(unpack, HasSubstr("--max-member-gib UINT:UINT in [0 - 16777216]=256"));
  EXPECT_THAT(unpack, HasSubstr("--max-total-gib UINT:UINT in [0 - 16777216]=1024"));
  EXPECT_THAT(unpack, HasSubstr("--max-members UINT=100000"));
  EXPECT_THAT(unpack, HasSubstr("--max-window-log INT:INT in [10 - 31]=27"));
}

}  // namespace
}  // namespace flashload::cli
