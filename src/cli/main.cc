#include "cli/cli.h"

int main(int argc, char** argv) { return flashload::cli::RunCli(argc, argv); }
