// Subcommands that register themselves: each adds its subcommand, flags and help to the app, and
// returns what runs it once the command line is parsed. RunCli() (cli.cc) calls every Add*
// function below, then runs the one subcommand the user chose.
//
// Long commands (convert, pack, unpack, push, pull, cp) show a progress line (bytes, GB/s, ETA) on a
// terminal, stay quiet when stderr is not a terminal or with --quiet, and give the same figures
// in --json.
// Thread-safety: as RunCli(): the main thread only.
#ifndef FLASHLOAD_CLI_COMMANDS_H_
#define FLASHLOAD_CLI_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace flashload::cli {

// A registered subcommand: `app` is the parsed subcommand, `run` runs it and returns the exit code
// (0 success, 1 failure, 2 bad usage).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// `flashload convert` (convert_cmd.cc): PyTorch checkpoints to safetensors.
void AddConvertCommand(CLI::App& app, std::vector<Command>& commands);
// `flashload pack` and `flashload unpack` (pack_cmd.cc): model folders to and from archives.
void AddPackCommands(CLI::App& app, std::vector<Command>& commands);
// `flashload push`, `flashload pull` and `flashload cp` (transfer_cmd.cc): moving models and files
// between local storage, HTTP(S) and S3, and the local cache.
void AddTransferCommands(CLI::App& app, std::vector<Command>& commands);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_COMMANDS_H_
