// The `flashload` command line: subcommands inspect, validate, load, bench, gen, demo.
#ifndef FLASHLOAD_CLI_CLI_H_
#define FLASHLOAD_CLI_CLI_H_

namespace flashload::cli {

// Runs the CLI; returns the process exit code. Exit codes: 0 success, 1 the operation failed
// (invalid file, I/O error), 2 bad usage.
int RunCli(int argc, char** argv);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_CLI_H_
