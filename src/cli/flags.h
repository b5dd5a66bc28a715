// The load flags of the `flashload` commands: binds LoadFlags (load/load_flags.h) to CLI11
// options, so inspect, validate, load and bench take the same flags with the same help, and
// ParseLoadFlags() checks them all in one place. Help texts state the defaults of
// flashload/defaults.h.
//
// Lifetime: the options write into `flags` when the app parses, so `flags` must outlive `app`'s
// parse. Parsing only stores the values (CLI11 refuses what does not convert to the field's type);
// ParseLoadFlags() judges them. Thread-compatible, as CLI11 is.
#ifndef FLASHLOAD_CLI_FLAGS_H_
#define FLASHLOAD_CLI_FLAGS_H_

#include "load/load_flags.h"

namespace CLI {
class App;
}

namespace flashload::cli {

// Which groups of load flags a command takes.
struct LoadFlagGroups {
  bool reads = false;         // --strategy, --threads, --queue-depth, --chunk-mib, --budget-mib,
                              // --parallel-files, --zero-copy
  bool header_limit = false;  // --header-limit
  bool variant = false;       // --variant
  bool device = false;        // --device, --dtype, --gds
  bool remote = false;        // --connections, --range-mib, --ca-bundle, --no-verify-tls, --header,
                              // --header-on-redirect, --endpoint, --region, --addressing,
                              // --anonymous, --attempts, --retry-base-ms, --retry-cap-ms
};

// Adds the flags of `groups` to `app`, each writing its LoadFlags field.
void AddLoadFlags(CLI::App& app, LoadFlags& flags, const LoadFlagGroups& groups);

}  // namespace flashload::cli

#endif  // FLASHLOAD_CLI_FLAGS_H_
