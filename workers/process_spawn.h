// SpawnProcess: starts a task's process for the shell runtime in fewer
// system calls than posix_spawn.
//
// Like glibc's posix_spawn, the child is a clone(CLONE_VM | CLONE_VFORK)
// of the calling thread on a small stack of its own: no page tables are
// copied, and the caller is suspended until the child has called execve.
// Unlike it, the child does not query and reset every one of the 64 signal
// dispositions (about 130 calls on every spawn): all signals stay blocked
// from before the clone until the execve, the few that drover itself
// handles, ignores or sends (SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM) are
// reset to their defaults, and the empty signal mask is set as the last call
// before execve. Nothing but the child's new process group can signal it in
// that window, and drover signals a group only with SIGTERM and SIGKILL.
//
// The child, in order: a process group of its own, the cgroup it is to
// join, stdin from /dev/null, stdout and stderr to the given descriptors,
// the credentials (no supplementary groups, then the gid and uid), no new
// privileges and no ambient capabilities, every other descriptor closed,
// the working directory, the signal dispositions and mask, then execve.
// Credentials are set with raw system calls: glibc's setuid() would ask
// every thread of the worker to change too, which a CLONE_VM child must
// never do. `argv[0]` without a '/' is
// looked up in `search_path` (a PATH value) as execvp does. If that exec
// fails and a `fallback` argv is given, the child execs it instead; this is
// how a plain `run` command runs without a shell in between, while anything
// the direct exec cannot do (a command that is not found, a script without
// `#!`) is left to /bin/sh, which then behaves and reports exactly as it
// always does.
#ifndef DROVER_WORKERS_PROCESS_SPAWN_H_
#define DROVER_WORKERS_PROCESS_SPAWN_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "drover/status.h"

namespace drover {

struct SpawnSpec {
  std::vector<std::string> argv;      // what to run; argv[0] is the program
  std::vector<std::string> fallback;  // run instead if argv cannot be exec'd
  std::vector<std::string> env;       // "NAME=value" each; nothing else
  std::string search_path;            // PATH for an argv[0] without '/'
  std::string cwd;                    // empty: the caller's
  int stdout_fd = -1;                 // required
  int stderr_fd = -1;                 // required
  // A cgroup's cgroup.procs, open for writing: the child joins it first.
  int cgroup_procs_fd = -1;
  // Drop every supplementary group (needs CAP_SETGID).
  bool drop_groups = false;
  // Become this user and group (needs CAP_SETUID and CAP_SETGID); -1: keep.
  int64_t uid = -1;
  int64_t gid = -1;
};

// Starts the process and returns its pid (also its process group id). The
// caller reaps it. An error names the step that failed (chdir, exec) and
// the reason; no process is left behind then.
Result<pid_t> SpawnProcess(const SpawnSpec& spec);

// The argv that runs `script` without a shell, or an empty vector if that
// would behave differently from `/bin/sh -c script`: the script must be a
// single simple command of plain words (letters, digits and `_-./:,+%@=`,
// separated by blanks), whose first word is not an assignment and is not a
// shell builtin or reserved word, apart from `true` and `false` standing
// alone.
std::vector<std::string> DirectArgv(std::string_view script);

}  // namespace drover

#endif  // DROVER_WORKERS_PROCESS_SPAWN_H_
