// Graceful shutdown, as `systemctl stop` does it (SIGTERM): droverd exits
// cleanly at once and resumes its jobs when started again; a worker takes
// no new tasks, lets running ones finish within --shutdown-grace, hands
// back the rest, and exits.
#include <doctest/doctest.h>

#include <sstream>
#include <thread>

#include "cluster.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;

// A generous bound for "exits promptly": no timing claim, only that
// shutdown does not hang.
constexpr auto kPromptly = 5s;

std::map<std::string, int> CountLines(const std::string& text) {
  std::map<std::string, int> counts;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) ++counts[line];
  return counts;
}

bool TaskRunningOn(Cluster& c, const std::string& id,
                   const std::string& worker) {
  JobView j = c.Status(id);
  return !j.tasks.empty() && j.tasks[0].state == "RUNNING" &&
         j.tasks[0].worker == worker;
}

}  // namespace

TEST_CASE("Shutdown.SchedulerSigtermWhileAJobRunsExitsZeroAndResumes") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(
      "name = \"long\"\n"
      "[[tasks]]\nname = \"first\"\nrun = \"sleep 2; echo first >> " +
      ledger +
      "\"\n"
      "[[tasks]]\nname = \"second\"\nrun = \"echo second >> " +
      ledger + "\"\n");
  REQUIRE(Cluster::Eventually([&] { return TaskRunningOn(c, id, "w1"); }));
  // Acknowledged just before the signal: it must survive it.
  const std::string late =
      c.Submit("name = \"late\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");

  const auto signalled = std::chrono::steady_clock::now();
  c.scheduler().Signal(SIGTERM);
  CHECK(c.scheduler().Wait(kPromptly) == 0);
  MESSAGE("droverd exited "
          << std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - signalled)
                 .count()
          << " ms after SIGTERM");
  const std::string log = c.SchedulerLog();
  CHECK(log.find("droverd stopping") != std::string::npos);
  CHECK(log.find("droverd stopped") != std::string::npos);
  c.DropScheduler();

  c.StartScheduler();
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  // The worker kept running the first task and reported it to the new
  // scheduler: adopted, not run again.
  CHECK(job.tasks[0].attempts == 1);
  CHECK(job.tasks[1].state == "COMPLETED");
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts["first"] == 1);
  CHECK(counts["second"] == 1);
  CHECK(c.Wait(late).state == "COMPLETED");
}

TEST_CASE("Shutdown.WorkerFinishesATaskShorterThanTheGrace") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("leaving", {"--queue", "default:2", "--shutdown-grace", "30s"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = c.Submit(
      "name = \"short\"\n[[tasks]]\nname = \"t\"\n"
      "run = \"sleep 1; echo finished here\"\n");
  REQUIRE(Cluster::Eventually([&] { return TaskRunningOn(c, id, "leaving"); }));

  c.worker("leaving").Signal(SIGTERM);
  // While it drains it takes nothing new, though it has a free slot.
  const std::string later =
      c.Submit("name = \"later\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  CHECK(c.worker("leaving").Wait(30s) == 0);

  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].worker == "leaving");
  CHECK(job.tasks[0].attempts == 1);
  CHECK(c.Logs(id).find("finished here") != std::string::npos);

  CHECK(c.Status(later).state == "PENDING");
  c.StartWorker("next");
  JobView l = c.Wait(later);
  CHECK(l.state == "COMPLETED");
  CHECK(l.tasks[0].worker == "next");
}

TEST_CASE("Shutdown.WorkerHandsBackATaskLongerThanTheGrace") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("leaving",
                {"--queue", "default:1", "--shutdown-grace", "500ms"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = c.Submit(
      "name = \"long\"\n[[tasks]]\nname = \"t\"\n"
      "run = \"echo start-$DROVER_ATTEMPT >> " +
      ledger + "; sleep 3; echo done-$DROVER_ATTEMPT >> " + ledger + "\"\n");
  REQUIRE(Cluster::Eventually([&] { return TaskRunningOn(c, id, "leaving"); }));

  const auto signalled = std::chrono::steady_clock::now();
  c.worker("leaving").Signal(SIGTERM);
  // Exits after the grace, without waiting for the task's three seconds.
  CHECK(c.worker("leaving").Wait(10s) == 0);
  MESSAGE(
      "worker exited " << std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - signalled)
                              .count()
                       << " ms after SIGTERM with a 500 ms grace");
  // Handed back: waiting for another worker (the error checked below says
  // it was handed back, not found dead).
  CHECK(Cluster::Eventually(
      [&] { return c.Status(id).tasks[0].state == "PENDING"; }, 5s));

  c.StartWorker("other", {"--queue", "default:1"});
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(job.tasks[0].worker == "other");
  CHECK(job.tasks[0].attempts == 2);
  REQUIRE(job.tasks[0].errors.size() == 1);
  CHECK(job.tasks[0].errors[0].find("leaving shut down") != std::string::npos);
  auto counts = CountLines(ReadFile(ledger));
  CHECK(counts["start-1"] == 1);
  CHECK(counts["done-1"] == 0);  // stopped, not left running
  CHECK(counts["start-2"] == 1);
  CHECK(counts["done-2"] == 1);
  for (const auto& w : c.Workers()) {
    if (w.name == "leaving") CHECK(w.state == "gone");
  }
}

}  // namespace drover::testing
