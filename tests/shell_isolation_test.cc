// The shell runtime's isolation (workers/shell_runtime.h), with real
// processes, real cgroups and real uids: no supplementary groups of the
// worker, a uid per slot, nothing inherited, nothing left running. Run as
// root, as the test suite is.
#include "shell_runtime.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>

namespace drover {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class CaptureSink : public LogSink {
 public:
  void Write(char stream, std::string_view data) override {
    std::lock_guard lock(mu_);
    (stream == 'o' ? out_ : stream == 'e' ? err_ : notes_).append(data);
  }
  std::string out() {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string err() {
    std::lock_guard lock(mu_);
    return err_;
  }

 private:
  std::mutex mu_;
  std::string out_, err_, notes_;
};

// A work dir the tasks' uids can reach (as a worker's must be).
struct WorkDir {
  fs::path path;
  WorkDir() {
    char tmpl[] = "/tmp/drover-shell-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~WorkDir() { fs::remove_all(path); }
};

ShellRuntimeOptions Options(const WorkDir& w, UidRange uids = {},
                            uint32_t slots = 1, bool cgroups = true) {
  ShellRuntimeOptions o;
  o.work_dir = w.path;
  o.kill_grace = 500ms;
  o.uids = uids;
  o.slots = slots;
  o.cgroups = cgroups;
  return o;
}

TaskRun Task(std::string run) {
  static int n = 0;
  TaskRun t;
  t.job_id = "job" + std::to_string(++n);
  t.task_name = "t";
  t.run = std::move(run);
  return t;
}

// Whether `pid` has ended: gone, or a zombie (an orphan waits for its new
// parent, init here, to reap it).
bool Gone(pid_t pid, std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("State:", 0) == 0 &&
          line.find('Z') != std::string::npos) {
        return true;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

}  // namespace

// A `docker` group of the worker is root on the host: a task never has it.
TEST_CASE("Shell.TasksNeverHaveTheWorkersSupplementaryGroups") {
  REQUIRE(geteuid() == 0);
  const gid_t docker_like = 4242;
  const gid_t groups[] = {getegid(), docker_like};
  REQUIRE(setgroups(2, groups) == 0);
  WorkDir w;
  ShellRuntime rt(Options(w));
  std::vector<std::string> notes;
  REQUIRE(rt.Start(&notes).ok());
  CaptureSink logs;
  RunOutcome r = rt.Run(Task("id -G; grep NoNewPrivs /proc/self/status"), logs,
                        {});
  const gid_t own[] = {getegid()};
  setgroups(1, own);
  CHECK(r.ok());
  CHECK(logs.out() == std::to_string(getegid()) + "\nNoNewPrivs:\t1\n");
}

// With shell_uids each slot is its own uid: two tasks at once are two
// uids, own their files alone, and cannot read each other's environment.
TEST_CASE("Shell.EachSlotRunsAsItsOwnUid") {
  WorkDir w;
  fs::permissions(w.path, fs::perms::others_exec, fs::perm_options::add);
  ShellRuntime rt(Options(w, {61000, 2}, 2));
  REQUIRE(rt.Start(nullptr).ok());
  CaptureSink a_logs, b_logs;
  // A holds a secret in its environment and a file, long enough for B to
  // look for both.
  TaskRun a = Task(
      "id -u; ls -ld $DROVER_SCRATCH | cut -c1-10; stat -c %u:%a "
      "$DROVER_OUTPUT; echo hidden > $DROVER_SCRATCH/file; "
      "echo -n $DROVER_SCRATCH > $DROVER_OUTPUT; sleep 1.5");
  a.env["SECRET"] = "s3cr3t-env";
  auto a_done = std::async(std::launch::async, [&] { return rt.Run(a, a_logs, {}); });
  std::this_thread::sleep_for(500ms);
  // A's directory, as the worker sees it (B cannot even list the work dir).
  std::string a_dir;
  for (const auto& e : fs::directory_iterator(w.path)) a_dir = e.path();
  REQUIRE(!a_dir.empty());
  RunOutcome b = rt.Run(
      Task("id -u; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | "
           "grep -c s3cr3t-env; cat " + a_dir + "/scratch/file 2>&1 | "
           "grep -c 'Permission denied'; ls " + w.path.string() +
           " 2>&1 | grep -c 'Permission denied'"),
      b_logs, {});
  RunOutcome ra = a_done.get();
  CHECK(ra.ok());
  CHECK(b.exit_code == 0);
  CHECK(a_logs.out().rfind("61000\ndrwx------\n61000:600\n", 0) == 0);
  CHECK(b_logs.out() == "61001\n0\n1\n1\n");
  CHECK(ra.output.find(w.path.string() + "/attempt-") == 0);
}

// A daemon started with setsid leaves the task's process group; its
// cgroup (or, without one, its uid) still takes it down with the task.
TEST_CASE("Shell.NothingATaskStartsOutlivesIt") {
  struct Case {
    const char* what;
    UidRange uids;
    bool cgroups;
  };
  for (const Case& c : {Case{"cgroup", {}, true},
                        Case{"cgroup and uid", {61010, 1}, true},
                        Case{"uid alone", {61020, 1}, false}}) {
    CAPTURE(c.what);
    WorkDir w;
    fs::permissions(w.path, fs::perms::others_exec, fs::perm_options::add);
    ShellRuntime rt(Options(w, c.uids, 1, c.cgroups));
    REQUIRE(rt.Start(nullptr).ok());
    // Ends at once, leaving a setsid child behind.
    CaptureSink logs;
    RunOutcome r = rt.Run(
        Task("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo -n $! > "
             "$DROVER_OUTPUT"),
        logs, {});
    CHECK(r.ok());
    const pid_t left = static_cast<pid_t>(std::stol(r.output));
    CHECK(Gone(left, 2s));
    // Timed out, with a setsid child of its own.
    TaskRun slow = Task(
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo -n $! > "
        "$DROVER_OUTPUT; sleep 300");
    slow.timeout = 300ms;
    RunOutcome t = rt.Run(slow, logs, {});
    CHECK(t.timed_out);
    const pid_t left2 = static_cast<pid_t>(std::stol(t.output));
    CHECK(Gone(left2, 2s));
    // Cancelled.
    std::stop_source stop;
    auto cancelled = std::async(std::launch::async, [&] {
      return rt.Run(Task("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo "
                         "-n $! > $DROVER_OUTPUT; sleep 300"),
                    logs, stop.get_token());
    });
    std::this_thread::sleep_for(300ms);
    stop.request_stop();
    RunOutcome x = cancelled.get();
    CHECK(x.cancelled);
    CHECK(Gone(static_cast<pid_t>(std::stol(x.output)), 2s));
  }
}

// The task inherits nothing the worker opened but stdin, stdout, stderr,
// even a descriptor without O_CLOEXEC.
TEST_CASE("Shell.NoDescriptorIsInherited") {
  const int leaked = open("/etc/hostname", O_RDONLY);  // no O_CLOEXEC
  REQUIRE(leaked >= 3);
  WorkDir w;
  ShellRuntime rt(Options(w));
  CaptureSink logs;
  RunOutcome r = rt.Run(Task("ls /proc/$$/fd"), logs, {});
  close(leaked);
  CHECK(r.ok());
  CHECK(logs.out() == "0\n1\n2\n");
}

// A task of its own uid may point its output at a file only the worker
// can read: the worker reads no link, and no file of another owner.
TEST_CASE("Shell.OutputOfAnotherUidIsNeverReadThroughALink") {
  WorkDir w;
  fs::permissions(w.path, fs::perms::others_exec, fs::perm_options::add);
  ShellRuntime rt(Options(w, {61030, 1}));
  CaptureSink logs;
  RunOutcome r = rt.Run(
      Task("rm $DROVER_OUTPUT; ln -s /etc/shadow $DROVER_OUTPUT"), logs, {});
  CHECK(r.ok());
  CHECK(r.output.empty());
  // As the worker's own user a link is read (the task could read it too).
  ShellRuntime same(Options(w));
  RunOutcome s = same.Run(
      Task("echo -n mine > $DROVER_SCRATCH/f; rm $DROVER_OUTPUT; "
           "ln -s $DROVER_SCRATCH/f $DROVER_OUTPUT"),
      logs, {});
  CHECK(s.output == "mine");
}

// Settings that cannot work are refused when the runtime starts, saying
// what to do.
TEST_CASE("Shell.ImpossibleSettingsAreRefusedAtStart") {
  WorkDir w;
  fs::permissions(w.path, fs::perms::others_exec, fs::perm_options::add);
  ShellRuntime too_few(Options(w, {61040, 2}, 4));
  Status st = too_few.Start(nullptr);
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message() == "shell_uids holds 2 uids for 4 slots: give each slot one");
  // A work dir the uids cannot reach.
  WorkDir hidden;
  fs::permissions(hidden.path, fs::perms::owner_all);
  fs::create_directories(hidden.path / "work");
  ShellRuntimeOptions o = Options(w, {61040, 4}, 4);
  o.work_dir = hidden.path / "work";
  ShellRuntime unreachable(o);
  st = unreachable.Start(nullptr);
  CHECK(st.code() == Code::kPermissionDenied);
  CHECK(st.message().find(hidden.path.string() +
                          " is not searchable by other users") !=
        std::string::npos);
  // Uid ranges as the flag takes them.
  CHECK(ParseUidRange("61000-61063")->count == 64);
  CHECK(ParseUidRange("61000-61063")->first == 61000);
  CHECK(!ParseUidRange("0-10").ok());
  CHECK(!ParseUidRange("100-50").ok());
  CHECK(!ParseUidRange("61000").ok());
  CHECK(!ParseUidRange("a-b").ok());
}

}  // namespace drover
