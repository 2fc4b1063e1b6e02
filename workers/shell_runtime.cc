#include "shell_runtime.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "process_spawn.h"

namespace drover {
namespace {

using Clock = std::chrono::steady_clock;

struct Step {
  int32_t exit_code = -1;
  std::string error;
  bool timed_out = false;
  bool cancelled = false;
};

// Closes a descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(getpid()) + "-" + std::to_string(counter++);
}

// How a cell's processes start: as whom, in which cgroup.
struct Credentials {
  int64_t uid = -1;  // -1: the worker's
  bool drop_groups = false;
  Cgroup* cgroup = nullptr;
};

std::vector<std::string> Environment(const TaskRun& task,
                                     const std::filesystem::path& scratch,
                                     const std::filesystem::path& output,
                                     const Credentials& as) {
  std::map<std::string, std::string> env;
  const char* path = getenv("PATH");
  env["PATH"] = path ? path : "/usr/local/bin:/usr/bin:/bin";
  // A uid of its own has no home of the worker's to use.
  const char* home = getenv("HOME");
  env["HOME"] = as.uid >= 0 ? scratch.string() : home ? home : "/";
  for (const auto& [k, v] : task.env) env[k] = v;
  env["DROVER_OUTPUT"] = output.string();
  env["DROVER_SCRATCH"] = scratch.string();
  env["DROVER_JOB_ID"] = task.job_id;
  env["DROVER_TASK"] = task.task_name;
  env["DROVER_ATTEMPT"] = std::to_string(task.attempt);
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

// Waits up to `timeout` for `pid` to exit, without reaping it: on a pidfd,
// so the caller learns of the exit at once instead of after a fixed sleep
// (which cost up to 10 ms a task).
void AwaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {  // a kernel before 5.3
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  pollfd p = {fd, POLLIN, 0};
  poll(&p, 1, static_cast<int>(timeout.count()));
  close(fd);
}

// Reads the first `limit` bytes of the attempt's output file into `out`
// and empties the file for the next attempt in its directory. Returns
// whether the file is still a plain file of its own (not a link, nor linked
// from elsewhere): only then is it emptied, and the directory used again.
// A file behind a symbolic link is read all the same when the task ran as
// the worker's own user (`owner` -1): it could read it itself. For a task
// of another uid, whose files the worker can read and it cannot, only a
// regular file of that uid is read. Anything but a regular file (a fifo, a
// device) is not read at all.
bool TakeOutput(const std::filesystem::path& path, size_t limit,
                std::string* out, int64_t owner) {
  int fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  bool own = fd >= 0;
  if (fd < 0 && owner < 0) {
    fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  }
  if (fd < 0) return false;
  Fd f{fd};
  struct stat st;
  if (fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (owner >= 0 && st.st_uid != static_cast<uid_t>(owner)) return false;
  own = own && st.st_nlink == 1;
  if (st.st_size == 0) return own;  // most tasks write none
  char buf[4096];
  while (out->size() < limit) {
    const ssize_t n =
        read(f.fd, buf, std::min(sizeof buf, limit - out->size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  return own && ftruncate(f.fd, 0) == 0;
}

std::string Describe(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

// Runs one process to its end, streaming its output to `logs`.
Step RunProcess(const TaskRun& task, const std::filesystem::path& scratch,
                const std::filesystem::path& output, LogSink& logs,
                std::stop_token stop, std::chrono::milliseconds grace,
                const Credentials& as) {
  Step step;
  std::vector<std::string> argv;
  if (!task.run.empty()) {
    argv = {"/bin/sh", "-c", task.run};
  } else {
    argv = task.entrypoint;
    argv.insert(argv.end(), task.cmd.begin(), task.cmd.end());
  }
  if (argv.empty()) {
    step.error = "task has neither run nor cmd";
    return step;
  }
  if (!task.user.empty()) {
    step.error = "the shell runtime cannot run a task as user '" + task.user +
                 "'; use an image with the docker runtime";
    return step;
  }
  SpawnSpec spec;
  if (!task.run.empty()) {
    // A plain command runs without a shell in between, as bash -c does;
    // /bin/sh takes over whenever that exec fails (process_spawn.h).
    spec.argv = DirectArgv(task.run);
    if (!spec.argv.empty()) spec.fallback = std::move(argv);
  }
  if (spec.argv.empty()) spec.argv = std::move(argv);
  spec.env = Environment(task, scratch, output, as);
  spec.uid = as.uid;
  spec.gid = as.uid;
  spec.drop_groups = as.drop_groups;
  if (as.cgroup != nullptr) spec.cgroup_procs_fd = as.cgroup->procs_fd();
  for (const std::string& e : spec.env) {
    if (e.compare(0, 5, "PATH=") == 0) spec.search_path = e.substr(5);
  }
  spec.cwd = task.workdir.empty() ? scratch.string() : task.workdir;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    step.error = std::string("pipe: ") + strerror(errno);
    return step;
  }
  Fd out_r{out_pipe[0]}, out_w{out_pipe[1]};
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    step.error = std::string("pipe: ") + strerror(errno);
    return step;
  }
  Fd err_r{err_pipe[0]}, err_w{err_pipe[1]};
  spec.stdout_fd = out_w.fd;
  spec.stderr_fd = err_w.fd;
  Result<pid_t> spawned = SpawnProcess(spec);
  close(out_w.fd);
  out_w.fd = -1;
  close(err_w.fd);
  err_w.fd = -1;
  if (!spawned.ok()) {
    step.error = spawned.status().message();
    return step;
  }
  const pid_t pid = *spawned;

  const auto start = Clock::now();
  const bool has_deadline = task.timeout.count() > 0;
  const auto deadline = start + task.timeout;
  std::optional<Clock::time_point> kill_at;  // SIGKILL after the grace
  std::optional<Clock::time_point> drain_until;
  bool exited = false;
  int status = 0;
  char buf[16384];
  pollfd fds[2] = {{out_r.fd, POLLIN, 0}, {err_r.fd, POLLIN, 0}};
  auto terminate = [&] {
    if (kill_at) return;
    kill(-pid, SIGTERM);
    kill_at = Clock::now() + grace;
  };
  while (true) {
    int open_fds = (fds[0].fd >= 0) + (fds[1].fd >= 0);
    if (open_fds > 0) {
      poll(fds, 2, 50);
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          logs.Write(i == 0 ? 'o' : 'e', std::string_view(buf, n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          fds[i].fd = -1;
        }
      }
    } else if (!exited) {
      AwaitExit(pid, std::chrono::milliseconds(50));
    }
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      // Children it left behind may hold the pipes open: read what they
      // print for a moment, then stop the whole group.
      drain_until = Clock::now() + std::chrono::milliseconds(200);
    }
    const auto now = Clock::now();
    if (exited) {
      if ((fds[0].fd < 0 && fds[1].fd < 0) || now >= *drain_until) {
        kill(-pid, SIGKILL);
        // setsid children too, which may hold the pipes.
        if (as.cgroup != nullptr) as.cgroup->KillAll(std::chrono::milliseconds(0));
        break;
      }
      continue;
    }
    if (stop.stop_requested() && !step.cancelled && !step.timed_out) {
      step.cancelled = true;
      terminate();
    }
    if (has_deadline && now >= deadline && !step.cancelled && !step.timed_out) {
      step.timed_out = true;
      terminate();
    }
    if (kill_at && now >= *kill_at) {
      kill(-pid, SIGKILL);
      if (as.cgroup != nullptr) as.cgroup->KillAll(std::chrono::milliseconds(0));
      kill_at = Clock::time_point::max();
    }
  }
  if (WIFEXITED(status)) {
    step.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    step.exit_code = 128 + WTERMSIG(status);
    if (!step.timed_out && !step.cancelled) {
      step.error = "killed by signal " + std::to_string(WTERMSIG(status));
    }
  }
  if (step.timed_out) step.error = "timed out after " + Describe(task.timeout);
  if (step.cancelled) step.error = "cancelled";
  return step;
}

// Whether the directory at `path` is as drover made it: a real directory
// of `owner`, mode 0700, holding nothing but the `allowed` entries, each
// of the given type (DT_DIR, DT_REG).
bool HoldsOnly(const std::filesystem::path& path, uid_t owner,
               std::initializer_list<std::pair<std::string_view, unsigned char>>
                   allowed) {
  Fd dir{open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (dir.fd < 0) return false;
  struct stat st;
  if (fstat(dir.fd, &st) != 0 || (st.st_mode & 07777) != 0700 ||
      st.st_uid != owner) {
    return false;
  }
  alignas(8) char buf[2048];
  while (true) {
    const long n = syscall(SYS_getdents64, dir.fd, buf, sizeof buf);
    if (n < 0) return false;
    if (n == 0) return true;
    for (long off = 0; off < n;) {
      const auto* e = reinterpret_cast<const dirent64*>(buf + off);
      off += e->d_reclen;
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      bool ok = false;
      for (const auto& [allowed_name, type] : allowed) {
        ok = ok || (name == allowed_name && e->d_type == type);
      }
      if (!ok) return false;
    }
  }
}

}  // namespace


namespace {

bool SameStat(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino &&
         a.st_mode == b.st_mode && a.st_uid == b.st_uid &&
         a.st_nlink == b.st_nlink && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// Whether nothing changed in the directory `st` describes for a second
// (two clock seconds apart: at least one whole second).
bool Settled(const struct stat& st) {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec - std::max(st.st_mtim.tv_sec, st.st_ctim.tv_sec) >= 2;
}

// This process's effective capabilities (CapEff in /proc/self/status).
uint64_t EffectiveCapabilities() {
  Fd f{open("/proc/self/status", O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return 0;
  char buf[4096];
  const ssize_t n = read(f.fd, buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* at = strstr(buf, "CapEff:");
  return at == nullptr ? 0 : strtoull(at + 7, nullptr, 16);
}

constexpr int kCapChown = 0, kCapDacOverride = 1, kCapFowner = 3,
              kCapKill = 5, kCapSetgid = 6, kCapSetuid = 7;

// Whether this process is in supplementary groups other than its own.
bool HasOtherGroups() {
  const int n = getgroups(0, nullptr);
  if (n <= 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgroups(n, groups.data()) < 0) return true;
  const gid_t own = getegid();
  return std::any_of(groups.begin(), groups.end(),
                     [&](gid_t g) { return g != own; });
}

// Kills every process of `uid` (but the caller), from a child that becomes
// that uid: kill(-1) as a user reaches exactly that user's processes.
void KillUid(int64_t uid) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (syscall(SYS_setresuid, uid, uid, uid) == 0) kill(-1, SIGKILL);
    _exit(0);
  }
  if (pid > 0) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace

Result<UidRange> ParseUidRange(std::string_view text) {
  const size_t dash = text.find('-');
  uint64_t first = 0, last = 0;
  auto number = [](std::string_view s, uint64_t* v) {
    if (s.empty() || s.size() > 10 ||
        s.find_first_not_of("0123456789") != std::string_view::npos) {
      return false;
    }
    *v = std::stoull(std::string(s));
    return true;
  };
  if (dash == std::string_view::npos || !number(text.substr(0, dash), &first) ||
      !number(text.substr(dash + 1), &last)) {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a uid range such as 61000-61063");
  }
  if (first == 0 || last < first || last >= 0xffffffffull) {
    return Status::InvalidArgument(
        "'" + std::string(text) +
        "': the range must be FIRST-LAST with 0 < FIRST <= LAST");
  }
  return UidRange{static_cast<uint32_t>(first),
                  static_cast<uint32_t>(last - first + 1)};
}

ShellRuntime::ShellRuntime(ShellRuntimeOptions options)
    : options_(std::move(options)),
      instance_([] {
        static std::atomic<int> next{0};
        return next++;
      }()),
      self_(geteuid()) {}

ShellRuntime::~ShellRuntime() {
  std::error_code ec;
  for (auto& cell : free_cells_) {
    if (cell->spare) std::filesystem::remove_all(cell->spare->path, ec);
  }
}

Status ShellRuntime::Start(std::vector<std::string>* notes) {
  std::call_once(started_, [&] {
    const uint64_t caps = EffectiveCapabilities();
    auto has = [&](int cap) { return (caps >> cap) & 1; };
    // Never the worker's groups: a `docker` group is root on the host.
    drop_groups_ = has(kCapSetgid);
    if (!drop_groups_ && HasOtherGroups()) {
      start_status_ = Status::PermissionDenied(
          "shell tasks would run in the worker's supplementary groups, "
          "which it cannot drop: run the worker as a user without them, "
          "give it CAP_SETGID (the systemd unit does), or set shell_uids");
      return;
    }
    if (options_.uids.count > 0) {
      std::string missing;
      for (const auto& [cap, name] :
           {std::pair{kCapSetuid, "CAP_SETUID"}, {kCapSetgid, "CAP_SETGID"},
            {kCapChown, "CAP_CHOWN"}, {kCapDacOverride, "CAP_DAC_OVERRIDE"},
            {kCapFowner, "CAP_FOWNER"}, {kCapKill, "CAP_KILL"}}) {
        if (!has(cap)) missing += std::string(missing.empty() ? "" : ", ") + name;
      }
      if (!missing.empty()) {
        start_status_ = Status::PermissionDenied(
            "shell_uids needs the worker to run as root or with " + missing);
        return;
      }
      if (options_.uids.count < options_.slots) {
        start_status_ = Status::InvalidArgument(
            "shell_uids holds " + std::to_string(options_.uids.count) +
            " uids for " + std::to_string(options_.slots) +
            " slots: give each slot one");
        return;
      }
      // The cells' uids must reach their directories in the work dir.
      std::error_code ec;
      std::filesystem::permissions(
          options_.work_dir,
          std::filesystem::perms::owner_all | std::filesystem::perms::others_exec,
          ec);
      for (std::filesystem::path p =
               std::filesystem::absolute(options_.work_dir, ec);
           ; p = p.parent_path()) {
        struct stat st;
        if (stat(p.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) {
          start_status_ = Status::PermissionDenied(
              "shell_uids: the work dir " + options_.work_dir.string() +
              " is out of the tasks' reach: " + p.string() +
              " is not searchable by other users (chmod o+x, or choose "
              "another work dir)");
          return;
        }
        if (p == p.parent_path()) break;
      }
    } else {
      std::error_code ec;
      std::filesystem::permissions(options_.work_dir,
                                   std::filesystem::perms::owner_all, ec);
    }
    if (options_.cgroups) {
      auto root = CgroupRoot::Open();
      if (root.ok()) {
        cgroups_ = std::move(*root);
      } else if (notes != nullptr) {
        notes->push_back(
            "shell tasks run without a cgroup of their own (" +
            root.status().message() + ")" +
            (options_.uids.count > 0
                 ? ": what a task leaves running is killed by its uid"
                 : ": a task's processes that leave its process group "
                   "(setsid) can outlive it; delegate a cgroup to the "
                   "worker (systemd: Delegate=yes) or set shell_uids"));
      }
    }
  });
  return start_status_;
}

uid_t ShellRuntime::OwnerOf(const Cell& cell) const {
  return cell.uid >= 0 ? static_cast<uid_t>(cell.uid) : self_;
}

std::unique_ptr<ShellRuntime::Cell> ShellRuntime::TakeCell(Status* error) {
  std::lock_guard lock(mu_);
  if (!free_cells_.empty()) {
    auto cell = std::move(free_cells_.back());
    free_cells_.pop_back();
    return cell;
  }
  const int n = next_cell_;
  if (options_.uids.count > 0 && static_cast<uint32_t>(n) >= options_.uids.count) {
    *error = Status::Internal("more shell tasks at once than shell_uids");
    return nullptr;
  }
  auto cell = std::make_unique<Cell>();
  cell->n = n;
  if (options_.uids.count > 0) cell->uid = options_.uids.first + n;
  if (cgroups_) {
    auto cg = cgroups_->Make(instance_, n);
    if (!cg.ok()) {
      *error = cg.status();
      return nullptr;
    }
    cell->cgroup = std::move(*cg);
  }
  ++next_cell_;
  return cell;
}

void ShellRuntime::ReturnCell(std::unique_ptr<Cell> cell) {
  std::lock_guard lock(mu_);
  free_cells_.push_back(std::move(cell));
}

void ShellRuntime::KillLeftovers(Cell& cell) {
  if (cell.cgroup) {
    cell.cgroup->KillAll(std::chrono::seconds(1));
  } else if (cell.uid >= 0) {
    KillUid(cell.uid);
  }
}

Result<ShellRuntime::AttemptDir> ShellRuntime::TakeDir(Cell& cell) {
  if (cell.spare) {
    AttemptDir dir = std::move(*cell.spare);
    cell.spare.reset();
    return dir;
  }
  // Plain system calls rather than std::filesystem's, which stat every
  // path component.
  AttemptDir dir;
  dir.path = options_.work_dir / ("attempt-" + UniqueSuffix());
  const std::filesystem::path scratch = dir.path / "scratch";
  const std::filesystem::path output = dir.path / "output";
  const uid_t owner = OwnerOf(cell);
  int fd = -1;
  // The cell's alone: its uid owns them, nobody else may look in.
  const bool made =
      mkdir(dir.path.c_str(), 0700) == 0 && mkdir(scratch.c_str(), 0700) == 0 &&
      (fd = open(output.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                 0600)) >= 0 &&
      (owner == self_ ||
       (fchown(fd, owner, owner) == 0 &&
        lchown(scratch.c_str(), owner, owner) == 0 &&
        lchown(dir.path.c_str(), owner, owner) == 0));
  const std::string why = strerror(errno);
  if (fd >= 0) close(fd);
  if (!made) {
    std::error_code ec;
    std::filesystem::remove_all(dir.path, ec);
    return Status::IOError("cannot create the scratch directory " +
                           scratch.string() + ": " + why);
  }
  return dir;
}

void ShellRuntime::ReturnDir(Cell& cell, AttemptDir dir, bool reusable) {
  const std::filesystem::path scratch = dir.path / "scratch";
  const uid_t owner = OwnerOf(cell);
  struct stat top, sc;
  if (reusable && lstat(dir.path.c_str(), &top) == 0 &&
      lstat(scratch.c_str(), &sc) == 0) {
    // Entries are made, removed or renamed in a directory only by changing
    // its times: one whose times have not moved since it was last found as
    // drover made it still is, and need not be read again.
    const bool unchanged = dir.top.trusted && dir.scratch.trusted &&
                           SameStat(top, dir.top.st) &&
                           SameStat(sc, dir.scratch.st);
    if (unchanged || (HoldsOnly(dir.path, owner,
                                {{"scratch", DT_DIR},
                                 {"output", DT_REG},
                                 {"hook-output", DT_REG}}) &&
                      HoldsOnly(scratch, owner, {}))) {
      dir.top = {top, Settled(top)};
      dir.scratch = {sc, Settled(sc)};
      cell.spare = std::move(dir);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir.path, ec);
}

RunOutcome ShellRuntime::Run(const TaskRun& task, LogSink& logs,
                             std::stop_token stop) {
  RunOutcome out;
  if (Status st = Start(nullptr); !st.ok()) {
    out.error = st.message();
    out.infrastructure = true;
    return out;
  }
  Status cell_error;
  std::unique_ptr<Cell> cell = TakeCell(&cell_error);
  if (!cell) {
    out.error = cell_error.message();
    out.infrastructure = true;
    return out;
  }
  // An attempt's directory: its scratch directory and output files. One
  // that an attempt leaves as it found it serves a later attempt: making
  // and removing two directories costs ten times more than checking them.
  Result<AttemptDir> taken = TakeDir(*cell);
  if (!taken.ok()) {
    ReturnCell(std::move(cell));
    out.error = taken.status().message();
    out.infrastructure = true;
    return out;
  }
  const Credentials as{cell->uid, drop_groups_, cell->cgroup.get()};
  const uid_t owner = OwnerOf(*cell);
  const std::filesystem::path dir = taken->path;
  const std::filesystem::path scratch = dir / "scratch";
  const std::filesystem::path output = dir / "output";
  // The task's output is what its main process writes, as with the Docker
  // runtime, where each pre and post task has a container (and an output
  // file) of its own: theirs go to a file that is thrown away.
  const std::filesystem::path hook_output = dir / "hook-output";
  auto run_step = [&](const TaskRun& t, const std::string& what) {
    TaskRun step_task = t;
    step_task.job_id = task.job_id;
    step_task.attempt = task.attempt;
    const std::filesystem::path& out_file = what.empty() ? output : hook_output;
    // Exists and is empty when the step starts: the main task's output file
    // is made with the directory and emptied when it has been read; a pre or
    // post task's is made anew, so that what an earlier one linked there is
    // never emptied.
    if (!what.empty()) {
      unlink(out_file.c_str());
      const int fd = open(out_file.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) {
        if (owner != self_) (void)!fchown(fd, owner, owner);
        close(fd);
      }
    }
    Step s = RunProcess(step_task, scratch, out_file, logs, stop, options_.kill_grace,
                        as);
    if (s.error.empty() && s.exit_code != 0) {
      s.error = "exited with code " + std::to_string(s.exit_code);
    }
    if (!s.error.empty() && !what.empty()) {
      s.error = what + " '" + t.task_name + "' failed: " + s.error;
    }
    return s;
  };
  Step result;
  bool main_ran = false;
  for (const TaskRun& pre : task.pre) {
    result = run_step(pre, "pre task");
    if (!result.error.empty()) break;
  }
  if (result.error.empty()) {
    result = run_step(task, "");
    main_ran = true;
    out.exit_code = result.exit_code;
    if (result.error ==
        "exited with code " + std::to_string(result.exit_code)) {
      result.error.clear();  // a plain non-zero exit: the exit code says it
    }
    if (result.error.empty() && result.exit_code == 0) {
      for (const TaskRun& post : task.post) {
        result = run_step(post, "post task");
        if (!result.error.empty()) break;
      }
    }
  }
  // Nothing the attempt started outlives it.
  KillLeftovers(*cell);
  out.error = result.error;
  out.timed_out = result.timed_out;
  out.cancelled = result.cancelled;
  // Read, and emptied, even if the main task never ran: its pre tasks
  // know where it is, and what they wrote there is not the output.
  std::string written;
  const bool own_output = TakeOutput(output, kMaxOutputBytes, &written,
                                     cell->uid >= 0 ? cell->uid : -1);
  if (main_ran) out.output = std::move(written);
  ReturnDir(*cell, std::move(*taken), own_output);
  ReturnCell(std::move(cell));
  return out;
}

}  // namespace drover
