// The worker's process spawning and task threads (workers/process_spawn.h,
// workers/task_threads.h): which `run` scripts may skip the shell, and what
// a spawned process finds (its argv, environment, working directory, stdin,
// process group, signal dispositions); spawn errors; threads kept for the
// next attempt. Real processes, no scheduler.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "process_spawn.h"
#include "task_threads.h"

namespace drover {
namespace {

using Words = std::vector<std::string>;

struct Ran {
  int status = 0;
  std::string out;
  std::string err;
};

std::string ReadAll(int fd) {
  std::string data;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, n);
  return data;
}

// Spawns `spec` with pipes for stdout and stderr, and waits for it.
Result<Ran> SpawnAndWait(SpawnSpec spec) {
  int out[2], err[2];
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(pipe2(err, O_CLOEXEC) == 0);
  spec.stdout_fd = out[1];
  spec.stderr_fd = err[1];
  Result<pid_t> pid = SpawnProcess(spec);
  close(out[1]);
  close(err[1]);
  Ran ran;
  if (pid.ok()) {
    ran.out = ReadAll(out[0]);  // both are small: no deadlock
    ran.err = ReadAll(err[0]);
    REQUIRE(waitpid(*pid, &ran.status, 0) == *pid);
  }
  close(out[0]);
  close(err[0]);
  if (!pid.ok()) return pid.status();
  return ran;
}

std::filesystem::path TempDir() {
  char tmpl[] = "/tmp/drover-spawn-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

TEST_CASE("Spawn.PlainCommandsSkipTheShell") {
  CHECK(DirectArgv("true") == Words{"true"});
  CHECK(DirectArgv("false") == Words{"false"});
  CHECK(DirectArgv("  sleep\t0.5 ") == Words{"sleep", "0.5"});
  CHECK(DirectArgv("/usr/bin/env -i A=1 ls -la /tmp") ==
        Words{"/usr/bin/env", "-i", "A=1", "ls", "-la", "/tmp"});
  CHECK(DirectArgv("curl -fsS http://127.0.0.1:8080/x,y@z%20+1") ==
        Words{"curl", "-fsS", "http://127.0.0.1:8080/x,y@z%20+1"});
}

TEST_CASE("Spawn.AnythingTheShellWouldInterpretKeepsIt") {
  for (const char* script : {
           "",                     // nothing to run
           "   ",                  //
           "echo hi",              // a builtin, which differs from /bin/echo
           "true --version",       // coreutils' true would print its version
           "false x",              //
           "cd /tmp",              // builtins that change the shell itself
           "exit 3",               //
           "export A=1",           //
           "kill -TERM 1",         //
           "test -f x",            //
           "[ -f x ]",             // a builtin and brackets
           "if true",              // reserved words
           "for x",                //
           "A=1 env",              // an assignment
           "ls | wc -l",           // a pipeline
           "sleep 1; true",        // a list
           "sleep 1 &",            // background
           "cat $HOME/x",          // expansion
           "ls *.txt",             // globbing
           "ls ~",                 // tilde
           "echo 'a b'",           // quoting
           "printf \"%s\" x",      //
           "ls > out",             // redirection
           "ls\nls",               // two commands
           "ls # comment",         // a comment
           "(ls)",                 // a subshell
           "ls a\\ b",             // an escape
       }) {
    CAPTURE(script);
    CHECK(DirectArgv(script).empty());
  }
}

TEST_CASE("Spawn.ProcessGetsArgvEnvironmentDirectoryAndNullStdin") {
  const std::filesystem::path dir = TempDir();
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c",
               "echo \"$0|$FOO|$(pwd)|${HOME-unset}\"; echo to-stderr >&2; "
               "cat; exit 3",
               "zero"};
  spec.env = {"FOO=bar baz", "PATH=/usr/bin:/bin"};
  spec.cwd = dir.string();
  auto ran = SpawnAndWait(spec);
  REQUIRE(ran.ok());
  REQUIRE(WIFEXITED(ran->status));
  CHECK(WEXITSTATUS(ran->status) == 3);
  // `cat` read /dev/null: nothing, at once. The environment is the one
  // given, not the caller's (which has HOME).
  CHECK(ran->out == "zero|bar baz|" + dir.string() + "|unset\n");
  CHECK(ran->err == "to-stderr\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("Spawn.ProcessLeadsItsOwnGroup") {
  SpawnSpec spec;
  // Field 5 of /proc/self/stat is the process group, field 1 the pid.
  spec.argv = {"/bin/sh", "-c",
               "read -r pid comm state ppid pgrp rest < /proc/self/stat; "
               "echo $pid $pgrp"};
  auto ran = SpawnAndWait(spec);
  REQUIRE(ran.ok());
  const auto space = ran->out.find(' ');
  REQUIRE(space != std::string::npos);
  CHECK(ran->out.substr(0, space) + "\n" == ran->out.substr(space + 1));
}

TEST_CASE("Spawn.SignalsTheCallerIgnoresAreDefaultInTheProcess") {
  // An ignored signal stays ignored across exec unless reset: a task must
  // be stoppable with SIGTERM even though the worker handles SIGTERM and
  // ignores SIGPIPE.
  for (int sig : {SIGTERM, SIGPIPE, SIGINT, SIGHUP}) {
    CAPTURE(sig);
    struct sigaction ignore {}, old{};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(sigaction(sig, &ignore, &old) == 0);
    SpawnSpec spec;
    spec.argv = {"/bin/sh", "-c",
                 "kill -" + std::to_string(sig) + " $$; exit 0"};
    auto ran = SpawnAndWait(spec);
    sigaction(sig, &old, nullptr);
    REQUIRE(ran.ok());
    REQUIRE(WIFSIGNALED(ran->status));
    CHECK(WTERMSIG(ran->status) == sig);
  }
}

TEST_CASE("Spawn.CommandIsLookedUpInTheGivenPath") {
  const std::filesystem::path dir = TempDir();
  {
    std::ofstream f(dir / "drover-hello");
    f << "#!/bin/sh\necho hello from \"$1\"\n";
  }
  chmod((dir / "drover-hello").c_str(), 0755);
  SpawnSpec spec;
  spec.argv = {"drover-hello", "path"};
  spec.search_path = "/nonexistent:" + dir.string();
  spec.env = {"PATH=/usr/bin:/bin"};
  auto ran = SpawnAndWait(spec);
  REQUIRE(ran.ok());
  CHECK(ran->out == "hello from path\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("Spawn.WhereACommandWasFoundIsFollowedAsThePathChanges") {
  const std::filesystem::path dir = TempDir();
  auto install = [&](const std::string& sub) {
    std::filesystem::create_directories(dir / sub);
    std::ofstream(dir / sub / "drover-which") << "#!/bin/sh\necho " << sub
                                              << "\n";
    chmod((dir / sub / "drover-which").c_str(), 0755);
  };
  std::filesystem::create_directories(dir / "a");
  install("b");
  install("c");
  SpawnSpec spec;
  spec.argv = {"drover-which"};
  spec.search_path = (dir / "a").string() + ":" + (dir / "b").string() +
                     ":" + (dir / "c").string();
  spec.env = {"PATH=/usr/bin:/bin"};
  auto run = [&] {
    auto ran = SpawnAndWait(spec);
    REQUIRE(ran.ok());
    return ran->out;
  };
  CHECK(run() == "b\n");
  CHECK(run() == "b\n");  // from where it was found
  // Gone from there: the search goes on to the next directory.
  std::filesystem::remove(dir / "b" / "drover-which");
  CHECK(run() == "c\n");
  // Installed earlier on the path: run from there within a second.
  install("a");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK(run() == "a\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("Spawn.FallbackRunsWhenTheCommandCannotBeExecd") {
  const std::filesystem::path dir = TempDir();
  {
    std::ofstream f(dir / "no-shebang");
    f << "echo ran as a script\n";
  }
  chmod((dir / "no-shebang").c_str(), 0755);
  SUBCASE("not found: the shell reports it and exits 127") {
    SpawnSpec spec;
    spec.argv = {"drover-no-such-command"};
    spec.fallback = {"/bin/sh", "-c", "drover-no-such-command"};
    spec.search_path = "/usr/bin:/bin";
    spec.env = {"PATH=/usr/bin:/bin"};
    auto ran = SpawnAndWait(spec);
    REQUIRE(ran.ok());
    REQUIRE(WIFEXITED(ran->status));
    CHECK(WEXITSTATUS(ran->status) == 127);
    CHECK(ran->err.find("drover-no-such-command: not found") !=
          std::string::npos);
  }
  SUBCASE("a script without #!: the shell runs it") {
    SpawnSpec spec;
    spec.argv = {"no-shebang"};
    spec.fallback = {"/bin/sh", "-c", "no-shebang"};
    spec.search_path = dir.string();
    spec.env = {"PATH=" + dir.string()};
    auto ran = SpawnAndWait(spec);
    REQUIRE(ran.ok());
    CHECK(ran->out == "ran as a script\n");
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("Spawn.ErrorsNameWhatFailed") {
  SUBCASE("no such program, no fallback") {
    SpawnSpec spec;
    spec.argv = {"drover-no-such-command"};
    spec.search_path = "/usr/bin:/bin";
    auto ran = SpawnAndWait(spec);
    REQUIRE_FALSE(ran.ok());
    CHECK(ran.status().message() ==
          "cannot start 'drover-no-such-command': No such file or directory");
  }
  SUBCASE("no such working directory") {
    SpawnSpec spec;
    spec.argv = {"/bin/true"};
    spec.cwd = "/nonexistent/drover";
    auto ran = SpawnAndWait(spec);
    REQUIRE_FALSE(ran.ok());
    CHECK(ran.status().message() ==
          "cannot change to the working directory '/nonexistent/drover': "
          "No such file or directory");
  }
  SUBCASE("nothing to run") {
    SpawnSpec spec;
    auto ran = SpawnAndWait(spec);
    REQUIRE_FALSE(ran.ok());
  }
}

TEST_CASE("TaskThreads.ThreadsAreKeptForTheNextJobs") {
  TaskThreads threads;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  bool release = false;
  auto job = [&] {
    std::unique_lock lock(mu);
    ++arrived;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  // Three jobs at once need three threads.
  for (int i = 0; i < 3; ++i) threads.Run(job);
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(10),
                        [&] { return arrived == 3; }));
    release = true;
  }
  cv.notify_all();
  threads.WaitIdle();
  CHECK(threads.thread_count() == 3);
  // Later jobs, one at a time, run on those threads: none is added.
  std::atomic<int> ran{0};
  for (int i = 0; i < 20; ++i) {
    threads.Run([&] { ++ran; });
    threads.WaitIdle();
  }
  CHECK(ran.load() == 20);
  CHECK(threads.thread_count() == 3);
}

TEST_CASE("TaskThreads.JoinAllFinishesQueuedJobs") {
  std::atomic<int> ran{0};
  {
    TaskThreads threads;
    for (int i = 0; i < 50; ++i) {
      threads.Run([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ++ran;
      });
    }
  }  // the destructor joins
  CHECK(ran.load() == 50);
}

TEST_CASE("TaskThreads.AGroupRunsAtMostItsLimitInOrder") {
  TaskThreads threads;
  std::mutex mu;
  std::vector<int> order;
  int running = 0, peak = 0;
  auto job = [&](int i) {
    return [&, i] {
      {
        std::lock_guard lock(mu);
        order.push_back(i);
        peak = std::max(peak, ++running);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::lock_guard lock(mu);
      --running;
    };
  };
  for (int i = 0; i < 8; ++i) threads.Run("q", 2, job(i));
  threads.WaitIdle();
  CHECK(peak == 2);
  REQUIRE(order.size() == 8);
  // Started in the order they came (two at a time).
  for (int i = 2; i < 8; ++i) CHECK(order[i] >= i - 1);
  CHECK(threads.thread_count() <= 3);
}

TEST_CASE("TaskThreads.AWaitingJobCanBeCancelledAStartedOneCannot") {
  TaskThreads threads;
  std::mutex mu;
  std::condition_variable cv;
  bool started = false, release = false;
  std::atomic<int> ran{0};
  const TaskThreads::JobId first = threads.Run("q", 1, [&] {
    std::unique_lock lock(mu);
    started = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  const TaskThreads::JobId second = threads.Run("q", 1, [&] { ++ran; });
  const TaskThreads::JobId third = threads.Run("q", 1, [&] { ++ran; });
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return started; }));
  }
  CHECK_FALSE(threads.Cancel(first));  // running
  CHECK(threads.Waiting("q") == 2);
  CHECK(threads.Waiting("elsewhere") == 0);
  CHECK(threads.Cancel(second));        // waiting for the slot
  CHECK_FALSE(threads.Cancel(second));  // already gone
  CHECK(threads.Waiting("q") == 1);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  threads.WaitIdle();
  CHECK(ran.load() == 1);  // only the third
  CHECK(threads.Waiting("q") == 0);
  CHECK_FALSE(threads.Cancel(third));
}

}  // namespace
}  // namespace drover
