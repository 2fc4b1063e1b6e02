// The Docker runtime end to end through real processes: droverd and
// drover-worker (--runtime docker) started by tests/cluster.h, tasks in
// containers of a real dockerd — never a fake. Covers a job of containers
// (logs, exit codes, outputs, tasks.VAR, pre/post sharing volumes), failed,
// cancelled and timed-out jobs, a worker SIGKILLed mid-task, and a daemon
// that goes away and comes back; after each job, nothing labelled with it
// may remain on the daemon, nor an output directory in the worker's work
// dir.
//
// The shared daemon comes from DOCKER_HOST (unix:// only) or
// /var/run/docker.sock, as scripts/docker-env.sh provides it. The daemon
// test starts a second dockerd of its own (own data root, exec root, socket,
// no networking) so it can stop it without disturbing anyone; it imports
// the test image into it from the shared daemon with the docker CLI. With no
// daemon the tests fail; they report a skip only with
// DROVER_ALLOW_NO_DOCKER=1, and never when CI=true.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"
#include "docker_test_env.h"
#include "docker_client.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using docker_test::DockerAvailable;
using docker_test::Env;
using docker_test::kImage;
// The daemon the rest of the suite shares (one test also starts its own).
inline std::string SharedSocket() { return docker_test::SocketPath(); }

// Names of the containers (any state) and volumes carrying `label`.
std::vector<std::string> Labelled(DockerClient& docker,
                                  const std::string& label) {
  std::vector<std::string> found;
  auto containers = docker.ContainerList(label);
  REQUIRE_MESSAGE(containers.ok(), containers.status().ToString());
  for (const auto& c : *containers) found.push_back("container " + c.name);
  auto volumes = docker.VolumeList(label);
  REQUIRE_MESSAGE(volumes.ok(), volumes.status().ToString());
  for (const auto& v : *volumes) found.push_back("volume " + v.name);
  return found;
}

std::string Join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

// After a job ends its worker removes what it made; a cancelled job's
// containers go a moment after the scheduler records the cancel.
void ExpectNothingLeftOf(const std::string& job_id,
                         const std::string& socket = SharedSocket()) {
  DockerClient docker(socket);
  const std::string label = "drover.job=" + job_id;
  std::vector<std::string> left;
  Cluster::Eventually(
      [&] {
        left = Labelled(docker, label);
        return left.empty();
      },
      20s);
  CHECK_MESSAGE(left.empty(),
                "left behind by job " << job_id << ": " << Join(left));
}

// The output directories (bind-mounted at /drover) that `worker`'s
// attempts have now, under its work dir.
std::vector<std::string> OutputDirsOf(Cluster& c, const std::string& worker) {
  std::vector<std::string> names;
  std::error_code ec;
  const fs::path root =
      fs::path(c.dir()) / ("work-" + worker) / "docker-output" / worker;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    names.push_back(e.path().filename().string());
  }
  return names;
}

void ExpectNoOutputDirs(Cluster& c, const std::string& worker) {
  std::vector<std::string> left;
  Cluster::Eventually(
      [&] {
        left = OutputDirsOf(c, worker);
        return left.empty();
      },
      20s);
  CHECK_MESSAGE(left.empty(), "output directories left by worker "
                                  << worker << ": " << Join(left));
}

// The job's main-role container ids, running or not.
std::vector<std::string> MainContainers(DockerClient& docker,
                                        const std::string& job_id) {
  std::vector<std::string> ids;
  auto list = docker.ContainerList("drover.job=" + job_id);
  if (!list.ok()) return ids;
  for (const auto& c : *list) {
    auto role = c.labels.find("drover.role");
    if (role != c.labels.end() && role->second == "main") ids.push_back(c.id);
  }
  return ids;
}

bool IsRunning(DockerClient& docker, const std::string& id) {
  auto state = docker.ContainerInspect(id);
  return state.ok() && state->running;
}

// What a job's tasks printed, by stream ("stdout", "stderr", "drover").
std::map<std::string, std::string> StreamLogs(Cluster& c,
                                              const std::string& job_id,
                                              const std::string& task) {
  std::map<std::string, std::string> out;
  uint64_t after = 0;
  while (true) {
    LogsRequest req;
    req.job_id = job_id;
    req.task = task;
    req.after = after;
    auto reply = c.client().Call<LogsReply>(req);
    REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
    for (const auto& chunk : reply->chunks) out[chunk.stream] += chunk.data;
    if (reply->last == after) break;
    after = reply->last;
  }
  return out;
}

const TaskView& TaskNamed(const JobView& job, const std::string& name) {
  for (const TaskView& t : job.tasks) {
    if (t.name == name) return t;
  }
  FAIL("job " << job.id << " has no task " << name);
  return job.tasks.front();
}

std::string WorkerState(Cluster& c, const std::string& name) {
  for (const WorkerView& w : c.Workers()) {
    if (w.name == name) return w.state;
  }
  return "";
}

Process& StartDockerWorker(Cluster& c, const std::string& name,
                           const std::string& socket = SharedSocket(),
                           std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--runtime", "docker", "--docker-socket",
                                   socket};
  args.insert(args.end(), extra.begin(), extra.end());
  return c.StartWorker(name, args);
}

void WaitReady(Cluster& c, const std::string& name) {
  std::string state;
  const bool ready = Cluster::Eventually([&] {
    state = WorkerState(c, name);
    return state == "ready";
  });
  REQUIRE_MESSAGE(ready, "worker " << name << " is '" << state << "'");
}

// Polls until `job_id` has one running main container and its task printed
// `marker`; returns the container's id. Exited containers (an earlier
// attempt's, not yet removed) are ignored.
std::string WaitForRunningContainer(Cluster& c, DockerClient& docker,
                                    const std::string& job_id,
                                    const std::string& marker) {
  std::string id;
  const bool running = Cluster::Eventually(
      [&] {
        std::vector<std::string> running;
        for (const std::string& i : MainContainers(docker, job_id)) {
          if (IsRunning(docker, i)) running.push_back(i);
        }
        if (running.size() != 1) return false;
        if (StreamLogs(c, job_id, "")["stdout"].find(marker) ==
            std::string::npos) {
          return false;
        }
        id = running[0];
        return true;
      },
      30s);
  REQUIRE_MESSAGE(running, "job " << job_id << " never ran a container");
  return id;
}

// A task that runs until the test lets it finish (Release), so a test can
// kill its worker or its daemon under it without racing a timer.
constexpr const char* kGatedJob = R"toml(
name = "gated"
[[tasks]]
name = "work"
image = "drover-test/busybox:latest"
volumes = ["/scratch"]
run = 'echo started; while [ ! -e /gate/open ]; do sleep 0.1; done; printf finished > $DROVER_OUTPUT'
)toml";

// Lets the gated task in container `id` finish: puts /gate/open in it.
void Release(DockerClient& docker, const std::string& id) {
  Status s = docker.PutArchive(id, "/",
                               MakeTarWithFile("gate", 0755, "open", 0644, ""));
  REQUIRE_MESSAGE(s.ok(), s.ToString());
}

// A dockerd of this test's own, in a temp dir, so the test may stop and
// start it. No networking (--bridge=none --iptables=false): tasks use
// network none. Stopped by its PID only.
class OwnDaemon {
 public:
  OwnDaemon() {
    // Short: the socket paths under it must fit in sun_path.
    char tmpl[] = "/tmp/drover-dk-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
  }
  ~OwnDaemon() {
    Stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string socket() const { return dir_ + "/docker.sock"; }

  void Start() {
    REQUIRE(!process_);
    // Its own (empty) config file: the host's daemon.json may set hosts or
    // a data root, which would clash with the flags.
    WriteFile(dir_ + "/daemon.json", "{}\n");
    process_ = std::make_unique<Process>(
        std::vector<std::string>{
            "dockerd", "--config-file", dir_ + "/daemon.json", "--bridge=none",
            "--iptables=false", "--data-root", dir_ + "/data", "--exec-root",
            dir_ + "/exec", "--pidfile", dir_ + "/dockerd.pid", "-H",
            "unix://" + socket()},
        dir_ + "/dockerd.log");
    DockerClient client(socket());
    const bool up = Cluster::Eventually(
        [&] { return process_->Running() && client.Ping().ok(); }, 60s);
    REQUIRE_MESSAGE(up, "the test's own dockerd did not come up; its log:\n"
                            << ReadFile(dir_ + "/dockerd.log"));
  }

  // SIGTERM, as a service manager would; SIGKILL only if it hangs.
  void Stop() {
    if (!process_) return;
    process_->Signal(SIGTERM);
    if (process_->Wait(60s) == -1) {
      MESSAGE("dockerd ignored SIGTERM for 60 s; killing it");
      process_->Signal(SIGKILL);
      process_->Wait(10s);
    }
    process_.reset();
  }

  // Copies the test image over from the shared daemon.
  void ImportTestImage() {
    CommandResult r =
        RunCommand({"sh", "-c",
                    "docker -H unix://" + SharedSocket() + " save " + kImage +
                        " | docker -H unix://" + socket() + " load"},
                   {}, 120s);
    REQUIRE_MESSAGE(r.exit_code == 0,
                    "importing " << kImage << " failed: " << r.out << r.err);
  }

 private:
  std::string dir_;
  std::unique_ptr<Process> process_;
};

}  // namespace

TEST_CASE("DockerE2E.JobOfContainersCompletes") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-ok", SharedSocket(), {"--queue", "default:2"});
  WaitReady(c, "dk-ok");

  const std::string id = c.Submit(std::string(R"toml(
name = "containers end to end"
[inputs]
word = "hello"

[[tasks]]
name = "produce"
image = "drover-test/busybox:latest"
run = "echo to-stdout; echo to-stderr >&2; printf made-by-produce > $DROVER_OUTPUT"
var = "made"

[[tasks]]
name = "consume"
image = "drover-test/busybox:latest"
env = { MADE = "{{ tasks.made }}", WORD = "{{ inputs.word }}" }
volumes = ["/data"]
run = """
echo "consume sees $MADE and $WORD"
echo main >> /data/trail
printf '%s|%s' "$MADE" "$(cat /data/trail | tr '\n' ,)" > $DROVER_OUTPUT
"""

[[tasks.pre]]
name = "prepare"
image = "drover-test/busybox:latest"
run = "echo pre >> /data/trail; echo pre-ran"

[[tasks.post]]
name = "publish"
image = "drover-test/busybox:latest"
run = "echo post >> /data/trail; echo \"post sees $(cat /data/trail | tr '\\n' ' ')\""

[[tasks]]
name = "exit-code"
image = "drover-test/busybox:latest"
cmd = ["/bin/sh", "-c", "echo argv-form; exit 0"]
)toml"));
  JobView job = c.Wait(id, 60s);
  CHECK(job.state == "COMPLETED");
  REQUIRE(job.tasks.size() == 3);
  for (const TaskView& t : job.tasks) {
    CHECK_MESSAGE(t.state == "COMPLETED",
                  t.name << ": " << t.error.value_or(""));
    CHECK(t.attempts == 1);
    CHECK(t.exit_code == 0);
    CHECK(t.worker == "dk-ok");
  }
  CHECK(TaskNamed(job, "produce").output == "made-by-produce");
  // tasks.VAR reached the container's env; the pre task's write was there
  // for the task, and the task's for the post task: one volume, shared.
  CHECK(TaskNamed(job, "consume").output == "made-by-produce|pre,main,");

  auto produce = StreamLogs(c, id, "produce");
  CHECK(produce["stdout"] == "to-stdout\n");
  CHECK(produce["stderr"] == "to-stderr\n");
  auto consume = StreamLogs(c, id, "consume");
  CHECK(consume["stdout"].find("pre-ran\n") != std::string::npos);
  CHECK(consume["stdout"].find("consume sees made-by-produce and hello\n") !=
        std::string::npos);
  CHECK(consume["stdout"].find("post sees pre main post \n") !=
        std::string::npos);
  CHECK(StreamLogs(c, id, "exit-code")["stdout"] == "argv-form\n");
  ExpectNothingLeftOf(id);
  ExpectNoOutputDirs(c, "dk-ok");
}

// A task that says which way its output file leaves the container: with
// the bind method /drover is a mount point.
std::string WhichOutputJob(const std::string& queue) {
  return "name = \"output method\"\nqueue = \"" + queue + "\"\n" + R"toml(
[[tasks]]
name = "which"
image = "drover-test/busybox:latest"
run = "if grep -q ' /drover/output ' /proc/mounts; then m=bind; else m=archive; fi; printf $m > $DROVER_OUTPUT"
)toml";
}

TEST_CASE("DockerE2E.OutputMethodFlags") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  // "dk-alias" tells the daemon its work dir by another name, a link.
  fs::create_symlink(fs::path(c.dir()) / "work-dk-alias",
                     fs::path(c.dir()) / "alias");
  const std::pair<std::string, std::vector<std::string>> workers[] = {
      {"dk-bind", {}},
      {"dk-archive", {"--docker-output", "archive"}},
      {"dk-alias", {"--docker-daemon-work-dir", c.dir() + "/alias"}},
      {"dk-unseen",
       {"--docker-daemon-work-dir", "/nonexistent-drover-work-dir"}},
  };
  for (const auto& [name, flags] : workers) {
    std::vector<std::string> args = {"--queue", name + ":1"};
    args.insert(args.end(), flags.begin(), flags.end());
    StartDockerWorker(c, name, SharedSocket(), args);
  }
  std::map<std::string, std::string> method;
  for (const auto& [name, flags] : workers) {
    WaitReady(c, name);
    JobView job = c.Wait(c.Submit(WhichOutputJob(name)), 60s);
    REQUIRE_MESSAGE(job.state == "COMPLETED",
                    name << ": " << job.tasks.at(0).error.value_or(""));
    method[name] = job.tasks.at(0).output.value_or("");
    ExpectNothingLeftOf(job.id);
    ExpectNoOutputDirs(c, name);
  }
  CHECK(method["dk-bind"] == "bind");
  CHECK(method["dk-archive"] == "archive");
  CHECK(method["dk-alias"] == "bind");
  // A daemon that cannot see the path it is given refuses the mount: the
  // worker says so once and goes on with the archive method.
  CHECK(method["dk-unseen"] == "archive");
  const std::string log = ReadFile(c.dir() + "/worker-dk-unseen.log");
  CHECK_MESSAGE(log.find("does not see") != std::string::npos, log);
}

TEST_CASE("DockerE2E.FailedJobLeavesNothing") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-fail");
  WaitReady(c, "dk-fail");
  const std::string id = c.Submit(R"toml(
name = "fails"
[[tasks]]
name = "breaks"
image = "drover-test/busybox:latest"
volumes = ["/scratch"]
run = "echo partial > /scratch/f; echo about to fail; printf half > $DROVER_OUTPUT; exit 3"
pre = [{ name = "setup", image = "drover-test/busybox:latest", run = "echo setting up" }]

[[tasks]]
name = "never"
image = "drover-test/busybox:latest"
run = "echo must not run"
)toml");
  JobView job = c.Wait(id, 60s);
  CHECK(job.state == "FAILED");
  const TaskView& breaks = TaskNamed(job, "breaks");
  CHECK(breaks.state == "FAILED");
  CHECK(breaks.exit_code == 3);
  CHECK(breaks.error == "exited with code 3");
  CHECK(breaks.output == "half");  // kept even though the task failed
  CHECK(TaskNamed(job, "never").state != "COMPLETED");
  CHECK(StreamLogs(c, id, "breaks")["stdout"] == "setting up\nabout to fail\n");
  ExpectNothingLeftOf(id);
  ExpectNoOutputDirs(c, "dk-fail");
}

TEST_CASE("DockerE2E.CancelledJobStopsItsContainer") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-cancel");
  WaitReady(c, "dk-cancel");
  DockerClient docker(SharedSocket());
  const std::string id = c.Submit(R"toml(
name = "cancelled mid-run"
[[tasks]]
name = "long"
image = "drover-test/busybox:latest"
volumes = ["/scratch"]
run = "echo started; sleep 300"
)toml");
  const std::string container =
      WaitForRunningContainer(c, docker, id, "started");
  CHECK(c.Status(id).state == "RUNNING");

  CommandResult r =
      RunCommand({BuildPath("drover"), "--api", c.api(), "cancel", id});
  CHECK_MESSAGE(r.exit_code == 0, r.out << r.err);
  JobView job = c.Wait(id);
  CHECK(job.state == "CANCELLED");
  CHECK(TaskNamed(job, "long").state == "CANCELLED");
  ExpectNothingLeftOf(id);
  ExpectNoOutputDirs(c, "dk-cancel");
  CHECK(docker.ContainerInspect(container).status().code() == Code::kNotFound);
  CHECK(c.worker("dk-cancel").Running());
}

TEST_CASE("DockerE2E.TimedOutJobLeavesNothing") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-timeout");
  WaitReady(c, "dk-timeout");
  const std::string id = c.Submit(R"toml(
name = "times out"
[[tasks]]
name = "slow"
image = "drover-test/busybox:latest"
volumes = ["/scratch"]
timeout = "1s"
run = "echo started; sleep 300"
post = [{ name = "never", image = "drover-test/busybox:latest", run = "echo post must not run" }]
)toml");
  JobView job = c.Wait(id, 60s);
  CHECK(job.state == "FAILED");
  const TaskView& slow = TaskNamed(job, "slow");
  CHECK(slow.state == "FAILED");
  CHECK(slow.error == "timed out after 1s");
  auto logs = StreamLogs(c, id, "slow");
  CHECK(logs["stdout"] == "started\n");
  CHECK(logs["stdout"].find("post must not run") == std::string::npos);
  ExpectNothingLeftOf(id);
  ExpectNoOutputDirs(c, "dk-timeout");
}

TEST_CASE("DockerE2E.KilledWorkerRemovesItsLeftoverOnRestart") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-kill");
  WaitReady(c, "dk-kill");
  DockerClient docker(SharedSocket());
  const std::string id = c.Submit(kGatedJob);
  const std::string container =
      WaitForRunningContainer(c, docker, id, "started");

  c.worker("dk-kill").Signal(SIGKILL);
  CHECK(c.worker("dk-kill").Wait() == 128 + SIGKILL);
  // Nobody is left to stop it: the container outlives its worker, and so
  // does its output directory.
  CHECK(docker.ContainerInspect(container).ok());
  const std::vector<std::string> stale = OutputDirsOf(c, "dk-kill");
  CHECK(stale.size() == 1);

  Process& again = StartDockerWorker(c, "dk-kill");
  // The restarted worker removes it before it serves anything.
  CHECK(Cluster::Eventually(
      [&] {
        return docker.ContainerInspect(container).status().code() ==
               Code::kNotFound;
      },
      20s));
  CHECK(Cluster::Eventually([&] {
    return ReadFile(again.log_path())
               .find("job " + id +
                     " task work attempt 1: removed the container an earlier "
                     "run of this worker left behind") != std::string::npos;
  }));
  // Its output directory went with it (the retry has one of its own).
  for (const std::string& d : OutputDirsOf(c, "dk-kill")) {
    CHECK(std::find(stale.begin(), stale.end(), d) == stale.end());
  }
  Release(docker, WaitForRunningContainer(c, docker, id, "started"));
  JobView job = c.Wait(id, 60s);
  CHECK(job.state == "COMPLETED");
  const TaskView& work = TaskNamed(job, "work");
  CHECK(work.attempts == 2);
  CHECK(work.output == "finished");
  CHECK(work.worker == "dk-kill");
  ExpectNothingLeftOf(id);
  ExpectNoOutputDirs(c, "dk-kill");
}

TEST_CASE("DockerE2E.DaemonGoneThenBack") {
  if (!DockerAvailable()) return;
  OwnDaemon daemon;
  daemon.Start();
  daemon.ImportTestImage();
  DockerClient docker(daemon.socket());

  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "dk-flaky", daemon.socket());
  WaitReady(c, "dk-flaky");

  // 1. The daemon stops under a running task: the attempt fails with a
  //    retriable error, the worker stays up and degraded, the task waits,
  //    and runs again once the daemon is back.
  const std::string first = c.Submit(kGatedJob);
  WaitForRunningContainer(c, docker, first, "started");
  daemon.Stop();
  CHECK(Cluster::Eventually(
      [&] { return WorkerState(c, "dk-flaky") == "degraded"; }));
  JobView view;
  CHECK(Cluster::Eventually([&] {
    view = c.Status(first);
    return view.tasks.size() == 1 && !view.tasks[0].errors.empty();
  }));
  REQUIRE(view.tasks.size() == 1);
  REQUIRE(!view.tasks[0].errors.empty());
  CHECK_MESSAGE(view.tasks[0].errors[0].find("Docker daemon not reachable") !=
                    std::string::npos,
                view.tasks[0].errors[0]);
  // No docker task goes to a degraded worker: it waits, not fails.
  std::this_thread::sleep_for(1500ms);
  view = c.Status(first);
  CHECK(view.state != "FAILED");
  CHECK(view.tasks[0].state == "PENDING");
  CHECK(WorkerState(c, "dk-flaky") == "degraded");
  CHECK(c.worker("dk-flaky").Running());

  daemon.Start();
  CHECK(Cluster::Eventually(
      [&] { return WorkerState(c, "dk-flaky") == "ready"; }));
  Release(docker, WaitForRunningContainer(c, docker, first, "started"));
  view = c.Wait(first, 60s);
  CHECK(view.state == "COMPLETED");
  for (const std::string& e : view.tasks[0].errors) MESSAGE(e);
  CHECK(view.tasks[0].output == "finished");
  // The stopped attempt's container and volume, which could not be removed
  // while the daemon was down, are removed once it is back.
  ExpectNothingLeftOf(first, daemon.socket());
  ExpectNoOutputDirs(c, "dk-flaky");

  // 2. A worker killed mid-task starts again while the daemon is down: it
  //    stays up (degraded), and removes what its earlier run left as soon
  //    as the daemon answers.
  const std::string second = c.Submit(kGatedJob);
  WaitForRunningContainer(c, docker, second, "started");
  c.worker("dk-flaky").Signal(SIGKILL);
  c.worker("dk-flaky").Wait();
  daemon.Stop();
  Process& again = StartDockerWorker(c, "dk-flaky", daemon.socket());
  CHECK(Cluster::Eventually(
      [&] { return WorkerState(c, "dk-flaky") == "degraded"; }));
  std::this_thread::sleep_for(1s);
  CHECK(again.Running());
  CHECK(c.Status(second).tasks[0].state == "PENDING");

  daemon.Start();
  Release(docker, WaitForRunningContainer(c, docker, second, "started"));
  view = c.Wait(second, 60s);
  CHECK(view.state == "COMPLETED");
  // Attempt 1 died with the worker. The restarted worker may be sent the
  // task before its first heartbeat says it is degraded; that attempt fails
  // as "not reachable" and is requeued, like the first job's.
  CHECK(view.tasks[0].attempts >= 2);
  for (const std::string& e : view.tasks[0].errors) MESSAGE(e);
  CHECK(Cluster::Eventually([&] {
    return ReadFile(again.log_path())
               .find("job " + second +
                     " task work attempt 1: removed the container an earlier "
                     "run of this worker left behind") != std::string::npos;
  }));
  ExpectNothingLeftOf(second, daemon.socket());
  ExpectNoOutputDirs(c, "dk-flaky");
  // Stop the worker before its daemon, or it would log a degraded end.
  again.Signal(SIGTERM);
  CHECK(again.Wait(30s) == 0);
}

}  // namespace drover::testing

namespace drover::testing {
namespace {

// A worker's container policy, through droverd: a job that no connected
// worker allows is refused at submission with the policy key; what one
// allows runs, its output cut at max_log_bytes while the task goes on.
TEST_CASE("DockerE2E.WorkerPolicyRefusesAndBounds") {
  if (!DockerAvailable()) return;
  Cluster c;
  c.StartScheduler();
  StartDockerWorker(c, "strict", SharedSocket(),
                    {"--allowed-images", "drover-test/*", "--max-log-bytes",
                     "10k", "--max-limits", "memory=512m",
                     "--default-limits", "memory=256m,pids=1024"});
  WaitReady(c, "strict");
  const std::string dir = c.dir();
  auto submit = [&](const std::string& name, const std::string& body) {
    WriteFile(dir + "/" + name + ".toml",
              "name = \"" + name + "\"\n[[tasks]]\nname = \"t\"\n" + body);
    return RunCommand({BuildPath("drover"), "--api", c.api(), "submit",
                       dir + "/" + name + ".toml", "--wait"});
  };
  CommandResult image = submit("image", "image = \"alpine\"\nrun = \"true\"\n");
  CHECK(image.exit_code == 2);
  CHECK_MESSAGE(image.err.find(dir + "/image.toml:2:1: error: task 't': no "
                               "connected worker's policy allows it: worker "
                               "strict: image 'alpine' is not allowed by "
                               "allowed_images (drover-test/*)") !=
                    std::string::npos,
                image.err);
  CommandResult host = submit(
      "host", "image = \"" + std::string(kImage) +
                  "\"\nrun = \"true\"\nnetwork = \"host\"\n");
  CHECK(host.exit_code == 2);
  CHECK(host.err.find("network 'host' is not allowed by allowed_networks") !=
        std::string::npos);
  CommandResult memory = submit(
      "memory", "image = \"" + std::string(kImage) +
                    "\"\nrun = \"true\"\nlimits = { memory = \"1g\" }\n");
  CHECK(memory.exit_code == 2);
  CHECK(memory.err.find("limits.memory 1g is over max_limits.memory 512m") !=
        std::string::npos);
  CHECK(c.client().Call<ListReply>(ListRequest{})->jobs.empty());
  // Allowed: 100 KiB of output, of which 10 KiB are kept, and the task
  // went on to its end.
  CommandResult chatty = submit(
      "chatty", "image = \"" + std::string(kImage) +
                    "\"\nrun = \"for i in $(seq 1000); do printf '%0100d\\\\n' $i; "
                    "done; echo -n finished > $DROVER_OUTPUT\"\n");
  CHECK_MESSAGE(chatty.exit_code == 0, chatty.err);
  auto jobs = c.client().Call<ListReply>(ListRequest{});
  REQUIRE(jobs.ok());
  REQUIRE(jobs->jobs.size() == 1);
  JobView job = c.Status(jobs->jobs[0].id);
  CHECK(job.tasks[0].output.value_or("") == "finished");
  const std::string logs = c.Logs(job.id);
  CHECK(logs.size() == 10 * 1024);
  std::string all;
  uint64_t after = 0;
  while (true) {
    LogsRequest req;
    req.job_id = job.id;
    req.after = after;
    auto reply = c.client().Call<LogsReply>(req);
    REQUIRE(reply.ok());
    for (const auto& l : reply->chunks) all += l.data;
    if (reply->last == after) break;
    after = reply->last;
  }
  CHECK(all.find("output over max_log_bytes (10240 bytes)") !=
        std::string::npos);
  ExpectNothingLeftOf(job.id);
}

}  // namespace
}  // namespace drover::testing
