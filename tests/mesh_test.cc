// The scheduler and the worker mesh, end to end through real processes:
// dispatch over several workers, a worker killed mid-task, the scheduler
// killed mid-job, a stopped worker's late result fenced off, and garbage
// on every socket.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <zmq.hpp>

#include "cluster.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;

// A job of `n` independent shell tasks t0, t1, ..., each running
// `before`, `sleep secs`, then `after` (`$DROVER_TASK` is its name).
std::string IndependentTasks(int n, double secs, const std::string& before,
                             const std::string& after) {
  std::string toml = "name = \"independent\"\n";
  for (int i = 0; i < n; ++i) {
    toml += "[[tasks]]\nname = \"t" + std::to_string(i) +
            "\"\ndepends_on = []\nrun = \"" + before + "sleep " +
            std::to_string(secs) + after + "\"\n";
  }
  return toml;
}

// Each task appends its name to `ledger` when it really ran, after
// sleeping `secs`, and outputs its name.
std::string ParallelJob(int n, const std::string& ledger, double secs) {
  return IndependentTasks(n, secs, "",
                          "; echo $DROVER_TASK >> " + ledger +
                              "; echo -n $DROVER_TASK > $DROVER_OUTPUT");
}

// Each task notes its start in `ledger`, then sleeps `secs`.
std::string StartNotingJob(int n, const std::string& ledger, double secs) {
  return IndependentTasks(n, secs, "echo start-$DROVER_TASK >> " + ledger + "; ",
                          "");
}

// Malformed messages, built with msgpack so each is wrong in one way.
struct RawMessage {
  uint32_t v = kProtocolVersion;
  std::string type;
  MSGPACK_DEFINE_MAP(v, type);
};
struct TypeOnly {
  std::string type;
  MSGPACK_DEFINE_MAP(type);
};
struct BadSubmit {
  uint32_t v = kProtocolVersion;
  std::string type = "submit";
  int source = 5;  // should be a string
  MSGPACK_DEFINE_MAP(v, type, source);
};

std::map<std::string, int> CountLines(const std::string& text) {
  std::map<std::string, int> counts;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) ++counts[line];
  return counts;
}

}  // namespace

TEST_CASE("Mesh.ManyTasksSpreadOverTwoWorkers") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:3"});
  c.StartWorker("w2", {"--queue", "default:3"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(ParallelJob(24, ledger, 0.05));
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  REQUIRE(job.tasks.size() == 24);
  std::set<std::string> workers;
  for (const TaskView& t : job.tasks) {
    CHECK(t.state == "COMPLETED");
    CHECK(t.attempts == 1);
    CHECK(t.exit_code == 0);
    CHECK(t.output == t.name);
    workers.insert(t.worker.value_or("?"));
  }
  CHECK(workers == std::set<std::string>{"w1", "w2"});
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts.size() == 24);
  for (const auto& [name, n] : counts) CHECK_MESSAGE(n == 1, name);
}

TEST_CASE("Mesh.SlotsAreNeverExceeded") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:2"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  // Each task records how many tasks run beside it, through a shared dir.
  const std::string d = c.dir() + "/running";
  std::filesystem::create_directories(d);
  std::string toml = "name = \"slots\"\n";
  for (int i = 0; i < 8; ++i) {
    toml += "[[tasks]]\nname = \"t" + std::to_string(i) +
            "\"\ndepends_on = []\nrun = \"touch " + d + "/$DROVER_TASK; ls " +
            d + " | wc -l >> " + c.dir() + "/peaks; sleep 0.1; rm " + d +
            "/$DROVER_TASK\"\n";
  }
  JobView job = c.Wait(c.Submit(toml));
  CHECK(job.state == "COMPLETED");
  int peak = 0;
  std::istringstream in(ReadFile(c.dir() + "/peaks"));
  for (int n; in >> n;) peak = std::max(peak, n);
  CHECK(peak >= 1);
  CHECK(peak <= 2);
}

const WorkerView* FindWorker(const std::vector<WorkerView>& all,
                             const std::string& name) {
  for (const WorkerView& w : all) {
    if (w.name == name) return &w;
  }
  return nullptr;
}

TEST_CASE("Mesh.AttemptsAreHeldOnlyWhenNoWorkerHasAFreeSlot") {
  Cluster c;
  c.StartScheduler();
  // "eager" may hold up to three more (one per slot until it has run a
  // task); "plain" holds none but has a slot.
  c.StartWorker("eager", {"--queue", "default:1", "--prefetch", "3"});
  c.StartWorker("plain", {"--queue", "default:1", "--prefetch", "0"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(StartNotingJob(4, ledger, 1.5));
  // Two run, one on each worker; "eager" holds a third, the fourth waits
  // in the scheduler.
  REQUIRE(Cluster::Eventually([&] {
    auto all = c.Workers();
    const WorkerView* e = FindWorker(all, "eager");
    const WorkerView* p = FindWorker(all, "plain");
    return e != nullptr && p != nullptr && e->running == 1 && e->held == 1 &&
           p->running == 1 && p->held == 0;
  }));
  CHECK(Cluster::Eventually(
      [&] { return CountLines(ReadFile(ledger)).size() == 2; }));
  std::this_thread::sleep_for(300ms);
  CHECK(CountLines(ReadFile(ledger)).size() == 2);  // held ones wait
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  std::map<std::string, int> per_worker;
  for (const TaskView& t : job.tasks) {
    CHECK(t.attempts == 1);
    ++per_worker[t.worker.value_or("?")];
  }
  // Its first task took 1.5 s: "eager" then holds none, so the fourth
  // runs on a free slot, which "plain" has once its first task ends.
  CHECK(per_worker["eager"] == 2);
  CHECK(per_worker["plain"] == 2);
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts.size() == 4);
  for (const auto& [line, n] : counts) CHECK_MESSAGE(n == 1, line);
}

TEST_CASE("Mesh.AWorkerHoldsManyShortTasksAndReportsEachOnce") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const int n = 300;
  const std::string id = c.Submit(ParallelJob(n, ledger, 0));
  // Once its first tasks are seen to take a few milliseconds, the worker
  // is given more than one to hold for its one slot (20 ms worth), and
  // reports their results in bursts.
  uint32_t most_held = 0;
  REQUIRE(Cluster::Eventually(
      [&] {
        auto all = c.Workers();
        if (all.size() == 1) most_held = std::max(most_held, all[0].held);
        const std::string state = c.Status(id).state;
        return state != "PENDING" && state != "RUNNING";
      },
      60s));
  MESSAGE("most held: " << most_held);
  CHECK(most_held > 1);
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  REQUIRE(job.tasks.size() == static_cast<size_t>(n));
  for (const TaskView& t : job.tasks) {
    CHECK(t.state == "COMPLETED");
    CHECK(t.attempts == 1);
    CHECK(t.output == t.name);
  }
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts.size() == static_cast<size_t>(n));
  for (const auto& [line, k] : counts) CHECK_MESSAGE(k == 1, line);
  CHECK(Cluster::Eventually([&] {
    auto all = c.Workers();
    return all.size() == 1 && all[0].running == 0 && all[0].held == 0;
  }));
}

TEST_CASE("Mesh.HeldAttemptStartsOnlyInItsWorkersSlot") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:1"});  // holds one by default
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(StartNotingJob(3, ledger, 30));
  REQUIRE(Cluster::Eventually([&] {
    auto all = c.Workers();
    return all.size() == 1 && all[0].running == 1 && all[0].held == 1;
  }));
  // Held: assigned (SCHEDULED), not started; no room for the third.
  std::map<std::string, int> states;
  CHECK(Cluster::Eventually([&] {
    states.clear();
    for (const TaskView& t : c.Status(id).tasks) ++states[t.state];
    return states["RUNNING"] == 1 && states["SCHEDULED"] == 1 &&
           states["PENDING"] == 1 &&
           CountLines(ReadFile(ledger)).size() == 1;
  }));
  std::this_thread::sleep_for(300ms);
  CHECK(CountLines(ReadFile(ledger)).size() == 1);

  // Cancelling stops the running one and drops the held one unstarted.
  CancelRequest cancel;
  cancel.job_id = id;
  auto cancelled = c.client().Call<StatusReply>(cancel);
  REQUIRE_MESSAGE(cancelled.ok(), cancelled.status().ToString());
  JobView job = c.Wait(id, 15s);
  CHECK(job.state == "CANCELLED");
  for (const TaskView& t : job.tasks) CHECK_MESSAGE(t.state == "CANCELLED", t.name);
  CHECK(Cluster::Eventually([&] {
    auto all = c.Workers();
    return all.size() == 1 && all[0].running == 0 && all[0].held == 0;
  }));
  std::this_thread::sleep_for(300ms);
  CHECK(CountLines(ReadFile(ledger)).size() == 1);  // it never started
}

TEST_CASE("Mesh.StoppingWorkerHandsBackHeldAttemptsAtOnce") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("leaving", {"--queue", "default:1", "--prefetch", "1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(StartNotingJob(2, ledger, 3));
  REQUIRE(Cluster::Eventually([&] {
    auto all = c.Workers();
    return all.size() == 1 && all[0].running == 1 && all[0].held == 1;
  }));
  c.StartWorker("other", {"--queue", "default:1", "--prefetch", "0"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  c.worker("leaving").Signal(SIGTERM);  // 30 s grace for the running one
  // The held one runs on "other" while "leaving" still runs its first.
  CHECK(Cluster::Eventually(
      [&] { return CountLines(ReadFile(ledger)).size() == 2; }, 2500ms));
  JobView job = c.Wait(id, 20s);
  CHECK(job.state == "COMPLETED");
  std::set<std::string> workers;
  for (const TaskView& t : job.tasks) workers.insert(t.worker.value_or("?"));
  CHECK(workers == std::set<std::string>{"leaving", "other"});
  CHECK(c.worker("leaving").Wait(10s) == 0);
}

TEST_CASE("Mesh.QueuesAndRuntimesRouteTasks") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("general", {"--queue", "default:2"});
  c.StartWorker("special", {"--queue", "transcoding:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  const std::string toml = R"(
name = "queues"
[[tasks]]
name = "plain"
run = "true"
[[tasks]]
name = "heavy"
queue = "transcoding"
run = "true"
[[tasks]]
name = "again"
run = "true"
)";
  JobView job = c.Wait(c.Submit(toml));
  REQUIRE(job.state == "COMPLETED");
  CHECK(job.tasks[0].worker == "general");
  CHECK(job.tasks[1].worker == "special");
  CHECK(job.tasks[2].worker == "general");

  // A task for a queue nobody serves waits, PENDING, without blocking
  // other jobs.
  const std::string stuck = c.Submit(
      "name = \"nobody\"\n[[tasks]]\nname = \"x\"\nqueue = \"gpu\"\nrun = "
      "\"true\"\n");
  JobView other = c.Wait(c.Submit("name = \"o\"\n[[tasks]]\nname = \"y\"\nrun = \"true\"\n"));
  CHECK(other.state == "COMPLETED");
  JobView s = c.Status(stuck);
  CHECK(s.state == "PENDING");
  CHECK(s.tasks[0].state == "PENDING");
}

TEST_CASE("Mesh.KilledWorkerTaskCompletesElsewhere") {
  Cluster c;  // 200 ms heartbeats, liveness 3
  c.StartScheduler();
  c.StartWorker("victim", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(
      "name = \"k\"\n[[tasks]]\nname = \"slow\"\nrun = \"echo start-$DROVER_ATTEMPT >> " +
      ledger + "; sleep 1; echo done >> " + ledger + "\"\n");
  REQUIRE(Cluster::Eventually([&] {
    JobView j = c.Status(id);
    return !j.tasks.empty() && j.tasks[0].state == "RUNNING";
  }));
  c.StartWorker("rescuer", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  c.worker("victim").Signal(SIGKILL);
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].worker == "rescuer");
  CHECK(job.tasks[0].attempts == 2);
  REQUIRE(job.tasks[0].errors.size() == 1);
  CHECK(job.tasks[0].errors[0].find("stopped responding") != std::string::npos);
  auto workers = c.Workers();
  for (const auto& w : workers) {
    if (w.name == "victim") CHECK(w.state == "dead");
  }
}

TEST_CASE("Mesh.SchedulerKilledMidJobResumesWithoutRerunning") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:2"});
  c.StartWorker("w2", {"--queue", "default:2"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  const std::string ledger = c.dir() + "/ledger";
  // Two waves of four tasks: the first is running when droverd dies.
  std::string toml = "name = \"restart\"\n";
  for (int i = 0; i < 8; ++i) {
    toml += "[[tasks]]\nname = \"t" + std::to_string(i) + "\"\n" +
            (i < 4 ? "depends_on = []\n" : "depends_on = [\"t" + std::to_string(i - 4) + "\"]\n") +
            "run = \"sleep 0.6; echo t" + std::to_string(i) + " >> " + ledger +
            "\"\n";
  }
  const std::string id = c.Submit(toml);
  REQUIRE(Cluster::Eventually([&] {
    JobView j = c.Status(id);
    int running = 0;
    for (const auto& t : j.tasks) running += t.state == "RUNNING";
    return running == 4;
  }));
  c.scheduler().Signal(SIGKILL);
  CHECK(c.scheduler().Wait() == 128 + SIGKILL);
  c.DropScheduler();
  std::this_thread::sleep_for(300ms);  // results pile up at the workers
  c.StartScheduler();
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  for (const TaskView& t : job.tasks) {
    CHECK_MESSAGE(t.state == "COMPLETED", t.name);
    CHECK_MESSAGE(t.attempts == 1, t.name);  // adopted, not rerun
  }
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts.size() == 8);
  for (const auto& [name, n] : counts) CHECK_MESSAGE(n == 1, name);
}

TEST_CASE("Mesh.StoppedWorkerResultIsFencedOff") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("sleepy", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = c.Submit(
      "name = \"fence\"\n[[tasks]]\nname = \"t\"\nrun = \"sleep 0.5; echo -n "
      "from-$DROVER_ATTEMPT > $DROVER_OUTPUT\"\n");
  REQUIRE(Cluster::Eventually([&] {
    return c.Status(id).tasks[0].state == "RUNNING";
  }));
  c.worker("sleepy").Signal(SIGSTOP);
  // Declared dead after 3 × 200 ms of silence; no one else can run it yet.
  REQUIRE(Cluster::Eventually([&] {
    for (const auto& w : c.Workers()) {
      if (w.name == "sleepy") return w.state == "dead";
    }
    return false;
  }, 5s));
  CHECK(c.Status(id).tasks[0].state == "PENDING");
  c.worker("sleepy").Signal(SIGCONT);
  // The woken worker finishes attempt 1 and reports it; the scheduler
  // discards it, asks the worker to announce itself, and runs attempt 2.
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  // Attempt 1 is never recorded: the result comes from a later attempt.
  CHECK(job.tasks[0].attempts >= 2);
  CHECK(job.tasks[0].output.value_or("") ==
        "from-" + std::to_string(job.tasks[0].attempts));
}

// A second worker process started under a name in use (a copied config
// file, say) is refused with a clear error and never takes the first one's
// channel: the first finishes its task and reports it; the second gets in
// only once the first has gone.
TEST_CASE("Mesh.SecondWorkerUnderATakenNameNeverTakesOver") {
  Cluster c;
  c.StartScheduler();
  Process& first = c.StartWorker("w1", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = c.Submit(
      "name = \"long\"\n[[tasks]]\nname = \"t\"\nrun = \"sleep 1; echo -n "
      "$DROVER_ATTEMPT > $DROVER_OUTPUT\"\n");
  REQUIRE(Cluster::Eventually(
      [&] { return c.Status(id).tasks[0].state == "RUNNING"; }));
  Process& second = c.StartWorker("w1", {"--queue", "default:8"});
  const std::string second_log = second.log_path();
  REQUIRE(Cluster::Eventually([&] {
    return ReadFile(second_log).find("the scheduler refuses worker w1") !=
           std::string::npos;
  }, 5s));
  CHECK(ReadFile(second_log).find("'w1' is taken by another worker") !=
        std::string::npos);
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].attempts == 1);
  CHECK(job.tasks[0].output.value_or("") == "1");
  auto workers = c.Workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers[0].queues.at("default") == 1);  // still the first one's
  // The first one gone, the second is let in after the liveness window.
  first.Signal(SIGKILL);
  first.Wait();
  REQUIRE(Cluster::Eventually([&] {
    auto ws = c.Workers();
    return ws.size() == 1 && ws[0].state == "ready" &&
           ws[0].queues.at("default") == 8;
  }, 10s));
  CHECK(c.Wait(c.Submit("name = \"after\"\n[[tasks]]\nname = \"t\"\n"
                        "run = \"true\"\n"))
            .state == "COMPLETED");
}

// Another process on the worker channel cannot report for a worker: a
// result sent before any hello is not taken, a hello under the running
// worker's name (even with its routing id) is refused, and the real worker
// keeps its channel: its own result is the one recorded.
TEST_CASE("Mesh.ForgedResultFromAnotherConnectionIsIgnored") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = c.Submit(
      "name = \"victim\"\n[[tasks]]\nname = \"t\"\nvar = \"v\"\n"
      "run = \"sleep 1; echo -n real > $DROVER_OUTPUT\"\n"
      "[[tasks]]\nname = \"u\"\nrun = \"echo -n {{ tasks.v }} > "
      "$DROVER_OUTPUT\"\n");
  REQUIRE(Cluster::Eventually(
      [&] { return c.Status(id).tasks[0].state == "RUNNING"; }));
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 2000);
  s.set(zmq::sockopt::routing_id, std::string("w1"));
  s.connect(c.tasks_endpoint());
  TaskResult forged;
  forged.ref = AttemptRef{id, 0, 1};
  forged.exit_code = 0;
  forged.output = "forged; rm -rf /";
  s.send(zmq::buffer(Encode(forged)), zmq::send_flags::none);
  Hello h;
  h.name = "w1";
  h.instance = "intruder";
  h.queues = {{"default", 64}};
  h.runtimes = {"shell"};
  s.send(zmq::buffer(Encode(h)), zmq::send_flags::none);
  s.send(zmq::buffer(Encode(forged)), zmq::send_flags::none);
  // What the intruder hears: at most an announce and the refusal.
  std::set<std::string> heard;
  zmq::message_t m;
  while (s.recv(m)) {
    auto f = Frame::Parse(m.to_string());
    REQUIRE(f.ok());
    heard.insert(f->type());
    if (f->type() == "error") {
      CHECK(f->As<ErrorReply>()->code == "AlreadyExists");
      break;
    }
  }
  CHECK(heard.count("error") == 1);
  CHECK(heard.count("welcome") == 0);
  CHECK(heard.count("assign") == 0);
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].output.value_or("") == "real");
  CHECK(job.tasks[1].output.value_or("") == "real");
  CHECK(job.tasks[0].attempts == 1);
  // The real worker was not cut off.
  CHECK(c.Wait(c.Submit("name = \"after\"\n[[tasks]]\nname = \"t\"\n"
                        "run = \"true\"\n"))
            .tasks[0]
            .worker.value_or("") == "w1");
}

TEST_CASE("Mesh.GarbageOnEverySchedulerSocket") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1");
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  zmq::context_t ctx;
  const std::string big(5 << 20, 'x');
  const std::string truncated =
      Encode(SubmitRequest{}).substr(0, 5);  // a map cut short
  const std::vector<std::string> garbage = {
      "", "\xc1", "hello", truncated, big,
      Encode(TypeOnly{"submit"}),                // no version
      Encode(RawMessage{99, "status"}),          // another version
      Encode(StatusRequest{}),                   // empty job id
      Encode(RawMessage{kProtocolVersion, "bogus"}),  // unknown type
      Encode(BadSubmit{}),                       // a field of the wrong type
      Encode(std::vector<int>{1, 2, 3}),         // not a map
  };
  // The API socket answers every frame with an error.
  {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(c.api());
    for (const std::string& g : garbage) {
      s.send(zmq::buffer(g), zmq::send_flags::none);
      zmq::message_t reply;
      REQUIRE(s.recv(reply));
      auto f = Frame::Parse(reply.to_string());
      REQUIRE(f.ok());
      CHECK_MESSAGE(f->type() == "error", "for a frame of " << g.size() << " bytes");
    }
    // Three frames where one is expected.
    s.send(zmq::buffer("a", 1), zmq::send_flags::sndmore);
    s.send(zmq::buffer("b", 1), zmq::send_flags::sndmore);
    s.send(zmq::buffer("c", 1), zmq::send_flags::none);
    zmq::message_t reply;
    REQUIRE(s.recv(reply));
    CHECK(Frame::Parse(reply.to_string())->type() == "error");
  }
  // The worker channel and the heartbeat channel drop garbage.
  {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::routing_id, std::string("intruder"));
    s.connect(c.tasks_endpoint());
    zmq::socket_t h(ctx, zmq::socket_type::xsub);
    h.set(zmq::sockopt::linger, 0);
    h.connect(c.heartbeat_endpoint());
    for (const std::string& g : garbage) {
      s.send(zmq::buffer(g), zmq::send_flags::none);
      h.send(zmq::buffer(g), zmq::send_flags::none);
    }
    // A result for an attempt that does not exist, from a stranger.
    TaskResult forged;
    forged.ref = AttemptRef{"nope", 0, 1};
    s.send(zmq::buffer(Encode(forged)), zmq::send_flags::none);
    std::this_thread::sleep_for(300ms);
  }
  CHECK(c.scheduler().Running());
  JobView job = c.Wait(c.Submit("name = \"after\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n"));
  CHECK(job.state == "COMPLETED");
  const std::string log = c.SchedulerLog();
  CHECK(log.find("exceeds the limit") != std::string::npos);
  CHECK(log.find("unknown request type 'bogus'") != std::string::npos);
}

TEST_CASE("Mesh.GarbageToAWorker") {
  // A stand-in scheduler, so the test can write anything to the worker.
  Cluster c;
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::rcvtimeo, 5000);
  router.bind(c.tasks_endpoint());
  zmq::socket_t xpub(ctx, zmq::socket_type::xpub);
  xpub.set(zmq::sockopt::linger, 0);
  xpub.bind(c.heartbeat_endpoint());
  c.StartWorker("target");
  zmq::message_t id, body;
  REQUIRE(router.recv(id));
  REQUIRE(router.recv(body));
  CHECK(Frame::Parse(body.to_string())->type() == "hello");
  // The worker's connection, as ZeroMQ named it.
  const std::string link = id.to_string();
  const std::string big(5 << 20, 'x');
  for (const std::string& g :
       {std::string(""), std::string("\xc1"), big, std::string("\x81\xa1v"),
        Encode(RawMessage{kProtocolVersion, "assign"}),
        Encode(RawMessage{kProtocolVersion, "nonsense"})}) {
    router.send(zmq::buffer(link), zmq::send_flags::sndmore);
    router.send(zmq::buffer(g), zmq::send_flags::none);
    xpub.send(zmq::buffer(g), zmq::send_flags::none);
  }
  // Still serving: a real assignment runs and its result comes back.
  Welcome w;
  w.scheduler = "fake";
  router.send(zmq::buffer(link), zmq::send_flags::sndmore);
  router.send(zmq::buffer(Encode(w)), zmq::send_flags::none);
  Assign a;
  a.ref = AttemptRef{"job1", 0, 1};
  a.queue = "default";
  a.runtime = "shell";
  a.task.task_name = "t";
  a.task.run = "echo -n fine > $DROVER_OUTPUT";
  router.send(zmq::buffer(link), zmq::send_flags::sndmore);
  router.send(zmq::buffer(Encode(a)), zmq::send_flags::none);
  bool got_result = false;
  for (int i = 0; i < 50 && !got_result; ++i) {
    if (!router.recv(id) || !router.recv(body)) break;
    auto f = Frame::Parse(body.to_string());
    REQUIRE(f.ok());
    if (f->type() == "result") {
      auto r = f->As<TaskResult>();
      REQUIRE(r.ok());
      CHECK(r->exit_code == 0);
      CHECK(r->output == "fine");
      got_result = true;
    }
  }
  CHECK(got_result);
  CHECK(c.worker("target").Running());
}


// A write that fails (here the file-size limit, as a full disk would) is
// never acknowledged: the submit that needed it gets Unavailable, every
// later change is refused, what was stored before stays readable, and
// droverd keeps serving.
TEST_CASE("Mesh.FailedWriteIsNeverAcknowledged") {
  Cluster c;
  // Room for the store's first files and one small job, not for a big one.
  c.set_scheduler_prefix({"prlimit", "--fsize=262144"});
  c.StartScheduler();
  const std::string small =
      "name = \"small\"\n[[tasks]]\nname = \"a\"\nrun = \"true\"\n";
  const std::string first = c.Submit(small);
  std::string big = "name = \"big\"\n";
  for (int i = 0; i < 2000; ++i) {
    big += "[[tasks]]\nname = \"t" + std::to_string(i) +
           "\"\nrun = \"echo a fairly long line to fill the log\"\n"
           "depends_on = []\n";
  }
  SubmitRequest req;
  req.source = big;
  auto refused = c.client().Call<SubmitReply>(req);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kUnavailable);
  CHECK(refused.status().message().find("could not store") !=
        std::string::npos);
  req.source = small;
  auto later = c.client().Call<SubmitReply>(req);
  REQUIRE_FALSE(later.ok());
  CHECK(later.status().code() == Code::kUnavailable);
  // Reads still answer, from what was durably stored.
  JobView job = c.Status(first);
  CHECK(job.id == first);
  CHECK(job.state == "PENDING");
  ListRequest list;
  auto jobs = c.client().Call<ListReply>(list);
  REQUIRE(jobs.ok());
  CHECK(jobs->jobs.size() == 1);
  CHECK(c.scheduler().Running());
  CHECK(c.SchedulerLog().find("store write failed") != std::string::npos);
}

// A task that ends within the worker's `started` hold (20 ms) is reported
// by its result alone: it still shows when it started, and a task that
// runs longer shows RUNNING while it runs.
TEST_CASE("Mesh.ShortTaskReportedByItsResultStillHasItsStart") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:2"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = c.Submit(
      "name = \"quick\"\n[[tasks]]\nname = \"a\"\nrun = \"true\"\n"
      "[[tasks]]\nname = \"b\"\nrun = \"sleep 1\"\n");
  // b runs for a second: RUNNING well before it ends.
  CHECK(Cluster::Eventually(
      [&] {
        JobView v = c.Status(id);
        return v.tasks.size() == 2 && v.tasks[1].state == "RUNNING";
      },
      5s));
  JobView job = c.Wait(id);
  REQUIRE(job.state == "COMPLETED");
  REQUIRE(job.tasks.size() == 2);
  for (const TaskView& t : job.tasks) {
    REQUIRE(t.started_at);
    REQUIRE(t.finished_at);
    CHECK(*t.started_at <= *t.finished_at);  // RFC 3339 UTC sorts as text
  }
  REQUIRE(job.started_at);
  CHECK(*job.started_at == *job.tasks[0].started_at);
}

}  // namespace drover::testing
