#include "cli/commands.h"

namespace flashload::cli {

void AddConvertCommand(CLI::App& app, std::vector<Command>& commands) {}

}  // namespace flashload::cli
