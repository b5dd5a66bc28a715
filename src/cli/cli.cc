#include "cli/cli.h"

namespace flashload::cli {
int RunCli(int argc, char** argv) { return 0; }
}  // namespace flashload::cli
