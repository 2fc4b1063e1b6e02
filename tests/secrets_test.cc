// Job secrets at rest and in flight, with real processes: never in the
// store's files, in processed/, in the daemons' logs, in status or task
// output; sealed with droverd's secrets key and opened again after a
// SIGKILL; a job whose secrets the key cannot open fails, saying why.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <filesystem>

#include "cluster.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* kSecret = "hunter2-Xq7v9";
constexpr const char* kReversed = "9v7qX-2retnuh";

// A job whose first task waits for `gate` to exist, so the test can
// restart droverd in between, and whose second task, dispatched after,
// needs the secret: it outputs it reversed.
std::string GatedJob(const std::string& gate) {
  return "name = \"sealed\"\n"
         "[secrets]\nTOKEN = \"" + std::string(kSecret) + "\"  # kept\n"
         "[[tasks]]\nname = \"first\"\n"
         "run = \"echo token=$TOKEN; while [ ! -e " + gate +
         " ]; do sleep 0.05; done\"\n"
         "env = { TOKEN = \"{{ secrets.TOKEN }}\" }\n"
         "[[tasks]]\nname = \"second\"\n"
         "run = \"echo -n $TOKEN | rev > $DROVER_OUTPUT\"\n"
         "env = { TOKEN = \"{{ secrets.TOKEN }}\" }\n";
}

// Every file under `dir` that holds `needle`, byte for byte.
std::vector<std::string> FilesHolding(const std::string& dir,
                                      const std::string& needle) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    if (ReadFile(e.path()).find(needle) != std::string::npos) {
      found.push_back(e.path());
    }
  }
  return found;
}

}  // namespace

TEST_CASE("Secrets.NeverKeptInClearAndOpenedAgainAfterACrash") {
  Cluster c;
  const std::string inbox = c.dir() + "/inbox";
  fs::create_directories(inbox);
  c.StartScheduler({"--watch-dir", inbox});
  c.StartWorker("w1");
  const std::string gate = c.dir() + "/gate";
  const std::string id = c.Submit(GatedJob(gate));
  REQUIRE(Cluster::Eventually(
      [&] { return c.Status(id).tasks[0].state == "RUNNING"; }));
  // SIGKILL while the first task runs: the second is dispatched by the next
  // droverd, from the sealed secrets.
  c.scheduler().Signal(SIGKILL);
  c.scheduler().Wait();
  c.DropScheduler();
  c.StartScheduler({"--watch-dir", inbox});
  WriteFile(gate, "");
  JobView job = c.Wait(id);
  REQUIRE(job.state == "COMPLETED");
  CHECK(job.tasks[1].output.value_or("") == kReversed);
  // The task printed it; the log shows it masked.
  const std::string logs = c.Logs(id);
  CHECK(logs.find("token=[redacted]") != std::string::npos);
  CHECK(logs.find(kSecret) == std::string::npos);

  // The same job dropped in the watched directory: processed/ keeps the
  // file without the value (and with everything else).
  WriteFile(inbox + "/watched.toml.tmp", GatedJob(gate));
  fs::rename(inbox + "/watched.toml.tmp", inbox + "/watched.toml");
  REQUIRE(Cluster::Eventually(
      [&] { return fs::exists(inbox + "/processed/watched.toml.job"); }));
  const std::string kept = ReadFile(inbox + "/processed/watched.toml");
  // What was submitted is droverd's alone.
  for (const char* sub : {"/processed", "/failed"}) {
    CHECK((fs::status(inbox + sub).permissions() &
           (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  }
  CHECK(kept.find(kSecret) == std::string::npos);
  CHECK(kept.find("TOKEN = \"\"  # kept") != std::string::npos);
  std::string watched_id = ReadFile(inbox + "/processed/watched.toml.job");
  watched_id.erase(watched_id.find_last_not_of("\n") + 1);
  JobView watched = c.Wait(watched_id);
  CHECK(watched.state == "COMPLETED");
  CHECK(watched.tasks[1].output.value_or("") == kReversed);

  // Nowhere on disk in clear: not in the store's files (its log and
  // tables), not in processed/, not in the daemons' logs.
  c.scheduler().Signal(SIGTERM);
  CHECK(c.scheduler().Wait() == 0);
  CHECK(FilesHolding(c.dir(), kSecret) == std::vector<std::string>{});
  // The secrets key is where it is said to be, and only its owner's.
  CHECK(fs::exists(c.dir() + "/data/secrets.key"));
  CHECK((fs::status(c.dir() + "/data/secrets.key").permissions() &
         (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
}

TEST_CASE("Secrets.AnotherKeyFailsTheJobSayingWhy") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1");
  const std::string gate = c.dir() + "/gate";
  const std::string id = c.Submit(GatedJob(gate));
  REQUIRE(Cluster::Eventually(
      [&] { return c.Status(id).tasks[0].state == "RUNNING"; }));
  c.scheduler().Signal(SIGKILL);
  c.scheduler().Wait();
  c.DropScheduler();
  // A restored data dir without its secrets key.
  c.StartScheduler({"--secrets-key", c.dir() + "/another.key"});
  WriteFile(gate, "");
  JobView job = c.Wait(id);
  CHECK(job.state == "FAILED");
  CHECK(job.error.value_or("").find("sealed under another secrets key") !=
        std::string::npos);
  CHECK(c.SchedulerLog().find("--secrets-key") != std::string::npos);
}

}  // namespace drover::testing
