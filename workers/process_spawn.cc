#include "process_spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>

namespace drover {
namespace {

// What the child reads (everything prepared by the parent: the child only
// makes system calls and must not allocate) and writes back on failure.
struct ChildArgs {
  char* const* argv = nullptr;
  char* const* fallback = nullptr;  // null: none
  char* const* envp = nullptr;
  std::string_view search_path;
  std::string_view hint_dir;  // where argv[0] was found lately: tried first
  const char* cwd = nullptr;  // null: unchanged
  int cgroup_procs = -1;
  bool drop_groups = false;
  long uid = -1;
  long gid = -1;
  int devnull = -1;
  int out = -1;
  int err = -1;
  // Written by the child when it fails before or at exec.
  int error = 0;
  const char* step = nullptr;
  // Written by the child before each exec of a PATH search: after a
  // successful one, the directory it ran from.
  std::string_view tried_dir;
};

constexpr int kResetSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM};

// The child's stack. CLONE_VFORK suspends the parent thread until the
// child execs or exits, so one stack per thread is enough.
constexpr size_t kChildStackBytes = 64 * 1024;

[[noreturn]] void Fail(ChildArgs* a, const char* step) {
  a->error = errno;
  a->step = step;
  _exit(127);
}

// Makes `fd` the descriptor `target`, open across exec.
bool MoveTo(int fd, int target) {
  if (fd == target) {
    const int flags = fcntl(fd, F_GETFD);
    return flags >= 0 && fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == 0;
  }
  return dup2(fd, target) == target;
}

// Whether an exec that failed with `err` means "not in this directory".
bool NotHere(int err) {
  return err == ENOENT || err == ENOTDIR || err == ESTALE || err == ENODEV ||
         err == ETIMEDOUT;
}

// Execs `dir`/`name`; returns if that fails (or the path is too long).
void ExecIn(std::string_view dir, const char* name, size_t name_len,
            ChildArgs* a) {
  char buf[PATH_MAX];
  if (dir.size() + 1 + name_len + 1 > sizeof buf) {
    errno = ENAMETOOLONG;
    return;
  }
  memcpy(buf, dir.data(), dir.size());
  buf[dir.size()] = '/';
  memcpy(buf + dir.size() + 1, name, name_len + 1);
  a->tried_dir = dir;
  execve(buf, a->argv, a->envp);
}

// Tries argv[0] in each directory of the search path, as execvp does, the
// hinted one first; returns when none could be exec'd, with errno of the
// most telling failure.
void ExecSearching(ChildArgs* a) {
  const char* name = a->argv[0];
  const size_t name_len = strlen(name);
  if (!a->hint_dir.empty()) {
    ExecIn(a->hint_dir, name, name_len, a);
    if (!NotHere(errno) && errno != EACCES && errno != ENAMETOOLONG) return;
  }
  const std::string_view path = a->search_path;
  int saved = ENOENT;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";  // an empty entry is the working directory
    start = end + 1;
    ExecIn(dir, name, name_len, a);
    if (errno == EACCES) {
      saved = EACCES;  // remembered, as execvp does, but keep looking
    } else if (!NotHere(errno) && errno != ENAMETOOLONG) {
      return;  // found but not runnable as is (ENOEXEC, E2BIG, ...)
    }
  }
  errno = saved;
}

int ChildMain(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  if (setpgid(0, 0) != 0) Fail(a, "setpgid");
  // Into the attempt's cgroup before anything can fork: all it starts is
  // in there, and is killed with it.
  if (a->cgroup_procs >= 0 && write(a->cgroup_procs, "0", 1) != 1) {
    Fail(a, "joining its cgroup");
  }
  // Descriptors 0-2 may be where the output goes if the caller closed its
  // own: move those out of the way first.
  if (a->out < 3 && (a->out = fcntl(a->out, F_DUPFD_CLOEXEC, 3)) < 0) {
    Fail(a, "dup");
  }
  if (a->err < 3 && (a->err = fcntl(a->err, F_DUPFD_CLOEXEC, 3)) < 0) {
    Fail(a, "dup");
  }
  if (!MoveTo(a->devnull, 0) || !MoveTo(a->out, 1) || !MoveTo(a->err, 2)) {
    Fail(a, "dup2");
  }
  // The credentials, groups first (while it may still change them).
  if (a->drop_groups && syscall(SYS_setgroups, 0, nullptr) != 0) {
    Fail(a, "setgroups");
  }
  if (a->gid >= 0 && syscall(SYS_setresgid, a->gid, a->gid, a->gid) != 0) {
    Fail(a, "setresgid");
  }
  if (a->uid >= 0 && syscall(SYS_setresuid, a->uid, a->uid, a->uid) != 0) {
    Fail(a, "setresuid");
  }
  // What the worker may hold (ambient capabilities under systemd) is not
  // the task's, and no setuid program gives it more.
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail(a, "no_new_privs");
  // No descriptor of the worker's but the three: whatever it opened
  // without O_CLOEXEC stays out of reach. (Kernels before 5.9 lack the
  // call; there O_CLOEXEC alone keeps them.)
  syscall(SYS_close_range, 3U, ~0U, 0U);
  if (a->cwd != nullptr && chdir(a->cwd) != 0) Fail(a, "chdir");
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig : kResetSignals) sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // From here a signal sent to the new group takes its default action.
  const char* name = a->argv[0];
  if (strchr(name, '/') != nullptr) {
    execve(name, a->argv, a->envp);
  } else {
    ExecSearching(a);
  }
  a->tried_dir = {};
  if (a->fallback != nullptr) execve(a->fallback[0], a->fallback, a->envp);
  Fail(a, "exec");
}

std::vector<char*> CStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const std::string& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

int DevNull() {
  static const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

bool IsPlainWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || std::string_view("_-./:,+%@=").find(c) !=
                                       std::string_view::npos;
}

// dash's builtins and reserved words: these must go through the shell.
constexpr std::string_view kShellWords[] = {
    ".",       ":",      "[",       "alias",    "bg",       "break",
    "case",    "cd",     "chdir",   "command",  "continue", "do",
    "done",    "echo",   "elif",    "else",     "esac",     "eval",
    "exec",    "exit",   "export",  "false",    "fc",       "fg",
    "fi",      "for",    "getopts", "hash",     "if",       "in",
    "jobs",    "kill",   "local",   "printf",   "pwd",      "read",
    "readonly", "return", "set",    "shift",    "test",     "then",
    "times",   "trap",   "true",    "type",     "ulimit",   "umask",
    "unalias", "unset",  "until",   "wait",     "while",    "function",
    "select",  "source", "let",     "declare",  "typeset",  "time",
};

// Where commands were found on their search path lately, as a shell's hash
// table keeps it: a task that runs `make` a thousand times would otherwise
// try every directory before make's own on each spawn, an exec that fails
// each time. An entry is trusted for a second, so a command installed
// earlier on the path is picked up within that.
class FoundDirs {
 public:
  static std::string Key(const SpawnSpec& spec) {
    return spec.argv[0] + '\n' + spec.search_path;
  }
  std::string Get(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = dirs_.find(key);
    if (it == dirs_.end()) return "";
    if (std::chrono::steady_clock::now() - it->second.at > kTrusted) {
      dirs_.erase(it);
      return "";
    }
    return it->second.dir;
  }
  void Put(const std::string& key, std::string_view dir) {
    std::lock_guard lock(mu_);
    if (dirs_.size() >= kMaxEntries && !dirs_.count(key)) dirs_.clear();
    dirs_[key] = {std::string(dir), std::chrono::steady_clock::now()};
  }

 private:
  static constexpr auto kTrusted = std::chrono::seconds(1);
  static constexpr size_t kMaxEntries = 256;
  struct Entry {
    std::string dir;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Entry> dirs_;
};

FoundDirs& Found() {
  static FoundDirs found;
  return found;
}

}  // namespace

std::vector<std::string> DirectArgv(std::string_view script) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < script.size()) {
    const char c = script[i];
    if (c == ' ' || c == '\t') {
      ++i;
      continue;
    }
    if (!IsPlainWordChar(c)) return {};
    size_t j = i;
    while (j < script.size() && IsPlainWordChar(script[j])) ++j;
    words.emplace_back(script.substr(i, j - i));
    i = j;
  }
  if (words.empty()) return {};
  const std::string& first = words.front();
  if (first.find('=') != std::string::npos) return {};  // an assignment
  if ((first == "true" || first == "false") && words.size() == 1) {
    return words;  // the programs behave as the builtins when given nothing
  }
  for (std::string_view w : kShellWords) {
    if (first == w) return {};
  }
  return words;
}

Result<pid_t> SpawnProcess(const SpawnSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return Status::InvalidArgument("nothing to run");
  }
  const int devnull = DevNull();
  if (devnull < 0) {
    return Status::Internal(std::string("cannot open /dev/null: ") +
                            strerror(errno));
  }
  std::vector<char*> argv = CStrings(spec.argv);
  std::vector<char*> fallback;
  if (!spec.fallback.empty()) fallback = CStrings(spec.fallback);
  std::vector<char*> envp = CStrings(spec.env);
  ChildArgs args;
  args.argv = argv.data();
  args.fallback = fallback.empty() ? nullptr : fallback.data();
  args.envp = envp.data();
  args.search_path = spec.search_path;
  const bool searching = spec.argv[0].find('/') == std::string::npos;
  const std::string found_key = searching ? FoundDirs::Key(spec) : "";
  const std::string hint = searching ? Found().Get(found_key) : "";
  args.hint_dir = hint;
  args.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  args.cgroup_procs = spec.cgroup_procs_fd;
  args.drop_groups = spec.drop_groups;
  args.uid = static_cast<long>(spec.uid);
  args.gid = static_cast<long>(spec.gid);
  args.devnull = devnull;
  args.out = spec.stdout_fd;
  args.err = spec.stderr_fd;

  thread_local std::unique_ptr<char[]> stack(new char[kChildStackBytes]);
  // The stack grows down on every architecture Linux runs drover on; keep
  // the top 16-byte aligned.
  const uintptr_t top =
      (reinterpret_cast<uintptr_t>(stack.get()) + kChildStackBytes) &
      ~uintptr_t{15};

  // Blocked from before the clone until the child's last call before exec,
  // so no handler of this process ever runs on the child's stack.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  const pid_t pid = clone(ChildMain, reinterpret_cast<void*>(top),
                          CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    return Status::Internal(std::string("cannot start '") + spec.argv[0] +
                            "': clone: " + strerror(clone_errno));
  }
  if (args.step != nullptr) {  // the child failed and has exited
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const std::string why = strerror(args.error);
    if (std::string_view(args.step) == "chdir") {
      return Status::NotFound("cannot change to the working directory '" +
                              spec.cwd + "': " + why);
    }
    const std::string& what =
        spec.fallback.empty() ? spec.argv[0] : spec.fallback[0];
    if (std::string_view(args.step) == "exec") {
      return Status::NotFound("cannot start '" + what + "': " + why);
    }
    if (args.error == EPERM &&
        std::string_view(args.step).starts_with("set")) {
      return Status::PermissionDenied("cannot start '" + what + "': " +
                                      args.step + ": " + why);
    }
    return Status::Internal("cannot start '" + what + "': " + args.step +
                            ": " + why);
  }
  // Exec'd from a directory of the search path (not the fallback).
  // A relative directory depends on the working directory: not kept.
  if (searching && args.tried_dir.starts_with('/') && args.tried_dir != hint) {
    Found().Put(found_key, args.tried_dir);
  }
  return pid;
}

}  // namespace drover
