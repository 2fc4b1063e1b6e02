// Cluster: real droverd and drover-worker processes for integration tests,
// on ipc:// endpoints in a fresh temp dir, with their logs kept there and
// printed when a test fails. Processes are ended by PID only.
#ifndef DROVER_TESTS_CLUSTER_H_
#define DROVER_TESTS_CLUSTER_H_

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "drover/client.h"
#include "drover/keys.h"
#include "drover/protocol.h"

namespace drover::testing {

// A child process whose stdout and stderr go to a log file.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_path,
          std::map<std::string, std::string> env = {});
  ~Process();  // SIGKILL if still running
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for it to exit; its exit code, or 128+signal; -1 on timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool Running();
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_path_;
};

// Runs a command to its end; its exit code and what it printed.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::map<std::string, std::string> env = {},
                         std::chrono::milliseconds timeout =
                             std::chrono::seconds(60));

std::string BuildPath(const std::string& exe);  // build/<exe>
std::string SourcePath(const std::string& rel); // <source>/<rel>
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& text);

class Cluster {
 public:
  // `heartbeat_interval` applies to the scheduler and every worker.
  explicit Cluster(std::string heartbeat_interval = "200ms",
                   int liveness = 3);
  ~Cluster();

  // Runs the scheduler under `prefix`, e.g. {"prlimit", "--fsize=N"}.
  void set_scheduler_prefix(std::vector<std::string> prefix) {
    scheduler_prefix_ = std::move(prefix);
  }
  // Waits until it answers requests unless `wait_ready` is false.
  Process& StartScheduler(std::vector<std::string> extra = {},
                          bool wait_ready = true);
  Process& StartWorker(const std::string& name,
                       std::vector<std::string> extra = {});

  // --auth for the scheduler started next, with its key pair made here in
  // auth_dir(), and the cluster's client a key in clients/ ("test-client").
  void EnableAuth();
  const std::string& auth_dir() const { return auth_dir_; }
  // A new key pair, dir()/keys/NAME.key and .pub; with `folder` ("clients",
  // "readers", "workers"), its public key listed there as NAME.pub.
  std::string NewKey(const std::string& name, const std::string& folder = "");
  // --key and --server-key flags for the key NAME (made by NewKey).
  std::vector<std::string> KeyFlags(const std::string& name) const;
  // The keys a Client uses to connect as NAME.
  ClientKeys ClientKeysFor(const std::string& name) const;
  // Runs the `drover` CLI against this cluster's scheduler, as NAME if
  // given (else without keys).
  CommandResult Drover(std::vector<std::string> args,
                       const std::string& as = "");
  Process& scheduler() { return *scheduler_; }
  Process& worker(const std::string& name) { return *workers_.at(name); }
  // Forgets (and SIGKILLs, if still running) the scheduler or a worker.
  void DropScheduler();
  void DropWorker(const std::string& name);

  std::string Submit(const std::string& toml,
                     std::map<std::string, std::string> inputs = {});
  JobView Status(const std::string& job_id);
  // Polls until the job ends; fails the test after `timeout`.
  JobView Wait(const std::string& job_id,
               std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::vector<WorkerView> Workers();
  // Polls `pred` every 20 ms; false after `timeout`.
  static bool Eventually(const std::function<bool()>& pred,
                         std::chrono::milliseconds timeout =
                             std::chrono::seconds(20));
  // All the logs a job's tasks printed (stdout and stderr), in order.
  std::string Logs(const std::string& job_id, const std::string& task = "");

  Client& client() { return *client_; }
  const std::string& dir() const { return dir_; }
  const std::string& api() const { return api_; }
  const std::string& tasks_endpoint() const { return tasks_; }
  const std::string& heartbeat_endpoint() const { return heartbeat_; }
  // The scheduler's log so far.
  std::string SchedulerLog() const;

 private:
  std::string dir_;
  std::vector<std::string> scheduler_prefix_;
  std::string api_, tasks_, heartbeat_;
  std::string auth_dir_;  // "" : no --auth
  std::string interval_;
  int liveness_;
  int scheduler_starts_ = 0;
  std::unique_ptr<Process> scheduler_;
  std::map<std::string, std::unique_ptr<Process>> workers_;
  std::vector<std::unique_ptr<Process>> dropped_;
  std::unique_ptr<Client> client_;
};

}  // namespace drover::testing

#endif  // DROVER_TESTS_CLUSTER_H_
