// JobSpec: a job file parsed and validated into typed values.
//
// Called by `drover validate`, `drover submit` (client-side check), droverd
// (API submissions and the watched directory) and the fuzz target. Parsing
// is pure: no I/O beyond reading the named file in ParseJobFile. Thread-safe:
// the functions share no state.
//
// The format is documented for users in docs/JOBS.md.
#ifndef DROVER_JOB_SPEC_H_
#define DROVER_JOB_SPEC_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// Millis and the duration and size parsers: part of the job file's
// vocabulary, so they come with this header.
#include "drover/duration.h"

namespace drover {

// A place in a job file; 1-based, 0 when unknown.
struct Location {
  uint32_t line = 0;
  uint32_t column = 0;
};

// One validation problem.
struct Diagnostic {
  std::string file;
  Location where;
  std::string message;
  // "FILE:LINE:COL: error: MESSAGE", the form `drover validate` prints.
  std::string ToString() const;
};

// Capped exponential backoff between attempts. limit is the number of
// retries after the first attempt, so a task runs at most limit + 1 times.
struct RetryPolicy {
  uint32_t limit = 0;
  Millis initial_delay{1000};  // default 1s
  Millis max_delay{60000};     // default 1m
  double scaling = 2.0;        // default 2.0; each delay is the last × scaling
};

struct ResourceLimits {
  double cpus = 0;           // 0: unlimited
  int64_t memory_bytes = 0;  // 0: unlimited
  int64_t pids = 0;          // processes and threads at once; 0: unlimited
};

enum class RuntimeKind { kDocker, kShell };
std::string_view RuntimeName(RuntimeKind kind);  // "docker" or "shell"

struct TaskSpec {
  std::string name;
  std::string image;                    // may hold {{ }} templates
  std::string run;                      // shell script; may hold templates
  std::vector<std::string> cmd;         // argv; each may hold templates
  std::vector<std::string> entrypoint;
  std::map<std::string, std::string> env;  // values may hold templates
  std::string workdir;
  std::string user;
  std::vector<std::string> volumes;     // container paths of scratch volumes
  std::string network = "none";         // "none", "host" or a network name
  std::string queue;                    // resolved: task, job, "default"
  std::string var;                      // name under tasks.* for the output
  std::string if_expr;                  // "" means always run
  // Resolved dependencies (names of tasks in the same job). The file's rule
  // is applied by the parser: no depends_on means "the task before me".
  std::vector<std::string> depends_on;
  std::optional<Millis> timeout;        // none: no timeout
  RetryPolicy retry;
  ResourceLimits limits;
  // Capabilities added to the container's (as NET_ADMIN, without CAP_);
  // a worker runs the task only if its cap_add_allowed lists them all.
  std::vector<std::string> cap_add;
  std::vector<TaskSpec> pre;            // run before, on the same worker
  std::vector<TaskSpec> post;           // run after, on the same worker
  RuntimeKind runtime = RuntimeKind::kShell;
  Location where;                       // of the task's table in the file
};

struct JobSpec {
  std::string name;
  std::string description;
  std::string queue = "default";
  std::map<std::string, std::string> inputs;
  std::map<std::string, std::string> secrets;
  std::vector<TaskSpec> tasks;  // in file order
};

struct ParseResult {
  std::optional<JobSpec> job;     // set only when errors is empty
  std::vector<Diagnostic> errors;  // in file order
  bool ok() const { return errors.empty(); }
};

// Parses and validates job-file text. `file` names it in diagnostics.
// `input_overrides` replace [inputs] values (as `--input KEY=VALUE` does);
// an override for an input the file does not declare is an error.
ParseResult ParseJobText(
    std::string_view text, std::string_view file,
    const std::map<std::string, std::string>& input_overrides = {});

// Reads `path` and parses it; an unreadable file is one diagnostic.
ParseResult ParseJobFile(
    const std::string& path,
    const std::map<std::string, std::string>& input_overrides = {});

// The job file's text with every [secrets] value replaced by an empty
// string and every other line where it was: what drover keeps of a job
// file on disk (its store, processed/, failed/). Text that has no secrets,
// or is not TOML, comes back as it is.
std::string WithoutSecretValues(std::string_view text);

// A Linux capability as `cap_add` names it: "net_admin", "CAP_NET_ADMIN"
// and "NET_ADMIN" are "NET_ADMIN"; "" if it is not a name of that shape.
std::string CapabilityName(std::string_view name);

}  // namespace drover

#endif  // DROVER_JOB_SPEC_H_
