// Cgroups for shell tasks: each shell slot of the worker has a cgroup of
// its own (cgroup v2), which every process of its attempt joins before it
// execs. Whatever a task starts stays in it, a `setsid` daemon included,
// so stop, timeout, cancel and the end of the attempt kill all of it.
//
// They live under the worker's own cgroup, as drover-PID-R-N (R: which
// runtime of the process, N: which slot): droverd-less
// hosts with systemd give the worker one it may write (Delegate=yes in
// the unit); a worker run by hand as root writes its own. Where neither
// works (no cgroup v2, no permission), the shell runtime goes without and
// says so at start.
//
// Thread-safety: a Cgroup is used by one attempt at a time; CgroupRoot is
// thread-compatible.
#ifndef DROVER_WORKERS_CGROUP_H_
#define DROVER_WORKERS_CGROUP_H_

#include <chrono>
#include <memory>
#include <string>

#include "drover/status.h"

namespace drover {

class Cgroup {
 public:
  ~Cgroup();  // kills what is left and removes the cgroup
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;

  // cgroup.procs, open for writing: a process that writes "0" joins.
  int procs_fd() const { return procs_fd_; }
  // Whether any process is in it.
  bool Populated() const;
  // Kills every process in it (SIGKILL), and waits up to `wait` until it
  // is empty. False if it is not empty then.
  bool KillAll(std::chrono::milliseconds wait);
  const std::string& path() const { return path_; }

 private:
  friend class CgroupRoot;
  Cgroup(std::string path, int procs_fd, int events_fd, int kill_fd);
  std::string path_;
  int procs_fd_ = -1;
  int events_fd_ = -1;
  int kill_fd_ = -1;  // cgroup.kill (Linux 5.14), or -1
};

class CgroupRoot {
 public:
  // The worker's own cgroup v2 directory, if it can make cgroups in it;
  // else why not. Removes what a dead worker process left there.
  static Result<CgroupRoot> Open();
  // A new cgroup for slot `n` of runtime `r`: drover-PID-R-N.
  Result<std::unique_ptr<Cgroup>> Make(int r, int n) const;
  const std::string& path() const { return path_; }

 private:
  explicit CgroupRoot(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace drover

#endif  // DROVER_WORKERS_CGROUP_H_
