// ShellRuntime: runs a task as a plain process on the worker's host, for
// workers that offer `--runtime shell`. `run` goes through /bin/sh -c (a
// plain command is exec'd directly, the shell taking over if that fails:
// process_spawn.h), `cmd` runs as argv. Each process gets its own process
// group, so a timeout or cancel stops everything it started.
//
// Pre, main and post tasks of one attempt share a scratch directory
// ($DROVER_SCRATCH), which stands in for the container volumes of the
// Docker runtime. It is empty when the attempt starts (a directory that an
// earlier attempt left empty is used again rather than remade). As with
// Docker, the attempt's output is what the main task writes to
// $DROVER_OUTPUT, a file that exists and is empty when the attempt starts. The environment is the task's `env` plus PATH, HOME and
// the DROVER_* variables; nothing else of the worker's leaks in.
//
// Thread-safe: Run may be called from many task threads at once.
#ifndef DROVER_WORKERS_SHELL_RUNTIME_H_
#define DROVER_WORKERS_SHELL_RUNTIME_H_

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <vector>

#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

class ShellRuntime final : public Runtime {
 public:
  // `work_dir` holds one scratch directory per running attempt; it must
  // exist. `kill_grace` is how long a process has between SIGTERM and
  // SIGKILL.
  explicit ShellRuntime(
      std::filesystem::path work_dir,
      std::chrono::milliseconds kill_grace = std::chrono::seconds(5));
  ~ShellRuntime() override;
  std::string_view name() const override { return "shell"; }
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
  // An attempt's directory under work_dir_, new or one a finished attempt
  // left as it was made; and giving it back: kept for reuse if `reusable`
  // (its output file is still the one drover made) and it holds nothing
  // else, or removed.
  Result<AttemptDir> TakeDir();
  void ReturnDir(AttemptDir dir, bool reusable);

  std::filesystem::path work_dir_;
  std::chrono::milliseconds kill_grace_;
  std::mutex mu_;
  std::vector<AttemptDir> spare_dirs_;  // guarded by mu_
};

}  // namespace drover

#endif  // DROVER_WORKERS_SHELL_RUNTIME_H_
