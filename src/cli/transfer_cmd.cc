#include "cli/commands.h"

namespace flashload::cli {

void AddTransferCommands(CLI::App& app, std::vector<Command>& commands) {}

}  // namespace flashload::cli
