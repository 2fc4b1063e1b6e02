// Config files: the optional TOML file each executable reads with
// `--config FILE`. Keys are the long flag names without the leading dashes
// (`heartbeat-interval = "1s"`), with `_` allowed for `-`
// (`heartbeat_interval`); a flag given on the command line overrides
// the file, which overrides the built-in default. Unknown keys and values of
// the wrong type are errors located as FILE:LINE:COL, like job-file errors.
// Read by ApplyConfig (drover/cli.h) from droverd's and drover-worker's
// main(); the commented examples are config/droverd.toml and
// config/worker.toml.
//
// Thread-safe: pure functions.
#ifndef DROVER_CONFIG_H_
#define DROVER_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "drover/job_spec.h"

namespace drover {

enum class ConfigKind {
  kString,      // a string
  kInteger,     // a non-negative integer
  kDuration,    // a duration string, e.g. "1s"
  kStringList,  // an array of strings (also accepts one string)
  kBool,        // true or false
  kTable,       // a table of scalars, passed on as "k=v,k=v"
};

struct ConfigKey {
  std::string name;
  ConfigKind kind;
};

// One value from the file, as text (lists: one string each; booleans
// "true" or "false"), with where it was, for messages about values that
// are well-typed but still wrong. Values are keyed by the flag's name
// (`-`, not `_`).
struct ConfigValue {
  std::vector<std::string> values;
  Location where;
};

struct ConfigFile {
  std::map<std::string, ConfigValue> values;
  std::vector<Diagnostic> errors;
  bool ok() const { return errors.empty(); }
};

// Reads `path`, checking every key against `keys`. Errors come in file
// order; an unknown key's error points at the key and suggests the nearest
// known one.
ConfigFile ReadConfigFile(const std::string& path,
                          const std::vector<ConfigKey>& keys);

// The keys each daemon accepts: every long flag but --config, --help and
// --version. Declared here, not in the mains, so that tests can check the
// example configs against them.
const std::vector<ConfigKey>& DroverdConfigKeys();
const std::vector<ConfigKey>& WorkerConfigKeys();

}  // namespace drover

#endif  // DROVER_CONFIG_H_
