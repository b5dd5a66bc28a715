#include "cli/commands.h"

namespace flashload::cli {

void AddPackCommands(CLI::App& app, std::vector<Command>& commands) {}

}  // namespace flashload::cli
