// The `flashload` command line: subcommands inspect, validate, load, bench, gen, demo.
//
// Errors: never thrown; each is printed to stderr as "flashload <command>: <message>" (URLs
// redacted, request headers never shown) and becomes the exit code. Bad flags are refused before
// anything is read or sent (load flags by ParseLoadFlags, load/load_flags.h).
// Thread-safety: call from the process's main thread, once at a time: `load` installs a SIGINT
// handler for the load's duration (Ctrl-C cancels it), and `bench` forks a child per run.
#ifndef FLASHLOAD_CLI_CLI_H_
#define FLASHLOAD_CLI_CLI_H_

namespace flashload::cli {

// Runs the CLI; returns the process exit code. Exit codes: 0 success, 1 the operation failed
// (invalid file, I/O error), 2 bad usage.
int RunCli(int argc, char** argv);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_CLI_H_
