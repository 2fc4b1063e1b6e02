// TaskDraft: a task as the job file writes it, before [defaults] and the
// ordering rule are applied, with the places of its keys for messages.
//
// The Parser in job_spec.cc fills drafts from the TOML document, resolves
// each into a TaskSpec, and hands the drafts to CheckJobGraph (job_graph.h)
// for the checks that need every task at once. Plain values; no behaviour.
#ifndef DROVER_TASK_DRAFT_H_
#define DROVER_TASK_DRAFT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "drover/job_spec.h"

namespace drover {

// Values a task table or [defaults] sets; what neither sets falls back to
// the built-in default.
struct TaskSettings {
  std::optional<std::string> image, workdir, user, network, queue;
  std::optional<RuntimeKind> runtime;
  Location runtime_at;
  std::optional<Millis> timeout, initial_delay, max_delay;
  std::optional<uint32_t> retry_limit;
  std::optional<double> scaling, cpus;
  std::optional<int64_t> memory, pids;
  std::optional<std::vector<std::string>> cap_add;
  std::optional<std::map<std::string, std::string>> env;
};

// A task of the job, or a pre or post task run inside one.
enum class TaskKind { kTask, kPre, kPost };

// A task as written, before [defaults] and the ordering rule are applied.
struct TaskDraft {
  struct Dependency {
    std::string name;
    Location where;
  };

  std::string name;
  bool named = false;  // has a valid name
  Location where, name_at, var_at, cmd_at;
  std::string label;  // "task 'b'", "task #3", "pre task 'x' of task 'b'"
  bool run_key = false, cmd_key = false;  // present, valid or not
  std::optional<std::string> run;
  std::optional<std::vector<std::string>> cmd;
  std::vector<std::string> entrypoint, volumes;
  std::string var, if_expr;
  std::optional<std::vector<Dependency>> depends_on;
  TaskSettings own;
  std::vector<TaskDraft> pre, post;
};

}  // namespace drover

#endif  // DROVER_TASK_DRAFT_H_
