// What the benchmark's workloads share: child processes ended by PID, a
// scratch directory with ipc:// endpoints, droverd and drover-worker
// launchers, a pipelined client-API submitter, job-file generators, RSS and
// percentiles.
//
// Thread-compatible unless a class says otherwise. Part of the bench tool
// (bench/drover_bench.cc), not of the product.
#ifndef DROVER_BENCH_BENCH_UTIL_H_
#define DROVER_BENCH_BENCH_UTIL_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "drover/keys.h"
#include "drover/protocol.h"
#include "drover/status.h"

namespace drover::bench {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start);
double Seconds(Clock::duration d);

// A child process with stdout and stderr appended to `log_path`. The
// destructor sends SIGTERM, then SIGKILL, to this PID only.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  void Kill(int sig);
  // Reaps it; false if it is still running after `timeout`.
  bool Wait(std::chrono::milliseconds timeout);
  bool Running();
  // VmRSS from /proc/PID/status, in KiB; 0 if unknown.
  uint64_t RssKib() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

uint64_t RssKibOf(pid_t pid);
// User plus system CPU time the process has used, in seconds; with
// `children`, that of its children it has waited for instead.
double CpuSecondsOf(pid_t pid, bool children = false);

// A fresh directory under /tmp, removed at the end unless
// KeepScratchDirs(true) was called (then its path is printed as a note).
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag);
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};
void KeepScratchDirs(bool keep);

// Where the executables are and what every launch shares.
struct Setup {
  std::string build_dir;      // holds droverd, drover-worker
  std::string docker_socket;  // from DOCKER_HOST or the default
};

// A droverd on ipc:// endpoints in `dir`, its store in dir/data.
class Daemon {
 public:
  Daemon(const Setup& setup, std::string dir,
         std::vector<std::string> extra_flags = {});
  ~Daemon();

  // Starts droverd; with `wait_ready`, returns once it answers a request.
  Status Start(bool wait_ready = true);
  // Waits until a `workers` request is answered.
  Status WaitReady(std::chrono::milliseconds timeout);
  void Kill(int sig);  // by PID; reaps it after SIGKILL
  Process* process() { return process_.get(); }
  const std::string& dir() const { return dir_; }
  std::string data_dir() const { return dir_ + "/data"; }
  // Where droverd keeps its LevelDB store: --data-dir/db.
  std::string store_dir() const { return data_dir() + "/db"; }
  std::string api() const { return "ipc://" + dir_ + "/api"; }
  std::string tasks() const { return "ipc://" + dir_ + "/tasks"; }
  std::string heartbeat() const { return "ipc://" + dir_ + "/heartbeat"; }
  // Before Start: droverd runs with --auth (CURVE on every socket) in
  // dir/auth, which holds a client key and a worker key that every client
  // and worker of this daemon then uses.
  Status EnableAuth();
  // The keys to connect with: none without EnableAuth.
  const std::optional<ClientKeys>& client_keys() const { return client_keys_; }
  const std::optional<ClientKeys>& worker_keys() const { return worker_keys_; }
  // Starts a real drover-worker connected to this daemon.
  std::unique_ptr<Process> StartWorker(const std::string& name,
                                       std::vector<std::string> flags);
  // Polls `workers` until `name` is ready.
  Status WaitWorkerReady(const std::string& name,
                         std::chrono::milliseconds timeout);

 private:
  const Setup& setup_;
  std::string dir_;
  std::vector<std::string> extra_flags_;
  std::optional<ClientKeys> client_keys_, worker_keys_;
  std::unique_ptr<Process> process_;
  int starts_ = 0;
};

// Submits many jobs over one DEALER with many requests in flight, so
// droverd stores them in few commits (as many clients would).
class Submitter {
 public:
  Submitter(zmq::context_t& ctx, const std::string& api,
            const std::optional<ClientKeys>& keys = std::nullopt);
  // Submits every source, at most `window` unanswered at once. The job ids
  // in order, or the first error.
  Result<std::vector<std::string>> SubmitAll(
      const std::vector<std::string>& sources, size_t window = 64,
      std::chrono::milliseconds timeout = std::chrono::seconds(120));

 private:
  zmq::socket_t socket_;
  uint64_t next_id_ = 0;
};

// Job files. Each task is a root (depends_on = []) so all may run at once.
std::string ShellJob(const std::string& name, size_t tasks,
                     const std::string& run);
std::string DockerJob(const std::string& name, size_t tasks,
                      const std::string& image, const std::string& run);

// The p-th percentile (0..100) of `v` (sorted here), nearest rank.
double Percentile(std::vector<double> v, double p);
double Median(std::vector<double> v);

// One figure: "name value unit", flushed at once.
void Figure(const std::string& name, double value, const std::string& unit);
// A context line: "# text".
void Note(const std::string& text);

}  // namespace drover::bench

#endif  // DROVER_BENCH_BENCH_UTIL_H_
