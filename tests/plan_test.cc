// The scheduling core, driven directly with a fake clock: no sockets, no
// sleeps. Each test feeds events and checks the transitions and messages.
#include "plan.h"

#include <doctest/doctest.h>

#include "drover/clock.h"

namespace drover {
namespace {

using namespace std::chrono_literals;

// A Plan with a fake clock, and helpers to play a worker's part.
class Fixture {
 public:
  explicit Fixture(PlanOptions o = {.instance = "s1",
                                    .heartbeat_interval = 1000ms,
                                    .heartbeat_liveness = 3})
      : plan_(o, 42) {}

  std::string AddJob(const std::string& toml) {
    ParseResult parsed = ParseJobText(toml, "t.toml");
    for (const auto& e : parsed.errors) MESSAGE(e.ToString());
    REQUIRE(parsed.ok());
    std::string id = "job" + std::to_string(++jobs_);
    auto r = MakeJobRecords(id, *parsed.job, toml, "t.toml", clock_.Now());
    Effects fx;
    plan_.AddJob(r.job, *parsed.job, r.tasks, clock_.Now(), fx);
    Absorb(fx);
    return id;
  }

  void Hello(const std::string& name, std::map<std::string, uint32_t> queues,
             std::vector<std::string> runtimes = {"shell"},
             std::vector<AttemptRef> running = {},
             const std::string& instance = "",
             std::map<std::string, uint32_t> prefetch = {},
             const std::string& key = "",
             std::optional<ContainerPolicy> policy = std::nullopt) {
    drover::Hello h;
    h.policy = std::move(policy);
    h.prefetch = std::move(prefetch);
    h.name = name;
    h.instance = instance.empty() ? name + "-life1" : instance;
    h.queues = std::move(queues);
    h.runtimes = std::move(runtimes);
    h.running = std::move(running);
    Effects fx;
    Status st = plan_.OnHello(h, key, clock_.Now(), fx);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    Absorb(fx);
  }

  void Heartbeat(const std::string& name, std::vector<AttemptRef> held = {},
                 const std::string& instance = "",
                 const std::string& key = "") {
    WorkerHeartbeat hb;
    hb.name = name;
    hb.instance = instance.empty() ? name + "-life1" : instance;
    hb.state = "ready";
    hb.attempts = std::move(held);
    Effects fx;
    plan_.OnHeartbeat(hb, key, clock_.Now(), fx);
    Absorb(fx);
  }

  void Tick() {
    Effects fx;
    plan_.Tick(clock_.Now(), fx);
    Absorb(fx);
  }

  // `ran`: how long the attempt ran, ending now (unknown if negative).
  void Result(const std::string& worker, const AttemptRef& ref, int code,
              std::string output = "", std::string error = "",
              std::chrono::milliseconds ran = -1ms) {
    TaskResult r;
    r.ref = ref;
    if (ran >= 0ms) {
      r.finished_at_ms = clock_.Now();
      r.started_at_ms = r.finished_at_ms - ran.count();
    }
    r.exit_code = code;
    r.output = std::move(output);
    r.error = std::move(error);
    Effects fx;
    plan_.OnResult(worker, r, clock_.Now(), fx);
    Absorb(fx);
  }

  void Started(const std::string& worker, const AttemptRef& ref) {
    drover::Started s;
    s.ref = ref;
    Effects fx;
    plan_.OnStarted(worker, s, clock_.Now(), fx);
    Absorb(fx);
  }

  // Assignments sent since the last call, as (worker, Assign).
  std::vector<std::pair<std::string, Assign>> TakeAssigns() {
    std::vector<std::pair<std::string, Assign>> out;
    for (auto& [w, body] : sent_) {
      auto f = Frame::Parse(body);
      if (f.ok() && f->type() == "assign")
        out.emplace_back(w, *f->As<Assign>());
    }
    std::erase_if(sent_, [](const auto& m) {
      return Frame::Parse(m.second)->type() == "assign";
    });
    return out;
  }

  std::vector<std::string> SentTypes(const std::string& worker) {
    std::vector<std::string> out;
    for (auto& [w, body] : sent_) {
      if (w == worker) out.push_back(Frame::Parse(body)->type());
    }
    return out;
  }

  TaskRecord Task(const std::string& job, uint32_t i) {
    return tasks_.at({job, i});
  }
  JobRecord Job(const std::string& job) { return jobs_by_id_.at(job); }

  FakeClock clock_;
  Plan plan_;
  std::vector<std::pair<std::string, std::string>> sent_;

 private:
  // Keeps the latest record of everything, as the store would, and checks
  // each transition against the state machine as the store does.
  void Absorb(Effects& fx) {
    for (const JobRecord& j : fx.jobs) {
      auto it = jobs_by_id_.find(j.id);
      if (it != jobs_by_id_.end()) {
        CHECK_MESSAGE(CheckJobTransition(it->second.state, j.state).ok(),
                      JobStateName(it->second.state)
                          << " -> " << JobStateName(j.state));
      }
      jobs_by_id_[j.id] = j;
    }
    for (const TaskRecord& t : fx.tasks) {
      auto it = tasks_.find({t.job_id, t.index});
      if (it != tasks_.end()) {
        CHECK_MESSAGE(CheckTaskTransition(it->second.state, t.state).ok(),
                      t.name << ": " << TaskStateName(it->second.state)
                             << " -> " << TaskStateName(t.state));
      }
      tasks_[{t.job_id, t.index}] = t;
    }
    for (auto& m : fx.messages) sent_.push_back(m);
  }

  int jobs_ = 0;
  std::map<std::pair<std::string, uint32_t>, TaskRecord> tasks_;
  std::map<std::string, JobRecord> jobs_by_id_;
};

TaskSpec Docker(const std::string& image) {
  ParseResult r = ParseJobText(
      "name = \"d\"\n[[tasks]]\nname = \"t\"\nimage = \"" + image + "\"\n",
      "d.toml");
  REQUIRE(r.ok());
  return r.job->tasks[0];
}

const char* kThreeRoots = R"(
name = "roots"
[[tasks]]
name = "a"
depends_on = []
run = "true"
[[tasks]]
name = "b"
depends_on = []
run = "true"
[[tasks]]
name = "c"
depends_on = []
run = "true"
)";

TEST_CASE("Plan.DispatchFillsFreeSlotsOnly") {
  Fixture f;
  std::string job = f.AddJob(kThreeRoots);
  f.Tick();
  CHECK(f.TakeAssigns().empty());  // no worker yet
  CHECK(f.Task(job, 0).state == TaskState::kPending);
  f.Hello("w1", {{"default", 2}});
  f.Tick();
  auto assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 2);
  CHECK(assigns[0].second.ref.attempt == 1);
  CHECK(f.Task(job, 0).state == TaskState::kScheduled);
  CHECK(f.Task(job, 2).state == TaskState::kPending);
  f.Result("w1", assigns[0].second.ref, 0);
  f.Tick();
  assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 1);
  CHECK(assigns[0].second.ref.task == 2);
}

TEST_CASE("Plan.AttemptsAreHeldOnlyWhenNoSlotIsFree") {
  Fixture f;
  std::string job = f.AddJob(kThreeRoots);
  // "eager" has room to hold three; "plain" has a slot and no room.
  f.Hello("eager", {{"default", 1}}, {"shell"}, {}, "", {{"default", 3}});
  f.Hello("plain", {{"default", 1}});
  f.Tick();
  auto assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 3);
  std::map<std::string, int> per_worker;
  for (const auto& [worker, a] : assigns) ++per_worker[worker];
  // A slot each first; the third is held by the one with room.
  CHECK(per_worker["eager"] == 2);
  CHECK(per_worker["plain"] == 1);
  for (int i = 0; i < 3; ++i) {
    CHECK(f.Task(job, i).state == TaskState::kScheduled);
  }
  auto workers = f.plan_.Workers();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].name == "eager");
  CHECK(workers[0].running == 1);
  CHECK(workers[0].held == 1);
  CHECK(workers[1].running == 1);
  CHECK(workers[1].held == 0);
}

TEST_CASE("Plan.AWorkerHoldsWhatItRunsInTheHoldHorizon") {
  Fixture f;  // hold_horizon 20 ms
  std::string toml = "name = \"many\"\n";
  for (int i = 0; i < 40; ++i) {
    toml += "[[tasks]]\nname = \"t" + std::to_string(i) +
            "\"\ndepends_on = []\nrun = \"true\"\n";
  }
  const std::string job = f.AddJob(toml);
  f.Hello("w", {{"default", 2}}, {"shell"}, {}, "", {{"default", 30}});
  f.Tick();
  auto held = [&] { return f.plan_.Workers().at(0).held; };
  // Nothing known of its tasks yet: one held per slot.
  auto assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 4);
  CHECK(held() == 2);
  // Tasks of 1 ms: two slots run forty in 20 ms; it may hold 30.
  f.Result("w", assigns[0].second.ref, 0, "", "", 1ms);
  f.Result("w", assigns[1].second.ref, 0, "", "", 1ms);
  f.Tick();
  auto more = f.TakeAssigns();
  REQUIRE(more.size() == 30);
  CHECK(held() == 30);
  // A task of 2 s: the mean of the latest jumps past the horizon, and it
  // is given nothing more to hold; the next go to free slots only.
  f.Result("w", assigns[2].second.ref, 0, "", "", 2000ms);
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  CHECK(held() == 29);
  for (int i = 0; i < 29; ++i) {
    f.Result("w", more[i].second.ref, 0, "", "", 2000ms);
  }
  f.Result("w", assigns[3].second.ref, 0, "", "", 2000ms);
  f.Tick();
  // One held attempt is left, now running; the slot that freed is
  // refilled, and nothing more is held.
  CHECK(f.TakeAssigns().size() == 1);
  CHECK(held() == 0);
  CHECK(f.plan_.Workers().at(0).running == 2);
}

TEST_CASE("Plan.QueueAndRuntimeMustMatch") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "q"
[[tasks]]
name = "gpu"
queue = "gpu"
run = "true"
depends_on = []
[[tasks]]
name = "boxed"
image = "busybox"
run = "true"
depends_on = []
)");
  f.Hello("shell-only", {{"default", 4}, {"gpu", 1}}, {"shell"});
  f.Tick();
  auto assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 1);
  CHECK(assigns[0].first == "shell-only");
  CHECK(assigns[0].second.queue == "gpu");
  CHECK(f.Task(job, 1).state == TaskState::kPending);  // needs docker
  f.Hello("docker", {{"default", 1}}, {"docker"});
  f.Tick();
  assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 1);
  CHECK(assigns[0].first == "docker");
  CHECK(assigns[0].second.runtime == "docker");
  CHECK(assigns[0].second.task.image == "busybox");
}

TEST_CASE("Plan.SilentWorkerIsDeclaredDeadAfterLivenessAndItsTasksRequeued") {
  Fixture f;  // 1 s × 3
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w1", {{"default", 1}});
  f.Hello("w2", {{"default", 1}});
  f.Tick();
  auto first = f.TakeAssigns();
  REQUIRE(first.size() == 1);
  const std::string victim = first[0].first;
  const std::string other = victim == "w1" ? "w2" : "w1";
  for (int i = 0; i < 3; ++i) {
    f.clock_.Advance(1000ms);
    f.Heartbeat(other);
    f.Tick();
  }
  // Exactly interval × liveness of silence: still alive.
  CHECK(f.TakeAssigns().empty());
  f.clock_.Advance(1ms);
  f.Heartbeat(other);
  f.Tick();
  auto second = f.TakeAssigns();
  REQUIRE(second.size() == 1);
  CHECK(second[0].first == other);
  CHECK(second[0].second.ref.attempt == 2);
  CHECK(f.Task(job, 0).history.size() == 2);
  CHECK(f.Task(job, 0).history[0].error.find("stopped responding") !=
        std::string::npos);
  // The dead worker's late result for attempt 1 is acknowledged but
  // changes nothing.
  f.Result(victim, first[0].second.ref, 0, "late");
  CHECK(f.Task(job, 0).state == TaskState::kScheduled);
  CHECK(f.Task(job, 0).attempts == 2);
  CHECK(f.SentTypes(victim).back() == "ack");
  // Its next heartbeat gets it asked to announce itself again.
  f.Heartbeat(victim);
  CHECK(f.SentTypes(victim).back() == "announce");
  f.Result(other, second[0].second.ref, 0, "fresh");
  CHECK(f.Task(job, 0).state == TaskState::kCompleted);
  CHECK(f.Task(job, 0).output == "fresh");
  CHECK(f.Job(job).state == JobState::kCompleted);
}

TEST_CASE("Plan.RetriesBackOffExponentiallyWithJitterThenFail") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "r"
[[tasks]]
name = "flaky"
run = "false"
retry = { limit = 2, initial_delay = "1s", max_delay = "1500ms", scaling = 2.0 }
[[tasks]]
name = "after"
run = "true"
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  f.Result("w", a[0].second.ref, 3);
  TaskRecord t = f.Task(job, 0);
  CHECK(t.state == TaskState::kPending);
  const int64_t d1 = t.not_before - f.clock_.Now();
  CHECK(d1 >= 500);   // half of 1 s fixed
  CHECK(d1 <= 1000);  // plus up to half random
  f.clock_.Advance(std::chrono::milliseconds(d1 - 1));
  f.Tick();
  CHECK(f.TakeAssigns().empty());  // not before its time
  f.clock_.Advance(1ms);
  f.Tick();
  a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.ref.attempt == 2);
  f.Result("w", a[0].second.ref, 3);
  const int64_t d2 = f.Task(job, 0).not_before - f.clock_.Now();
  CHECK(d2 >= 750);  // 2 s capped at 1.5 s, half fixed
  CHECK(d2 <= 1500);
  f.clock_.Advance(std::chrono::milliseconds(d2));
  f.Tick();
  a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  f.Result("w", a[0].second.ref, 3);
  t = f.Task(job, 0);
  CHECK(t.state == TaskState::kFailed);
  CHECK(t.attempts == 3);
  CHECK(t.error == "exited with code 3");
  CHECK(f.Task(job, 1).state == TaskState::kCancelled);  // never started
  CHECK(f.Job(job).state == JobState::kFailed);
  CHECK(f.Job(job).error == "task 'flaky' failed: exited with code 3");
}

TEST_CASE("Plan.FailureLetsRunningSiblingsFinish") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "siblings"
[[tasks]]
name = "bad"
depends_on = []
run = "false"
[[tasks]]
name = "slow"
depends_on = []
run = "sleep 1"
[[tasks]]
name = "waits"
depends_on = ["bad", "slow"]
run = "true"
)");
  f.Hello("w", {{"default", 2}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 2);
  f.Result("w", a[0].second.ref, 1);
  CHECK(f.Task(job, 0).state == TaskState::kFailed);
  CHECK(f.Job(job).state == JobState::kRunning);  // "slow" still running
  f.Started("w", a[1].second.ref);
  f.Result("w", a[1].second.ref, 0);
  CHECK(f.Task(job, 1).state == TaskState::kCompleted);
  CHECK(f.Task(job, 2).state == TaskState::kCancelled);
  CHECK(f.Job(job).state == JobState::kFailed);
}

TEST_CASE("Plan.IfFalseSkipsAndDependentsStillRun") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "cond"
[inputs]
mode = "fast"
[[tasks]]
name = "maybe"
if = "{{ inputs.mode != 'fast' }}"
run = "true"
[[tasks]]
name = "then"
run = "echo {{ inputs.mode }}"
)");
  CHECK(f.Task(job, 0).state == TaskState::kSkipped);
  CHECK(f.Task(job, 1).state == TaskState::kPending);
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.task.run == "echo fast");
}

TEST_CASE("Plan.OutputsFlowToLaterTasksAndSecretsOnlyToEnv") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "flow"
[secrets]
TOKEN = "s3cr3t"
[[tasks]]
name = "first"
run = "true"
var = "first"
[[tasks]]
name = "second"
run = "echo {{ tasks.first }} {{ job.name }}"
env = { AUTH = "{{ secrets.TOKEN }}" }
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  f.Result("w", a[0].second.ref, 0, "value-1 leaked s3cr3t");
  CHECK(f.Task(job, 0).output == "value-1 leaked [redacted]");
  f.Tick();
  a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.task.run == "echo value-1 leaked [redacted] flow");
  CHECK(a[0].second.task.env.at("AUTH") == "s3cr3t");
  CHECK(a[0].second.redact == std::vector<std::string>{"s3cr3t"});
}

TEST_CASE("Plan.RecoveredAttemptsAreAdoptedOrRequeuedAfterGrace") {
  Fixture f;
  ParseResult parsed = ParseJobText(kThreeRoots, "t.toml");
  REQUIRE(parsed.ok());
  auto r = MakeJobRecords("j", *parsed.job, kThreeRoots, "t.toml", 0);
  for (uint32_t i = 0; i < 2; ++i) {
    r.tasks[i].state = TaskState::kRunning;
    r.tasks[i].attempts = 1;
    r.tasks[i].worker = i == 0 ? "alive" : "gone";
    AttemptRecord h;
    h.number = 1;
    h.worker = r.tasks[i].worker;
    r.tasks[i].history.push_back(h);
  }
  r.tasks[2].state = TaskState::kPending;
  r.job.state = JobState::kRunning;
  Effects fx;
  f.plan_.RecoverJob(r.job, *parsed.job, r.tasks, f.clock_.Now(), fx);
  f.Hello("alive", {{"default", 3}}, {"shell"}, {AttemptRef{"j", 0, 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);  // the pending one; task 0 is adopted
  CHECK(a[0].second.ref.task == 2);
  // The grace is interval × (liveness + 1) = 4 s.
  const std::vector<AttemptRef> held = {AttemptRef{"j", 0, 1}, a[0].second.ref};
  for (int i = 0; i < 4; ++i) {
    f.clock_.Advance(999ms);
    f.Heartbeat("alive", held);
    f.Tick();
  }
  CHECK(f.TakeAssigns().empty());
  f.clock_.Advance(10ms);
  f.Heartbeat("alive", held);
  f.Tick();
  a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.ref.task == 1);
  CHECK(a[0].second.ref.attempt == 2);
  // The adopted attempt's result is recorded as attempt 1.
  f.Result("alive", AttemptRef{"j", 0, 1}, 0, "adopted");
  CHECK(f.Task("j", 0).state == TaskState::kCompleted);
  CHECK(f.Task("j", 0).attempts == 1);
}

TEST_CASE("Plan.AssignmentLostOnTheWayIsRequeued") {
  Fixture f;
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  // Heartbeats that do not list it: within two intervals nothing happens
  // (it may still be on its way) ...
  f.clock_.Advance(1000ms);
  f.Heartbeat("w");
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  CHECK(f.Task(job, 0).state == TaskState::kScheduled);
  // ... after that it is sent again, as a new attempt.
  f.clock_.Advance(1001ms);
  f.Heartbeat("w");
  f.Tick();
  auto again = f.TakeAssigns();
  REQUIRE(again.size() == 1);
  CHECK(again[0].second.ref.attempt == 2);
  // A heartbeat that lists its attempt keeps it.
  f.clock_.Advance(2500ms);
  f.Heartbeat("w", {again[0].second.ref});
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  CHECK(f.Task(job, 0).attempts == 2);
}

TEST_CASE("Plan.RejectedTaskWaitsAnIntervalBeforeItIsSentAgain") {
  Fixture f;
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  Reject r;
  r.ref = a[0].second.ref;
  r.reason = "no free slot";
  Effects fx;
  f.plan_.OnReject("w", r, f.clock_.Now(), fx);
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  f.clock_.Advance(1000ms);
  f.Heartbeat("w");
  f.Tick();
  a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.ref.attempt == 2);
  (void)job;
}

TEST_CASE("Plan.HelloClaimingAnUnknownAttemptIsToldToAbandonIt") {
  Fixture f;
  f.Hello("w", {{"default", 1}}, {"shell"}, {AttemptRef{"ghost", 0, 7}});
  REQUIRE(f.sent_.size() == 1);
  auto welcome = Frame::Parse(f.sent_[0].second)->As<Welcome>();
  REQUIRE(welcome.ok());
  CHECK(welcome->scheduler == "s1");
  REQUIRE(welcome->abandon.size() == 1);
  CHECK(welcome->abandon[0].job_id == "ghost");
}

TEST_CASE("Plan.CancelStopsRunningAndNeverStartsPending") {
  Fixture f;
  std::string job = f.AddJob(kThreeRoots);
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  Effects fx;
  REQUIRE(f.plan_.Cancel(job, f.clock_.Now(), fx).ok());
  bool stop_sent = false;
  for (auto& [w, body] : fx.messages) {
    auto fr = Frame::Parse(body);
    if (fr->type() == "stop") {
      CHECK(fr->As<Stop>()->ref == a[0].second.ref);
      stop_sent = true;
    }
  }
  CHECK(stop_sent);
  CHECK(f.plan_.Cancel(job, f.clock_.Now(), fx).code() == Code::kNotFound);
  f.Tick();
  CHECK(f.TakeAssigns().empty());
}

// With keys, a new life under the same key is the same worker restarted.
TEST_CASE("Plan.RestartedWorkerLosesItsEarlierAttempts") {
  Fixture f;
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w", {{"default", 1}}, {"shell"}, {}, "", {}, "key-w");
  f.Tick();
  REQUIRE(f.TakeAssigns().size() == 1);
  f.Hello("w", {{"default", 1}}, {"shell"}, {}, "w-life2", {}, "key-w");
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.ref.attempt == 2);
}

// A second worker process under a name in use (by mistake or not) never
// takes over the first one: its hello is refused while the first is alive,
// and accepted only once the first has been declared dead.
TEST_CASE("Plan.SecondWorkerUnderALiveNameIsRefused") {
  Fixture f;
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  REQUIRE(f.TakeAssigns().size() == 1);
  drover::Hello impostor;
  impostor.name = "w";
  impostor.instance = "other-process";
  impostor.queues = {{"default", 8}};
  impostor.runtimes = {"shell"};
  Effects fx;
  Status st = f.plan_.OnHello(impostor, "", f.clock_.Now(), fx);
  CHECK(st.code() == Code::kAlreadyExists);
  CHECK(st.message().find("'w' is taken") != std::string::npos);
  CHECK(fx.empty());
  // The first worker still holds its attempt and its slot.
  CHECK(f.Task(job, 0).state == TaskState::kScheduled);
  CHECK(f.Task(job, 0).worker == "w");
  // Once the first goes silent and is declared dead, the name is free.
  f.clock_.Advance(3500ms);
  f.Tick();
  CHECK(f.Task(job, 0).state == TaskState::kPending);
  f.Hello("w", {{"default", 1}}, {"shell"}, {}, "other-process");
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.ref.attempt == 2);
}

// With keys a worker is its key: no other key can say hello or beat under
// its name, even knowing its instance.
TEST_CASE("Plan.WorkerIsBoundToItsKey") {
  Fixture f;
  std::string job =
      f.AddJob("name = \"x\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  f.Hello("w", {{"default", 1}}, {"shell"}, {}, "w-life1", {}, "key-w");
  f.Tick();
  REQUIRE(f.TakeAssigns().size() == 1);
  drover::Hello stolen;
  stolen.name = "w";
  stolen.instance = "w-life1";
  stolen.queues = {{"default", 1}};
  Effects fx;
  CHECK(f.plan_.OnHello(stolen, "key-x", f.clock_.Now(), fx).code() ==
        Code::kAlreadyExists);
  // Heartbeats under another key neither keep it alive nor get answers.
  for (int i = 0; i < 5; ++i) {
    f.clock_.Advance(1000ms);
    f.Heartbeat("w", {{job, 0, 1}}, "w-life1", "key-x");
    f.Tick();
  }
  CHECK(f.SentTypes("w") == std::vector<std::string>{"welcome"});
  CHECK(f.Task(job, 0).state == TaskState::kPending);
  auto workers = f.plan_.Workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers[0].state == "dead");
}

// A Docker task goes only to a worker whose policy allows it; one that no
// serving worker allows fails, naming the policy key, instead of waiting.
TEST_CASE("Plan.DockerTasksGoOnlyWhereThePolicyAllows") {
  Fixture f;
  ContainerPolicy strict;
  strict.allowed_images = {"busybox:*"};
  ContainerPolicy open;
  f.Hello("strict", {{"default", 4}}, {"docker"}, {}, "", {}, "", strict);
  std::string job = f.AddJob(
      "name = \"x\"\n[[tasks]]\nname = \"t\"\nimage = \"alpine\"\n");
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  CHECK(f.Task(job, 0).state == TaskState::kFailed);
  CHECK(f.Task(job, 0).error ==
        "no connected worker's policy allows it: worker strict: image "
        "'alpine' is not allowed by allowed_images (busybox:*)");
  // With a worker that allows it, it waits for that worker only.
  f.Hello("open", {{"default", 1}}, {"docker"}, {}, "", {}, "", open);
  std::string a = f.AddJob(
      "name = \"a\"\n[[tasks]]\nname = \"t\"\nimage = \"alpine\"\n"
      "depends_on = []\n[[tasks]]\nname = \"u\"\nimage = \"alpine\"\n"
      "depends_on = []\n");
  f.Tick();
  auto assigns = f.TakeAssigns();
  REQUIRE(assigns.size() == 1);
  CHECK(assigns[0].first == "open");
  CHECK(f.Task(a, 1).state == TaskState::kPending);  // waits for "open"
  // Submission-time view of the same.
  ParseResult spec = ParseJobText(
      "name = \"s\"\n[[tasks]]\nname = \"t\"\nimage = \"x\"\n"
      "network = \"host\"\n", "s.toml");
  REQUIRE(spec.ok());
  CHECK(f.plan_.PolicyRefusal(spec.job->tasks[0]).find(
            "network 'host' is not allowed by allowed_networks") !=
        std::string::npos);
  CHECK(f.plan_.PolicyRefusal(Docker("busybox:1")) == "");
}

// Regression: a skip that ended the job from inside OnTaskDone (or Admit)
// freed the job while the caller still used it, and it ended twice.
TEST_CASE("Plan.JobEndedBySkippingItsLastTaskEndsOnce") {
  Fixture f;
  std::string lone = f.AddJob(R"(
name = "lone"
[[tasks]]
name = "t"
if = "false"
run = "true"
)");
  CHECK(f.Task(lone, 0).state == TaskState::kSkipped);
  CHECK(f.Job(lone).state == JobState::kCompleted);
  CHECK_FALSE(f.plan_.HasJob(lone));

  std::string tail = f.AddJob(R"(
name = "tail"
[[tasks]]
name = "a"
run = "true"
[[tasks]]
name = "b"
if = "{{ 1 > 2 }}"
run = "true"
[[tasks]]
name = "c"
if = "false"
run = "true"
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  TaskResult r;
  r.ref = a[0].second.ref;
  r.exit_code = 0;
  Effects fx;
  f.plan_.OnResult("w", r, f.clock_.Now(), fx);
  int ended = 0;
  for (const JobRecord& j : fx.jobs) ended += j.state == JobState::kCompleted;
  CHECK(ended == 1);
  CHECK_FALSE(f.plan_.HasJob(tail));
  f.Tick();  // the ended job is released here
  CHECK(f.TakeAssigns().empty());
}

// Regression: the same, when a failing `if` ends the job.
TEST_CASE("Plan.JobEndedByAFailingConditionEndsOnce") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "bad if"
[[tasks]]
name = "t"
if = "{{ inputs.nothing.field }}"
run = "true"
)");
  CHECK(f.Task(job, 0).state == TaskState::kFailed);
  CHECK(f.Job(job).state == JobState::kFailed);
  CHECK(f.Job(job).error.find("in if: expression 'inputs.nothing.field'") !=
        std::string::npos);
}

TEST_CASE("Plan.PreAndPostTasksWithAFalseConditionAreLeftOut") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "hooks"
[inputs]
mode = "fast"
[[tasks]]
name = "t"
run = "true"
[[tasks.pre]]
name = "skip-me"
if = "{{ inputs.mode == 'slow' }}"
run = "echo no"
[[tasks.pre]]
name = "keep-me"
if = "{{ inputs.mode == 'fast' }}"
run = "echo {{ inputs.mode }}"
[[tasks.post]]
name = "post"
if = "false"
run = "echo no"
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  REQUIRE(a[0].second.task.pre.size() == 1);
  CHECK(a[0].second.task.pre[0].task_name == "keep-me");
  CHECK(a[0].second.task.pre[0].run == "echo fast");
  CHECK(a[0].second.task.post.empty());
  CHECK(f.Task(job, 0).state == TaskState::kScheduled);
}

TEST_CASE("Plan.AFailingConditionOfAPreTaskFailsItsTask") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "hooks"
[[tasks]]
name = "t"
run = "true"
[[tasks.pre]]
name = "p"
if = "{{ len(42) }}"
run = "true"
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  CHECK(f.TakeAssigns().empty());
  CHECK(f.Task(job, 0).state == TaskState::kFailed);
  const std::string error = f.Task(job, 0).error;
  CHECK_MESSAGE(error.find("pre task 'p' in if: expression 'len(42)'") !=
                    std::string::npos,
                error);
}

TEST_CASE("Plan.ImageCmdAndEnvExpressionsAreRenderedAtDispatch") {
  Fixture f;
  f.AddJob(R"(
name = "images"
[inputs]
registry = "registry.local:5000"
tag = "1.2"
[[tasks]]
name = "t"
image = "{{ inputs.registry }}/app:{{ inputs.tag }}"
cmd = ["run", "--job", "{{ job.id }}", "{{ len(inputs.tag) }}"]
env = { NAME = "{{ upper(job.name) }}" }
)");
  f.Hello("w", {{"default", 1}}, {"docker"});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.task.image == "registry.local:5000/app:1.2");
  CHECK(a[0].second.task.cmd ==
        std::vector<std::string>{"run", "--job", "job1", "3"});
  CHECK(a[0].second.task.env.at("NAME") == "IMAGES");
}

TEST_CASE("Plan.ASecretHoldingAShorterOneIsMaskedWhole") {
  Fixture f;
  std::string job = f.AddJob(R"(
name = "nested"
[secrets]
A = "pass"
B = "password1"
[[tasks]]
name = "t"
run = "true"
env = { X = "{{ secrets.A }}", Y = "{{ secrets.B }}" }
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.redact == std::vector<std::string>{"password1", "pass"});
  f.Result("w", a[0].second.ref, 1, "password1 and pass", "saw password1");
  CHECK(f.Task(job, 0).output == "[redacted] and [redacted]");
  CHECK(f.Task(job, 0).error == "saw [redacted]");
}

// Regression: the scheduler dropped the runtime's own notes (image pulls,
// containers started), which the protocol shows as drover's stream.
TEST_CASE("Plan.RuntimeNotesReachTheLogRedacted") {
  Fixture f;
  f.AddJob(R"(
name = "notes"
[secrets]
T = "s3cr3t"
[[tasks]]
name = "t"
run = "true"
)");
  f.Hello("w", {{"default", 1}});
  f.Tick();
  auto a = f.TakeAssigns();
  REQUIRE(a.size() == 1);
  Effects fx;
  for (const char* stream : {"o", "e", "s", "x"}) {
    LogData m;
    m.ref = a[0].second.ref;
    m.stream = stream;
    m.data = std::string(stream) + " s3cr3t\n";
    f.plan_.OnLog("w", m, fx);
  }
  REQUIRE(fx.logs.size() == 3);  // "x" is no stream
  CHECK(fx.logs[2].second.stream == 's');
  CHECK(fx.logs[2].second.data == "s [redacted]\n");
}

}  // namespace
}  // namespace drover
