#include "shell_runtime.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

std::vector<std::string> Environment(const TaskRun& task,
                                     const std::filesystem::path& scratch,
                                     const std::filesystem::path& output) {
  std::map<std::string, std::string> env;
  const char* path = getenv("PATH");
  env["PATH"] = path ? path : "/usr/local/bin:/usr/bin:/bin";
  const char* home = getenv("HOME");
  env["HOME"] = home ? home : "/";
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
// A file behind a symbolic link is read all the same; anything but a
// regular file (a fifo, a device) is not read at all.
bool TakeOutput(const std::filesystem::path& path, size_t limit,
                std::string* out) {
  int fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  bool own = fd >= 0;
  if (fd < 0) fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  Fd f{fd};
  struct stat st;
  if (fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
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
                std::stop_token stop, std::chrono::milliseconds grace) {
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
  spec.env = Environment(task, scratch, output);
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
// of this user, mode 0755, holding nothing but the `allowed` entries, each
// of the given type (DT_DIR, DT_REG).
bool HoldsOnly(const std::filesystem::path& path,
               std::initializer_list<std::pair<std::string_view, unsigned char>>
                   allowed) {
  Fd dir{open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (dir.fd < 0) return false;
  struct stat st;
  static const uid_t self = geteuid();
  if (fstat(dir.fd, &st) != 0 || (st.st_mode & 07777) != 0755 ||
      st.st_uid != self) {
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

ShellRuntime::ShellRuntime(std::filesystem::path work_dir,
                           std::chrono::milliseconds kill_grace)
    : work_dir_(std::move(work_dir)), kill_grace_(kill_grace) {}

ShellRuntime::~ShellRuntime() {
  std::error_code ec;
  for (const AttemptDir& dir : spare_dirs_) {
    std::filesystem::remove_all(dir.path, ec);
  }
}

Result<ShellRuntime::AttemptDir> ShellRuntime::TakeDir() {
  {
    std::lock_guard lock(mu_);
    if (!spare_dirs_.empty()) {
      AttemptDir dir = std::move(spare_dirs_.back());
      spare_dirs_.pop_back();
      return dir;
    }
  }
  // Plain system calls rather than std::filesystem's, which stat every
  // path component.
  AttemptDir dir;
  dir.path = work_dir_ / ("attempt-" + UniqueSuffix());
  const std::filesystem::path scratch = dir.path / "scratch";
  const std::filesystem::path output = dir.path / "output";
  int fd = -1;
  if (mkdir(dir.path.c_str(), 0755) != 0 || mkdir(scratch.c_str(), 0755) != 0 ||
      (fd = open(output.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                 0644)) < 0) {
    const std::string why = strerror(errno);
    std::error_code ec;
    std::filesystem::remove_all(dir.path, ec);
    return Status::IOError("cannot create the scratch directory " +
                           scratch.string() + ": " + why);
  }
  close(fd);
  return dir;
}

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

}  // namespace

void ShellRuntime::ReturnDir(AttemptDir dir, bool reusable) {
  const std::filesystem::path scratch = dir.path / "scratch";
  struct stat top, sc;
  if (reusable && lstat(dir.path.c_str(), &top) == 0 &&
      lstat(scratch.c_str(), &sc) == 0) {
    // Entries are made, removed or renamed in a directory only by changing
    // its times: one whose times have not moved since it was last found as
    // drover made it still is, and need not be read again.
    const bool unchanged = dir.top.trusted && dir.scratch.trusted &&
                           SameStat(top, dir.top.st) &&
                           SameStat(sc, dir.scratch.st);
    if (unchanged || (HoldsOnly(dir.path, {{"scratch", DT_DIR},
                                           {"output", DT_REG},
                                           {"hook-output", DT_REG}}) &&
                      HoldsOnly(scratch, {}))) {
      dir.top = {top, Settled(top)};
      dir.scratch = {sc, Settled(sc)};
      std::lock_guard lock(mu_);
      spare_dirs_.push_back(std::move(dir));
      return;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir.path, ec);
}

RunOutcome ShellRuntime::Run(const TaskRun& task, LogSink& logs,
                             std::stop_token stop) {
  RunOutcome out;
  // An attempt's directory: its scratch directory and output files. One
  // that an attempt leaves as it found it serves a later attempt: making
  // and removing two directories costs ten times more than checking them.
  Result<AttemptDir> taken = TakeDir();
  if (!taken.ok()) {
    out.error = taken.status().message();
    out.infrastructure = true;
    return out;
  }
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
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) close(fd);
    }
    Step s = RunProcess(step_task, scratch, out_file, logs, stop, kill_grace_);
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
  out.error = result.error;
  out.timed_out = result.timed_out;
  out.cancelled = result.cancelled;
  // Read, and emptied, even if the main task never ran: its pre tasks
  // know where it is, and what they wrote there is not the output.
  std::string written;
  const bool own_output = TakeOutput(output, kMaxOutputBytes, &written);
  if (main_ran) out.output = std::move(written);
  ReturnDir(std::move(*taken), own_output);
  return out;
}

}  // namespace drover
