// Runtime: how a worker runs one task attempt — in a Docker container or as
// a plain process. Implementations live in workers/ (DockerRuntime,
// ShellRuntime); tests use them directly.
//
// The worker calls Run on a task thread of its own, one call per attempt;
// an implementation must allow concurrent Run calls from several threads.
#ifndef DROVER_RUNTIME_H_
#define DROVER_RUNTIME_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace drover {

// A task attempt with every expression already evaluated.
struct TaskRun {
  std::string job_id;
  std::string task_name;
  uint32_t attempt = 1;
  std::string worker;  // the worker's name, for labels
  std::string image;   // empty for the shell runtime
  std::string run;     // a shell script, or empty when cmd is set
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::map<std::string, std::string> env;
  std::string workdir;
  std::string user;
  std::vector<std::string> volumes;
  std::string network = "none";
  std::chrono::milliseconds timeout{0};  // 0: none
  double cpus = 0;
  int64_t memory_bytes = 0;
  int64_t pids = 0;                  // 0: none
  std::vector<std::string> cap_add;  // capabilities, as NET_ADMIN
  std::vector<TaskRun> pre;
  std::vector<TaskRun> post;
};

// Where a running attempt sends what it prints. Called from the thread that
// called Run (or threads it owns); must be thread-safe.
class LogSink {
 public:
  virtual ~LogSink() = default;
  // stream: 'o' stdout, 'e' stderr, 's' a note from the runtime itself
  // (e.g. image pull progress).
  virtual void Write(char stream, std::string_view data) = 0;
};

struct RunOutcome {
  int32_t exit_code = -1;  // of the main task; -1 when it never ran
  std::string output;      // contents of $DROVER_OUTPUT, capped
  std::string error;       // empty on success; else what went wrong
  bool timed_out = false;
  bool cancelled = false;
  // The failure lies with the worker's environment (e.g. Docker down), not
  // with the task, so another attempt elsewhere may succeed.
  bool infrastructure = false;
  bool ok() const { return error.empty() && exit_code == 0; }
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // "docker" or "shell".
  virtual std::string_view name() const = 0;
  // Runs pre tasks, the task, then post tasks (sharing the task's volumes),
  // to the end. Honours task.timeout (kill, then timed_out) and `stop`
  // (kill, then cancelled). The output file is created empty beforehand
  // and passed as DROVER_OUTPUT; at most kMaxOutputBytes of it are kept.
  virtual RunOutcome Run(const TaskRun& task, LogSink& logs,
                         std::stop_token stop) = 0;
  // Whether the runtime can run tasks now (e.g. the Docker daemon answers).
  // Default: always.
  virtual bool Healthy() { return true; }
};

inline constexpr size_t kMaxOutputBytes = 64 * 1024;

}  // namespace drover

#endif  // DROVER_RUNTIME_H_
