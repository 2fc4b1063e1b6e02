// drover_bench: drover's benchmark, in the manner of LevelDB's db_bench.
// It starts real droverd and drover-worker processes on ipc:// endpoints in
// a scratch dir under /tmp (the store on the same disk), drives them, and
// prints one figure a line as `name value unit`; lines starting with `#`
// give context (the counts used, the raw fsync latency, caveats).
//
//   drover_bench [--mode quick|full] [--workloads a,b,...]
//                [--concurrency N] [--build-dir DIR] [--keep]
//                [--overhead-tasks N] [--bench-workers N] [--bench-slots N]
//
// --mode full uses the counts below; quick uses smaller ones (and finishes
// in under a minute), printing the same lines. --concurrency (default: the
// core count) is the parallelism of the shell and Docker workloads and of
// their baselines. The build dir defaults to the directory of this
// executable, where droverd and drover-worker are built.
//
// Workloads, in the order they run:
//
//   overhead   tasks through the scheduler alone: jobs of 1,000
//              independent (`depends_on = []`) `true` tasks, the next one
//              submitted while fewer than 4,000 tasks are unfinished, run
//              by 4 in-process bench workers of 128 slots (bench_worker.h)
//              that answer each `assign` with a `result` at once (as
//              drover-worker does for an attempt that ends within its
//              20 ms `started` hold); every transition is stored and synced by droverd as
//              in production. 300,000 tasks (quick: 30,000), from the
//              first submit to the last `ack`; then every job is checked
//              COMPLETED with `status`.            -> overhead_tasks_per_s
//   shell      /bin/true, raw and through drover at the same concurrency N:
//              N threads posix_spawn+waitpid /bin/true (before and after,
//              averaged), and `run = "true"` tasks on one real
//              drover-worker --runtime shell --queue default:N.
//                                  -> fork_exec_per_s, shell_tasks_per_s
//   docker     the same with containers of drover-test/busybox:latest: N
//              threads looping create/start/wait/remove with DockerClient
//              (before and after, averaged), and tasks on one real
//              drover-worker --runtime docker --queue default:N.
//                                -> docker_api_per_s, docker_tasks_per_s
//   latency    one-task jobs submitted one at a time to an idle droverd
//              with an idle bench worker: from sending `submit` to the
//              `assign` arriving at the worker (its start).
//                       -> dispatch_latency_p50_us, dispatch_latency_p99_us
//   requeue    a long task on real shell worker A, worker B idle, default
//              heartbeat settings (1 s x 3): from kill -9 of A until
//              `status` shows the task RUNNING on B (polled every 2 ms);
//              the median of the rounds.    -> requeue_after_worker_kill_ms
//   restart    a store holding 100,000 finished tasks (100,000 one-task
//              jobs) and 10,000 pending ones (100 jobs of 100), written with
//              the Store API; droverd serves it, is killed with SIGKILL and
//              started again: from the start until it answers a request;
//              the median of the rounds. Then the 10,000 tasks are run, and
//              droverd's RSS is read.        -> restart_ready_ms,
//                                                 rss_100k_jobs_kib
//   rss        VmRSS of a fresh idle droverd, and of an idle real worker
//              (shell and Docker runtimes) connected to it.
//                                   -> rss_idle_kib, worker_rss_idle_kib
//   curve      overhead and latency again with CURVE on every socket
//              (droverd --auth, every client and bench worker with keys):
//              -> overhead_curve_tasks_per_s, dispatch_latency_curve_p50_us,
//                 dispatch_latency_curve_p99_us, and curve_throughput_ratio
//                 (of overhead_tasks_per_s, when both ran)
//   backlog    overhead throughput measured while 1,000 tasks are queued
//              ahead, then while 1,000,000 are (quick: 100,000): the backlog
//              is submitted before the bench workers connect (then the
//              bench waits until droverd is idle: LevelDB has compacted
//              the burst) and kept topped up with jobs of 1,000 while
//              150,000 (quick: 20,000) tasks complete; the 1,000 case
//              runs before and after, averaged.        -> backlog_1m_ratio
//
// Other counts (full / quick): shell 6,000 / 600 runs, docker 60 / 4
// containers, latency 1,000 / 300 jobs, requeue 5 / 1 rounds, restart
// 5 / 2 rounds. Also printed: `cores N cores`.
//
// DROVER_BENCH_DROVERD_PREFIX, when set, is put in front of every droverd
// command line (e.g. "valgrind --tool=callgrind"), for profiling, and
// DROVER_BENCH_WORKER_FLAGS is added to every drover-worker's; see
// docs/PERFORMANCE.md. Not a test: it asserts nothing, and no timing
// assertion belongs in `make test`.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include "bench_util.h"
#include "bench_worker.h"
#include "docker_client.h"
#include "drover/client.h"
#include "drover/clock.h"
#include "drover/job_spec.h"
#include "drover/store.h"
#include "plan.h"

extern char** environ;

namespace drover::bench {
namespace {

using namespace std::chrono_literals;

constexpr char kDockerImage[] = "drover-test/busybox:latest";

// How much each workload does.
struct Counts {
  size_t overhead_tasks;
  // Jobs of the overhead workload: 1,000 tasks (a 45 KB job file). The
  // backlog is stored in jobs of 10,000, the most a job may have.
  size_t tasks_per_job = 1'000;
  size_t backlog_tasks_per_job = 10'000;
  size_t bench_workers = 4;
  uint32_t bench_slots = 128;
  size_t shell_tasks;
  size_t docker_tasks;
  size_t latency_jobs;
  int requeue_rounds;
  size_t restart_finished = 100'000;
  size_t restart_pending = 10'000;
  int restart_rounds;
  size_t backlog_small = 1'000;
  size_t backlog_big;
  size_t backlog_measured;
};

Counts CountsFor(bool full) {
  Counts c;
  c.overhead_tasks = full ? 300'000 : 30'000;
  c.shell_tasks = full ? 6'000 : 600;
  c.docker_tasks = full ? 60 : 4;
  c.latency_jobs = full ? 1'000 : 300;
  c.requeue_rounds = full ? 5 : 1;
  c.restart_rounds = full ? 5 : 2;
  c.backlog_big = full ? 1'000'000 : 100'000;
  c.backlog_measured = full ? 150'000 : 20'000;
  return c;
}

struct Options {
  bool full = false;
  // Overrides of Counts, for experiments (0: the mode's count).
  size_t overhead_tasks = 0;
  size_t bench_workers = 0;
  uint32_t bench_slots = 0;
  std::set<std::string> workloads;
  uint32_t concurrency = 0;
  Setup setup;
};

const char* const kWorkloads[] = {"overhead", "shell",   "docker",
                                  "latency",  "curve",   "requeue",
                                  "restart",  "rss",     "backlog"};

// "2026-11-23T16:25:42.067Z" -> ms since the epoch; 0 if it does not parse.
TimeMs ParseRfc3339(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6) {
    return 0;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<TimeMs>(timegm(&tm)) * 1000 + ms;
}

TimeMs WallMs() { return SystemClock().Now(); }

// The raw fdatasync latency of the disk under `dir`: what one group commit
// costs at least.
void NoteFsyncLatency(const std::string& dir) {
  const std::string path = dir + "/fsync-probe";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  std::vector<double> us;
  char block[256] = {};
  for (int i = 0; i < 200; ++i) {
    if (write(fd, block, sizeof block) < 0) break;
    auto t0 = Clock::now();
    fdatasync(fd);
    us.push_back(MsSince(t0) * 1000);
  }
  close(fd);
  unlink(path.c_str());
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "fdatasync of a 256-byte append on this disk: p50 %.0f us, "
                "p99 %.0f us (%zu samples)",
                Median(us), Percentile(us, 99), us.size());
  Note(buf);
}

// ------------------------------------------------------- bench worker pool

// In-process bench workers connected to one droverd.
class Pool {
 public:
  Pool(zmq::context_t& ctx, const Daemon& d, size_t n, uint32_t slots,
       BenchWorker::AssignFn on_assign = {}) {
    for (size_t i = 0; i < n; ++i) {
      BenchWorkerOptions o;
      o.name = "bench-" + std::to_string(i);
      o.keys = d.worker_keys();
      o.tasks = d.tasks();
      o.heartbeat = d.heartbeat();
      o.slots = slots;
      workers_.push_back(
          std::make_unique<BenchWorker>(ctx, o, on_assign, &acks_));
    }
  }
  Status Start() {
    for (auto& w : workers_) w->Start();
    const auto deadline = Clock::now() + 10s;
    while (Clock::now() < deadline) {
      bool all = std::all_of(workers_.begin(), workers_.end(),
                             [](const auto& w) { return w->welcomed(); });
      if (all) return Status::Ok();
      std::this_thread::sleep_for(1ms);
    }
    return Status::Timeout("bench workers were not welcomed");
  }
  void Stop() {
    for (auto& w : workers_) w->Stop();
  }
  uint64_t acked() const { return acks_.count(); }
  Clock::time_point last_ack() const {
    Clock::time_point t{};
    for (const auto& w : workers_) t = std::max(t, w->last_ack());
    return t;
  }
  // Waits until `n` results in all are acknowledged.
  Status WaitAcked(uint64_t n, std::chrono::seconds timeout) {
    if (!acks_.WaitFor(n, Clock::now() + timeout)) {
      return Status::Timeout("only " + std::to_string(acked()) + " of " +
                             std::to_string(n) + " tasks done in time");
    }
    return Status::Ok();
  }
  // Waits until `n` results in all are acknowledged, or until `deadline`.
  bool WaitAcked(uint64_t n, Clock::time_point deadline) {
    return acks_.WaitFor(n, deadline);
  }

 private:
  AckCounter acks_;  // before the workers, which count into it
  std::vector<std::unique_ptr<BenchWorker>> workers_;
};

// Checks with `status` that each job is COMPLETED with every task.
Status CheckCompleted(Daemon& d, const std::vector<std::string>& ids,
                      size_t* tasks_out = nullptr) {
  Client client(d.api(), 60s, d.client_keys());
  size_t tasks = 0;
  for (const std::string& id : ids) {
    StatusRequest req;
    req.job_id = id;
    auto reply = client.Call<StatusReply>(req);
    if (!reply.ok()) return reply.status();
    if (reply->job.state != "COMPLETED") {
      return Status::Internal("job " + id + " is " + reply->job.state);
    }
    for (const TaskView& t : reply->job.tasks) {
      if (t.state != "COMPLETED") {
        return Status::Internal("job " + id + " task " + t.name + " is " +
                                t.state);
      }
      ++tasks;
    }
  }
  if (tasks_out != nullptr) *tasks_out = tasks;
  return Status::Ok();
}

std::vector<std::string> ShellJobs(const std::string& prefix, size_t tasks,
                                   size_t per_job) {
  std::vector<std::string> sources;
  for (size_t done = 0; done < tasks; done += per_job) {
    sources.push_back(ShellJob(prefix + "-" + std::to_string(sources.size()),
                               std::min(per_job, tasks - done), "true"));
  }
  return sources;
}

// ---------------------------------------------------------------- overhead

// overhead_tasks_per_s of this run, for the CURVE ratio; 0: not measured.
double g_plain_overhead = 0;

// With `curve`, droverd runs with --auth and everything connects with keys;
// the figures' names say so.
Status OverheadRun(const Options& o, const Counts& c, bool curve) {
  ScratchDir dir(curve ? "overhead-curve" : "overhead");
  Daemon d(o.setup, dir.path());
  if (curve) {
    if (Status s = d.EnableAuth(); !s.ok()) return s;
  }
  if (Status s = d.Start(); !s.ok()) return s;
  zmq::context_t ctx(2);
  Pool pool(ctx, d, c.bench_workers, c.bench_slots);
  if (Status s = pool.Start(); !s.ok()) return s;
  std::vector<std::string> sources =
      ShellJobs("overhead", c.overhead_tasks, c.tasks_per_job);
  Note("overhead: " + std::to_string(c.overhead_tasks) + " tasks in " +
       std::to_string(sources.size()) + " jobs, " +
       std::to_string(c.bench_workers) + " bench workers x " +
       std::to_string(c.bench_slots) + " slots");
  Submitter submitter(ctx, d.api(), d.client_keys());
  const double cpu0 = CpuSecondsOf(d.process()->pid());
  const double self0 = CpuSecondsOf(getpid());
  // As a client feeding a queue would: the next job goes in while fewer
  // than four jobs' worth of tasks are unfinished, so the queue stays short
  // (the backlog workload measures long queues).
  const auto t0 = Clock::now();
  std::vector<std::string> ids;
  size_t submitted = 0;
  for (const std::string& source : sources) {
    const size_t window = 4 * c.tasks_per_job;
    if (submitted >= window &&
        !pool.WaitAcked(submitted - window + 1, t0 + 600s)) {
      return Status::Timeout("overhead run");
    }
    auto id = submitter.SubmitAll({source}, 1);
    if (!id.ok()) return id.status();
    ids.push_back(id->front());
    submitted += std::min(c.tasks_per_job, c.overhead_tasks - submitted);
  }
  const double submitted_s = Seconds(Clock::now() - t0);
  if (Status s = pool.WaitAcked(c.overhead_tasks, 600s); !s.ok()) return s;
  const double secs = Seconds(pool.last_ack() - t0);
  const double cpu = CpuSecondsOf(d.process()->pid()) - cpu0;
  const double self = CpuSecondsOf(getpid()) - self0;
  size_t tasks = 0;
  if (Status s = CheckCompleted(d, ids, &tasks); !s.ok()) return s;
  if (tasks != c.overhead_tasks) return Status::Internal("task count");
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "overhead: last job stored after %.2f s, all completed in "
                "%.2f s; "
                "CPU used: droverd %.2f s (%.1f us a task), bench workers "
                "%.2f s; droverd RSS after the run %llu KiB",
                submitted_s, secs, cpu, cpu * 1e6 / c.overhead_tasks, self,
                static_cast<unsigned long long>(d.process()->RssKib()));
  Note(buf);
  const double per_s = c.overhead_tasks / secs;
  if (!curve) {
    g_plain_overhead = per_s;
    Figure("overhead_tasks_per_s", per_s, "tasks/s");
  } else {
    Figure("overhead_curve_tasks_per_s", per_s, "tasks/s");
    if (g_plain_overhead > 0) {
      Figure("curve_throughput_ratio", per_s / g_plain_overhead, "x");
    }
  }
  pool.Stop();
  return Status::Ok();
}

Status Overhead(const Options& o, const Counts& c) {
  return OverheadRun(o, c, false);
}

// ------------------------------------------------------------------- shell

// N threads, each running `body` `per_thread` times; runs per second.
double Concurrently(uint32_t n, size_t per_thread,
                    const std::function<bool()>& body) {
  std::atomic<size_t> ok{0};
  const auto t0 = Clock::now();
  {
    std::vector<std::jthread> threads;
    for (uint32_t i = 0; i < n; ++i) {
      threads.emplace_back([&] {
        for (size_t k = 0; k < per_thread; ++k) ok += body() ? 1 : 0;
      });
    }
  }
  return ok.load() / Seconds(Clock::now() - t0);
}

bool SpawnTrue() {
  static char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  pid_t pid;
  if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) {
    return false;
  }
  int status = 0;
  return waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

// Submits `sources` and waits until every job has ended; the rate of tasks
// from the submit to the last job's finished_at (droverd's clock).
Result<double> RunJobs(Daemon& d, const std::vector<std::string>& sources,
                       size_t tasks, std::chrono::seconds timeout) {
  zmq::context_t ctx(1);
  Submitter submitter(ctx, d.api());
  const TimeMs t0 = WallMs();
  auto ids = submitter.SubmitAll(sources, 4);
  if (!ids.ok()) return ids.status();
  Client client(d.api(), 30s);
  const auto deadline = Clock::now() + timeout;
  TimeMs last = 0;
  for (const std::string& id : *ids) {
    while (true) {
      ListRequest req;  // cheap: jobs without their tasks
      req.limit = static_cast<uint32_t>(ids->size());
      auto list = client.Call<ListReply>(req);
      if (!list.ok()) return list.status();
      const JobView* job = nullptr;
      for (const JobView& j : list->jobs) {
        if (j.id == id) job = &j;
      }
      if (job != nullptr && job->state != "PENDING" &&
          job->state != "RUNNING") {
        if (job->state != "COMPLETED") {
          return Status::Internal("job " + id + " ended " + job->state + ": " +
                                  job->error.value_or(""));
        }
        last = std::max(last, ParseRfc3339(job->finished_at.value_or("")));
        break;
      }
      if (Clock::now() > deadline) {
        return Status::Timeout("jobs did not finish in time; see " + d.dir());
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  if (last <= t0) return Status::Internal("no finish time");
  return tasks / ((last - t0) / 1000.0);
}

Status Shell(const Options& o, const Counts& c) {
  const uint32_t n = o.concurrency;
  const size_t per_thread = c.shell_tasks / n;
  ScratchDir dir("shell");
  Daemon d(o.setup, dir.path());
  if (Status s = d.Start(); !s.ok()) return s;
  auto worker = d.StartWorker("shell", {"--runtime", "shell", "--queue",
                                        "default:" + std::to_string(n)});
  if (Status s = d.WaitWorkerReady("shell", 10s); !s.ok()) return s;
  Note("shell: " + std::to_string(per_thread * n) +
       " runs of /bin/true at concurrency " + std::to_string(n) +
       ", raw before and after, and as `run = \"true\"` tasks (jobs of " +
       "1,000) on one drover-worker --queue default:" + std::to_string(n));
  const double raw1 = Concurrently(n, per_thread, SpawnTrue);
  const pid_t droverd = d.process()->pid();
  const double cpu0[] = {CpuSecondsOf(droverd), CpuSecondsOf(worker->pid()),
                         CpuSecondsOf(worker->pid(), true)};
  auto rate = RunJobs(d, ShellJobs("shell", per_thread * n, 1000),
                      per_thread * n, 600s);
  const double us_a_task = 1e6 / static_cast<double>(per_thread * n);
  const double cpu[] = {
      (CpuSecondsOf(droverd) - cpu0[0]) * us_a_task,
      (CpuSecondsOf(worker->pid()) - cpu0[1]) * us_a_task,
      (CpuSecondsOf(worker->pid(), true) - cpu0[2]) * us_a_task};
  const double raw2 = Concurrently(n, per_thread, SpawnTrue);
  if (!rate.ok()) return rate.status();
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "shell: fork+exec %.0f/s before, %.0f/s after; ratio %.2f; "
                "CPU a task: droverd %.0f us, worker %.0f us, the task "
                "itself %.0f us",
                raw1, raw2, *rate / ((raw1 + raw2) / 2), cpu[0], cpu[1],
                cpu[2]);
  Note(buf);
  Figure("fork_exec_per_s", (raw1 + raw2) / 2, "runs/s");
  Figure("shell_tasks_per_s", *rate, "tasks/s");
  return Status::Ok();
}

// ------------------------------------------------------------------ docker

bool BareContainer(DockerClient& docker) {
  ContainerConfig config;
  config.image = kDockerImage;
  config.cmd = {"/bin/sh", "-c", "true"};
  Result<std::string> id = docker.ContainerCreate(config);
  if (!id.ok()) return false;
  bool ok = docker.ContainerStart(*id).ok();
  if (ok) {
    Result<int64_t> code = docker.ContainerWait(*id, [] { return false; });
    ok = code.ok() && *code == 0;
  }
  return docker.ContainerRemove(*id).ok() && ok;
}

Status Docker(const Options& o, const Counts& c) {
  DockerClient docker(o.setup.docker_socket);
  if (Status s = docker.Ping(); !s.ok()) {
    return Status::Unavailable(s.message() +
                               " (run scripts/docker-env.sh start)");
  }
  Result<bool> present = docker.ImageExists(kDockerImage);
  if (!present.ok() || !*present) {
    return Status::Unavailable(std::string(kDockerImage) +
                               " is not present (scripts/docker-env.sh "
                               "start builds it)");
  }
  const uint32_t n = o.concurrency;
  const size_t per_thread = std::max<size_t>(1, c.docker_tasks / n);
  ScratchDir dir("docker");
  Daemon d(o.setup, dir.path());
  if (Status s = d.Start(); !s.ok()) return s;
  auto worker =
      d.StartWorker("docker", {"--runtime", "docker", "--docker-socket",
                               o.setup.docker_socket, "--queue",
                               "default:" + std::to_string(n)});
  if (Status s = d.WaitWorkerReady("docker", 20s); !s.ok()) return s;
  Note("docker: " + std::to_string(per_thread * n) + " containers of " +
       kDockerImage + " running `/bin/sh -c true` at concurrency " +
       std::to_string(n) + ": bare API loop before and after, and as tasks");
  auto bare = [&] { return BareContainer(docker); };
  const double raw1 = Concurrently(n, per_thread, bare);
  auto rate =
      RunJobs(d, {DockerJob("docker", per_thread * n, kDockerImage, "true")},
              per_thread * n, 600s);
  const double raw2 = Concurrently(n, per_thread, bare);
  if (!rate.ok()) return rate.status();
  char buf[120];
  std::snprintf(buf, sizeof buf,
                "docker: bare API %.2f/s before, %.2f/s after; ratio %.2f",
                raw1, raw2, *rate / ((raw1 + raw2) / 2));
  Note(buf);
  Figure("docker_api_per_s", (raw1 + raw2) / 2, "containers/s");
  Figure("docker_tasks_per_s", *rate, "tasks/s");
  return Status::Ok();
}

// ----------------------------------------------------------------- latency

Status LatencyRun(const Options& o, const Counts& c, bool curve) {
  ScratchDir dir(curve ? "latency-curve" : "latency");
  if (!curve) NoteFsyncLatency(dir.path());
  Daemon d(o.setup, dir.path());
  if (curve) {
    if (Status s = d.EnableAuth(); !s.ok()) return s;
  }
  if (Status s = d.Start(); !s.ok()) return s;
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Clock::time_point> started;  // job id -> assign
  zmq::context_t ctx(1);
  Pool pool(ctx, d, 1, 4, [&](const AttemptRef& ref, Clock::time_point at) {
    std::lock_guard lock(mu);
    started[ref.job_id] = at;
    cv.notify_all();
  });
  if (Status s = pool.Start(); !s.ok()) return s;
  Client client(d.api(), 10s, d.client_keys());
  const std::string source = ShellJob("latency", 1, "true");
  std::vector<double> us;
  for (size_t i = 0; i < c.latency_jobs; ++i) {
    SubmitRequest req;
    req.source = source;
    const auto t0 = Clock::now();
    auto reply = client.Call<SubmitReply>(req);
    if (!reply.ok()) return reply.status();
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 10s,
                     [&] { return started.count(reply->job_id) > 0; })) {
      return Status::Timeout("job " + reply->job_id + " never started");
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(started[reply->job_id] - t0)
            .count());
    lock.unlock();
    // Idle again: the result stored and acknowledged.
    if (Status s = pool.WaitAcked(i + 1, 10s); !s.ok()) return s;
  }
  Note("latency: " + std::to_string(us.size()) +
       " one-task jobs, one at a time; max " +
       std::to_string(static_cast<int>(Percentile(us, 100))) + " us");
  const std::string name = curve ? "dispatch_latency_curve" : "dispatch_latency";
  Figure(name + "_p50_us", Percentile(us, 50), "us");
  Figure(name + "_p99_us", Percentile(us, 99), "us");
  pool.Stop();
  return Status::Ok();
}

Status Latency(const Options& o, const Counts& c) {
  return LatencyRun(o, c, false);
}

// The throughput and latency workloads with CURVE on every socket.
Status Curve(const Options& o, const Counts& c) {
  if (Status s = OverheadRun(o, c, true); !s.ok()) return s;
  return LatencyRun(o, c, true);
}

// ----------------------------------------------------------------- requeue

Result<double> RequeueRound(const Options& o) {
  ScratchDir dir("requeue");
  Daemon d(o.setup, dir.path());  // default heartbeat: 1 s x 3
  if (Status s = d.Start(); !s.ok()) return s;
  auto a = d.StartWorker("a", {"--runtime", "shell", "--queue", "default:1"});
  if (Status s = d.WaitWorkerReady("a", 10s); !s.ok()) return s;
  Client client(d.api(), 10s);
  SubmitRequest submit;
  // The script records its PID so the bench can end the copy that the
  // killed worker leaves behind.
  submit.source =
      "name = \"requeue\"\n[[tasks]]\nname = \"long\"\nrun = "
      "\"echo $$ > " +
      dir.path() + "/pid-$DROVER_ATTEMPT; exec sleep 120\"\n";
  auto job = client.Call<SubmitReply>(submit);
  if (!job.ok()) return job.status();
  StatusRequest status;
  status.job_id = job->job_id;
  auto poll_until = [&](const std::string& worker,
                        std::chrono::milliseconds timeout) -> Status {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto r = client.Call<StatusReply>(status);
      if (r.ok() && !r->job.tasks.empty() &&
          r->job.tasks[0].state == "RUNNING" &&
          r->job.tasks[0].worker.value_or("") == worker) {
        return Status::Ok();
      }
      std::this_thread::sleep_for(2ms);
    }
    return Status::Timeout("the task never ran on " + worker);
  };
  if (Status s = poll_until("a", 10s); !s.ok()) return s;
  auto b = d.StartWorker("b", {"--runtime", "shell", "--queue", "default:1"});
  if (Status s = d.WaitWorkerReady("b", 10s); !s.ok()) return s;
  const auto t0 = Clock::now();
  a->Kill(SIGKILL);
  Status moved = poll_until("b", 30s);
  const double ms = MsSince(t0);
  a->Wait(5s);
  // End the orphaned first attempt, then the second through a cancel.
  std::ifstream pid_file(dir.path() + "/pid-1");
  pid_t orphan = 0;
  if (pid_file >> orphan && orphan > 1) kill(orphan, SIGKILL);
  CancelRequest cancel;
  cancel.job_id = job->job_id;
  (void)client.Call<StatusReply>(cancel);
  std::this_thread::sleep_for(100ms);
  if (!moved.ok()) return moved;
  return ms;
}

Status Requeue(const Options& o, const Counts& c) {
  std::vector<double> ms;
  for (int i = 0; i < c.requeue_rounds; ++i) {
    auto r = RequeueRound(o);
    if (!r.ok()) return r.status();
    ms.push_back(*r);
  }
  std::string all;
  for (double m : ms) all += " " + std::to_string(static_cast<int>(m));
  Note("requeue: kill -9 of the busy worker to RUNNING elsewhere, ms:" + all +
       " (heartbeat 1 s x 3: detection takes 2-3 s by design)");
  Figure("requeue_after_worker_kill_ms", Median(ms), "ms");
  return Status::Ok();
}

// ----------------------------------------------------------------- restart

// Writes `finished` completed one-task jobs and `pending` tasks (jobs of
// 100) waiting for a worker into the store in `dir`, as droverd would have
// left them.
Status FillStore(const std::string& dir, size_t finished, size_t pending) {
  auto store = Store::Open(dir);
  if (!store.ok()) return store.status();
  const std::string one = ShellJob("done", 1, "true");
  const std::string hundred = ShellJob("waiting", 100, "true");
  ParseResult one_spec = ParseJobText(one, "bench.toml");
  ParseResult hundred_spec = ParseJobText(hundred, "bench.toml");
  if (!one_spec.ok() || !hundred_spec.ok()) {
    return Status::Internal("bench job files do not parse");
  }
  const TimeMs now = WallMs();
  auto batch = std::make_unique<Batch>(store->get());
  auto commit_every = [&](size_t i, size_t n) -> Status {
    if ((i + 1) % n != 0) return Status::Ok();
    Status s = (*store)->Commit(*batch);
    batch = std::make_unique<Batch>(store->get());
    return s;
  };
  for (size_t i = 0; i < finished; ++i) {
    auto [job, tasks] = MakeJobRecords((*store)->NewJobId(), *one_spec.job, one,
                                       "bench.toml", now);
    Status s = batch->PutJob(job);
    for (TaskRecord& t : tasks) {
      for (TaskState st :
           {TaskState::kCreated, TaskState::kPending, TaskState::kScheduled,
            TaskState::kRunning, TaskState::kCompleted}) {
        t.state = st;
        if (st == TaskState::kScheduled) {
          t.attempts = 1;
          t.worker = "bench-0";
          AttemptRecord h;
          h.number = 1;
          h.worker = t.worker;
          t.history.push_back(h);
        }
        if (st == TaskState::kCompleted) {
          t.exit_code = 0;
          t.started_at = t.finished_at = now;
          t.history.back().started_at = t.history.back().finished_at = now;
          t.history.back().exit_code = 0;
        }
        if (s.ok()) s = batch->PutTask(t);
      }
    }
    job.started_at = job.finished_at = now;
    for (JobState st : {JobState::kRunning, JobState::kCompleted}) {
      job.state = st;
      if (s.ok()) s = batch->PutJob(job);
    }
    if (s.ok()) s = commit_every(i, 1000);
    if (!s.ok()) return s;
  }
  for (size_t i = 0; i < pending / 100; ++i) {
    auto [job, tasks] = MakeJobRecords((*store)->NewJobId(), *hundred_spec.job,
                                       hundred, "bench.toml", now);
    Status s = batch->PutJob(job);
    for (TaskRecord& t : tasks) {
      for (TaskState st : {TaskState::kCreated, TaskState::kPending}) {
        t.state = st;
        if (s.ok()) s = batch->PutTask(t);
      }
    }
    if (!s.ok()) return s;
  }
  return (*store)->Commit(*batch);
}

Status Restart(const Options& o, const Counts& c) {
  ScratchDir dir("restart");
  Daemon d(o.setup, dir.path());
  const auto t_fill = Clock::now();
  if (Status s =
          FillStore(d.store_dir(), c.restart_finished, c.restart_pending);
      !s.ok()) {
    return s;
  }
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "restart: store of %zu finished one-task jobs and %zu "
                "pending tasks (jobs of 100) written in %.1f s",
                c.restart_finished, c.restart_pending,
                Seconds(Clock::now() - t_fill));
  Note(buf);
  if (Status s = d.Start(); !s.ok()) return s;
  std::vector<double> ms;
  for (int i = 0; i < c.restart_rounds; ++i) {
    d.Kill(SIGKILL);
    const auto t0 = Clock::now();
    if (Status s = d.Start(/*wait_ready=*/false); !s.ok()) return s;
    // A DEALER that queues the request until droverd has bound its socket
    // and retries the connection every millisecond.
    zmq::context_t ctx(1);
    zmq::socket_t probe(ctx, zmq::socket_type::dealer);
    probe.set(zmq::sockopt::linger, 0);
    probe.set(zmq::sockopt::reconnect_ivl, 1);
    probe.connect(d.api());
    WorkersRequest req;
    req.id = 1;
    probe.send(zmq::buffer(Encode(req)), zmq::send_flags::none);
    zmq_pollitem_t in[] = {{probe.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(in, 1, 30'000) <= 0) {
      return Status::Timeout("droverd did not answer after a restart");
    }
    ms.push_back(MsSince(t0));
  }
  std::string all;
  for (double m : ms) all += " " + std::to_string(static_cast<int>(m));
  Note(
      "restart: from the start of droverd (after SIGKILL) to its first "
      "answer, ms:" +
      all);
  Figure("restart_ready_ms", Median(ms), "ms");

  // Serve the pending tasks, then read the RSS of a daemon that holds
  // 100,000 jobs and has just worked through 10,000 tasks.
  zmq::context_t ctx(1);
  Pool pool(ctx, d, 2, 128);
  if (Status s = pool.Start(); !s.ok()) return s;
  if (Status s = pool.WaitAcked(c.restart_pending, 30s); !s.ok()) return s;
  Client client(d.api(), 30s);
  ListRequest list;
  list.limit = 100;
  if (auto r = client.Call<ListReply>(list); !r.ok()) return r.status();
  std::this_thread::sleep_for(500ms);
  pool.Stop();
  Figure("rss_100k_jobs_kib", static_cast<double>(d.process()->RssKib()),
         "KiB");
  return Status::Ok();
}

// --------------------------------------------------------------------- rss

Status Rss(const Options& o, const Counts&) {
  ScratchDir dir("rss");
  Daemon d(o.setup, dir.path());
  if (Status s = d.Start(); !s.ok()) return s;
  std::this_thread::sleep_for(1s);
  Figure("rss_idle_kib", static_cast<double>(d.process()->RssKib()), "KiB");
  std::vector<std::string> flags = {"--runtime", "shell"};
  std::string runtimes = "shell";
  if (DockerClient(o.setup.docker_socket).Ping().ok()) {
    flags.insert(flags.end(), {"--runtime", "docker", "--docker-socket",
                               o.setup.docker_socket});
    runtimes += " and docker";
  }
  auto worker = d.StartWorker("idle", flags);
  if (Status s = d.WaitWorkerReady("idle", 10s); !s.ok()) return s;
  std::this_thread::sleep_for(1500ms);
  Note("rss: droverd with an empty store; a worker with the " + runtimes +
       " runtimes, connected and idle");
  Figure("worker_rss_idle_kib", static_cast<double>(worker->RssKib()), "KiB");
  return Status::Ok();
}

// ----------------------------------------------------------------- backlog

// Throughput while `backlog` tasks are queued ahead: the backlog is stored
// before any worker connects, then kept above `backlog` by submitting jobs
// of 1,000 while `measured` tasks complete.
Result<double> BacklogRate(const Options& o, const Counts& c, size_t backlog) {
  ScratchDir dir("backlog");
  Daemon d(o.setup, dir.path());
  if (Status s = d.Start(); !s.ok()) return s;
  zmq::context_t ctx(2);
  Submitter submitter(ctx, d.api());
  const auto t_fill = Clock::now();
  auto filled = submitter.SubmitAll(
      ShellJobs("backlog", backlog, c.backlog_tasks_per_job), 2, 1200s);
  if (!filled.ok()) return filled.status();
  const double fill_s = Seconds(Clock::now() - t_fill);
  // Storing the backlog is a burst of writes that LevelDB compacts for a
  // while afterwards; measure the queue, not that burst's aftermath: wait
  // until droverd is idle (under 5% of a core for half a second).
  const auto t_settle = Clock::now();
  for (double cpu = CpuSecondsOf(d.process()->pid());
       Clock::now() - t_settle < 180s;) {
    std::this_thread::sleep_for(500ms);
    const double now = CpuSecondsOf(d.process()->pid());
    if (now - cpu < 0.025) break;
    cpu = now;
  }
  const double settle_s = Seconds(Clock::now() - t_settle);
  const uint64_t rss_filled = d.process()->RssKib();
  Pool pool(ctx, d, c.bench_workers, c.bench_slots);
  if (Status s = pool.Start(); !s.ok()) return s;
  const std::string top_up = ShellJob("top-up", 1000, "true");
  uint64_t submitted = backlog;
  const uint64_t warmup = std::min<uint64_t>(2000, backlog / 2);
  Clock::time_point t0{};
  double cpu0 = 0;
  const auto deadline = Clock::now() + 600s;
  while (true) {
    const uint64_t done = pool.acked();
    if (t0 == Clock::time_point{} && done >= warmup) {
      t0 = Clock::now();
      cpu0 = CpuSecondsOf(d.process()->pid());
    }
    if (done >= warmup + c.backlog_measured) break;
    if (Clock::now() > deadline) return Status::Timeout("backlog run");
    if (submitted - done < backlog) {
      auto r = submitter.SubmitAll({top_up}, 1);
      if (!r.ok()) return r.status();
      submitted += 1000;
    } else {
      // Until the next top-up is due or the measurement can start or end.
      uint64_t next = submitted - backlog + 1;
      if (t0 == Clock::time_point{}) next = std::min(next, warmup);
      next = std::min<uint64_t>(next, warmup + c.backlog_measured);
      pool.WaitAcked(next, std::min(deadline, Clock::now() + 1s));
    }
  }
  const double rate = c.backlog_measured / Seconds(Clock::now() - t0);
  const double cpu_us =
      (CpuSecondsOf(d.process()->pid()) - cpu0) * 1e6 / c.backlog_measured;
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "backlog: %zu tasks stored in %.1f s, settled in %.1f s "
                "(droverd RSS then %llu KiB); %zu completed at %.0f tasks/s, "
                "droverd CPU %.1f us a task",
                backlog, fill_s, settle_s,
                static_cast<unsigned long long>(rss_filled), c.backlog_measured,
                rate, cpu_us);
  Note(buf);
  pool.Stop();
  return rate;
}

// The small backlog is measured before and after the big one, and the two
// averaged, so that a change in the machine's load during the run does not
// land on one side of the ratio only.
Status Backlog(const Options& o, const Counts& c) {
  auto small1 = BacklogRate(o, c, c.backlog_small);
  if (!small1.ok()) return small1.status();
  auto big = BacklogRate(o, c, c.backlog_big);
  if (!big.ok()) return big.status();
  auto small2 = BacklogRate(o, c, c.backlog_small);
  if (!small2.ok()) return small2.status();
  Note("backlog: ratio of the rate with " + std::to_string(c.backlog_big) +
       " queued to the mean rate with " + std::to_string(c.backlog_small) +
       " queued");
  Figure("backlog_1m_ratio", *big / ((*small1 + *small2) / 2), "ratio");
  return Status::Ok();
}

// -------------------------------------------------------------------- main

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

std::string DockerSocket() {
  const char* host = std::getenv("DOCKER_HOST");
  if (host != nullptr && std::string(host).rfind("unix://", 0) == 0) {
    return std::string(host).substr(7);
  }
  return "/var/run/docker.sock";
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--mode quick|full] [--workloads a,b,...] "
               "[--concurrency N] [--build-dir DIR] [--keep]\n"
               "  experiments: [--overhead-tasks N] [--bench-workers N] "
               "[--bench-slots N]\nworkloads:",
               argv0);
  for (const char* w : kWorkloads) std::fprintf(stderr, " %s", w);
  std::fprintf(stderr, "\n");
  return 2;
}

int Main(int argc, char** argv) {
  Options o;
  o.setup.build_dir = SelfDir();
  o.setup.docker_socket = DockerSocket();
  for (const char* w : kWorkloads) o.workloads.insert(w);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--mode") {
      const std::string m = value();
      if (m != "quick" && m != "full") return Usage(argv[0]);
      o.full = m == "full";
    } else if (a == "--workloads") {
      o.workloads.clear();
      std::stringstream list(value());
      for (std::string w; std::getline(list, w, ',');) {
        if (std::find(std::begin(kWorkloads), std::end(kWorkloads), w) ==
            std::end(kWorkloads)) {
          return Usage(argv[0]);
        }
        o.workloads.insert(w);
      }
    } else if (a == "--overhead-tasks") {
      o.overhead_tasks = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--bench-workers") {
      o.bench_workers = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--bench-slots") {
      o.bench_slots = static_cast<uint32_t>(std::atoi(value().c_str()));
    } else if (a == "--concurrency") {
      o.concurrency = static_cast<uint32_t>(std::atoi(value().c_str()));
    } else if (a == "--build-dir") {
      o.setup.build_dir = value();
    } else if (a == "--keep") {
      KeepScratchDirs(true);
    } else {
      return Usage(argv[0]);
    }
  }
  signal(SIGPIPE, SIG_IGN);
  const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
  if (o.concurrency == 0) o.concurrency = cores;
  Counts counts = CountsFor(o.full);
  if (o.overhead_tasks > 0) counts.overhead_tasks = o.overhead_tasks;
  if (o.bench_workers > 0) counts.bench_workers = o.bench_workers;
  if (o.bench_slots > 0) counts.bench_slots = o.bench_slots;
  Note(std::string("drover_bench ") + DROVER_VERSION + ", mode " +
       (o.full ? "full" : "quick") + ", executables from " + o.setup.build_dir);
  Figure("cores", cores, "cores");
  const std::pair<const char*, Status (*)(const Options&, const Counts&)>
      runs[] = {{"overhead", Overhead}, {"shell", Shell},
                {"docker", Docker},     {"latency", Latency},
                {"curve", Curve},
                {"requeue", Requeue},   {"restart", Restart},
                {"rss", Rss},           {"backlog", Backlog}};
  int failed = 0;
  const auto t0 = Clock::now();
  for (const auto& [name, run] : runs) {
    if (!o.workloads.count(name)) continue;
    // What the previous workload left in the page cache is written out
    // first, so its writeback does not run during this one's measurements.
    ::sync();
    const auto started = Clock::now();
    Status s = run(o, counts);
    if (!s.ok()) {
      ++failed;
      Note(std::string(name) + " FAILED: " + s.ToString());
    } else {
      char buf[80];
      std::snprintf(buf, sizeof buf, "%s took %.1f s", name,
                    Seconds(Clock::now() - started));
      Note(buf);
    }
  }
  char buf[80];
  std::snprintf(buf, sizeof buf, "total %.1f s", Seconds(Clock::now() - t0));
  Note(buf);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace drover::bench

int main(int argc, char** argv) { return drover::bench::Main(argc, argv); }
