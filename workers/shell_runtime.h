// ShellRuntime: runs a task as a plain process on the worker's host, for
// workers that offer `--runtime shell`. `run` goes through /bin/sh -c (a
// plain command is exec'd directly, the shell taking over if that fails:
// process_spawn.h), `cmd` runs as argv.
//
// Isolation (docs/SECURITY.md). A task never runs with the worker's
// supplementary groups (no `docker` group), never gains privileges (no new
// privileges, no ambient capabilities), and inherits no descriptor but
// stdin, stdout and stderr. Each slot of the worker is a "cell": with
// shell_uids, its own unprivileged uid from that range (without it, the
// worker's user), and, where the host allows, its own cgroup, which every
// process of the attempt joins, so that stop, timeout, cancel and the end
// of the attempt kill everything it started, `setsid` children included.
// Without a cgroup, a cell with its own uid kills every process of that
// uid instead; with neither, only the task's process group is killed.
//
// Pre, main and post tasks of one attempt share a scratch directory
// ($DROVER_SCRATCH), which stands in for the container volumes of the
// Docker runtime. It and the attempt's files are the cell's alone (0700,
// owned by its uid), and empty when the attempt starts (a directory that an
// earlier attempt of the cell left empty is used again rather than remade).
// As with Docker, the attempt's output is what the main task writes to
// $DROVER_OUTPUT, a file that exists and is empty when the attempt starts.
// The environment is the task's `env` plus PATH, HOME (the scratch
// directory for a uid of its own) and the DROVER_* variables; nothing else
// of the worker's leaks in.
//
// Thread-safe: Run may be called from many task threads at once, at most
// `slots` of them.
#ifndef DROVER_WORKERS_SHELL_RUNTIME_H_
#define DROVER_WORKERS_SHELL_RUNTIME_H_

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cgroup.h"
#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

// shell_uids: a range of uids, "61000-61063".
struct UidRange {
  uint32_t first = 0;
  uint32_t count = 0;  // 0: none
};
// Parses "FIRST-LAST" (inclusive); InvalidArgument saying why not.
Result<UidRange> ParseUidRange(std::string_view text);

struct ShellRuntimeOptions {
  std::filesystem::path work_dir;  // must exist
  // Between SIGTERM and SIGKILL when a timeout or a stop ends a process.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  UidRange uids;       // none: tasks run as the worker's user
  uint32_t slots = 1;  // attempts at once at most; uids must cover them
  bool cgroups = true;  // a cgroup per cell, where the host allows
};

class ShellRuntime final : public Runtime {
 public:
  explicit ShellRuntime(ShellRuntimeOptions options);
  ~ShellRuntime() override;
  std::string_view name() const override { return "shell"; }

  // Checks what the options need of this process (the capabilities to
  // switch uids, to drop supplementary groups) and sets the cells up.
  // Errors say what is missing and what to do; `notes` receives what the
  // worker should warn about (no cgroups: setsid children may outlive
  // their task). Called once, before Run; Run calls it itself otherwise.
  Status Start(std::vector<std::string>* notes);

  RunOutcome Run(const TaskRun& task, LogSink& logs,
                 std::stop_token stop) override;

 private:
  // What lstat said of a directory when it was last found as drover made
  // it. Trusted only if it had not changed for a second by then: a later
  // change then shows as a later time, even at the coarse resolution of a
  // file system's clock.
  struct Stamp {
    struct stat st {};
    bool trusted = false;
  };
  struct AttemptDir {
    std::filesystem::path path;  // holds scratch/, output, hook-output
    Stamp top, scratch;
  };
  // A slot's identity: the uid its tasks run as, its cgroup, and the
  // directory its last attempt left to be used again.
  struct Cell {
    int n = 0;
    int64_t uid = -1;  // -1: the worker's own
    std::unique_ptr<Cgroup> cgroup;
    std::optional<AttemptDir> spare;
  };
  std::unique_ptr<Cell> TakeCell(Status* error);
  void ReturnCell(std::unique_ptr<Cell> cell);
  // An attempt's directory for `cell`: its spare one or a new one.
  Result<AttemptDir> TakeDir(Cell& cell);
  // Kept for reuse if `reusable` (its output file is still the one drover
  // made) and it holds nothing else, or removed.
  void ReturnDir(Cell& cell, AttemptDir dir, bool reusable);
  // Kills whatever the cell's last attempt left running.
  void KillLeftovers(Cell& cell);
  uid_t OwnerOf(const Cell& cell) const;

  ShellRuntimeOptions options_;
  const int instance_;  // which ShellRuntime of this process (cgroup names)
  std::once_flag started_;
  Status start_status_;
  bool drop_groups_ = false;  // the worker has groups to drop, and may
  std::optional<CgroupRoot> cgroups_;
  uid_t self_ = 0;
  std::mutex mu_;
  std::vector<std::unique_ptr<Cell>> free_cells_;  // guarded by mu_
  int next_cell_ = 0;                              // guarded by mu_
};

}  // namespace drover

#endif  // DROVER_WORKERS_SHELL_RUNTIME_H_
