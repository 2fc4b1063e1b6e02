// Running under systemd: what droverd and drover-worker tell the service
// manager through $NOTIFY_SOCKET (READY=1, STATUS=, WATCHDOG=1,
// STOPPING=1), read from a unix datagram socket standing in for systemd,
// and `systemd-analyze verify` on the unit files in config/systemd/.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "cluster.h"

namespace drover::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The receiving end of $NOTIFY_SOCKET: every datagram, split into lines.
class NotifyListener {
 public:
  explicit NotifyListener(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path_.size() < sizeof addr.sun_path);
    std::copy(path_.begin(), path_.end(), addr.sun_path);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~NotifyListener() { close(fd_); }

  const std::string& path() const { return path_; }

  // Reads what has arrived, waiting up to `wait` for the first datagram.
  void Drain(std::chrono::milliseconds wait = 0ms) {
    pollfd p{fd_, POLLIN, 0};
    int timeout = static_cast<int>(wait.count());
    while (poll(&p, 1, timeout) > 0) {
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      std::istringstream in(std::string(buf, static_cast<size_t>(n)));
      for (std::string line; std::getline(in, line);) lines_.push_back(line);
      timeout = 0;
    }
  }

  // Waits until a line satisfies `pred`, reading as they come; the first
  // such line, or "" after `timeout`.
  std::string WaitFor(const std::function<bool(const std::string&)>& pred,
                      std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t seen = 0;
    while (true) {
      for (; seen < lines_.size(); ++seen) {
        if (pred(lines_[seen])) return lines_[seen];
      }
      if (std::chrono::steady_clock::now() >= deadline) return "";
      Drain(50ms);
    }
  }
  std::string WaitForLine(const std::string& exact,
                          std::chrono::milliseconds timeout = 10s) {
    return WaitFor([&](const std::string& l) { return l == exact; }, timeout);
  }
  std::string WaitForStatus(const std::string& part,
                            std::chrono::milliseconds timeout = 10s) {
    return WaitFor(
        [&](const std::string& l) {
          return l.rfind("STATUS=", 0) == 0 &&
                 l.find(part) != std::string::npos;
        },
        timeout);
  }
  size_t Count(const std::string& exact) const {
    return static_cast<size_t>(std::count(lines_.begin(), lines_.end(), exact));
  }
  const std::vector<std::string>& lines() const { return lines_; }
  void Clear() { lines_.clear(); }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> lines_;
};

std::string Joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

std::map<std::string, std::string> NotifyEnv(const NotifyListener& l) {
  // WATCHDOG_PID is left unset: sd_watchdog_enabled(3) then applies
  // WATCHDOG_USEC to whichever process reads it. One second: a ping every
  // half second.
  return {{"NOTIFY_SOCKET", l.path()}, {"WATCHDOG_USEC", "1000000"}};
}

std::vector<std::string> SchedulerArgv(const Cluster& c) {
  return {BuildPath("droverd"),
          "--data-dir",
          c.dir() + "/data",
          "--api",
          c.api(),
          "--tasks",
          c.tasks_endpoint(),
          "--heartbeat",
          c.heartbeat_endpoint(),
          "--heartbeat-interval",
          "200ms",
          "--log-level",
          "debug"};
}

std::vector<std::string> WorkerArgv(const Cluster& c, const std::string& name) {
  return {BuildPath("drover-worker"),
          "--name",
          name,
          "--tasks",
          c.tasks_endpoint(),
          "--heartbeat",
          c.heartbeat_endpoint(),
          "--heartbeat-interval",
          "200ms",
          "--runtime",
          "shell",
          "--work-dir",
          c.dir() + "/work-" + name,
          "--log-level",
          "debug"};
}

}  // namespace

TEST_CASE("Systemd.DroverdReportsReadyStatusWatchdogAndStopping") {
  Cluster c;
  NotifyListener sd(c.dir() + "/notify");
  Process droverd(SchedulerArgv(c), c.dir() + "/droverd.log", NotifyEnv(sd));

  // READY=1 only once it serves, with a first status line beside it.
  REQUIRE_MESSAGE(!sd.WaitForLine("READY=1").empty(), Joined(sd.lines()));
  CHECK(c.client().Call<WorkersReply>(WorkersRequest{}).ok());
  CHECK(!sd.WaitForStatus("0 jobs unfinished, 0 workers connected").empty());

  c.StartWorker("w1");
  CHECK_MESSAGE(!sd.WaitForStatus("1 workers connected").empty(),
                Joined(sd.lines()));
  c.Submit("name = \"n\"\n[[tasks]]\nname = \"t\"\nrun = \"sleep 30\"\n");
  CHECK_MESSAGE(!sd.WaitForStatus("1 jobs unfinished").empty(),
                Joined(sd.lines()));

  // WATCHDOG_USEC=1s: pings every half second or so. Over three seconds
  // at least two must come, whatever the machine's load.
  sd.Clear();
  std::this_thread::sleep_for(3s);
  sd.Drain();
  CHECK_MESSAGE(sd.Count("WATCHDOG=1") >= 2, Joined(sd.lines()));

  droverd.Signal(SIGTERM);
  CHECK(droverd.Wait(10s) == 0);
  sd.Drain(1s);
  CHECK_MESSAGE(sd.Count("STOPPING=1") == 1, Joined(sd.lines()));
}

TEST_CASE("Systemd.WorkerIsReadyOnceWelcomedAndReportsItsTasks") {
  Cluster c;
  NotifyListener sd(c.dir() + "/notify");
  // The worker first, with no scheduler to welcome it: not ready yet, and
  // its status says what it waits for.
  std::vector<std::string> argv = WorkerArgv(c, "w1");
  argv.insert(argv.end(), {"--shutdown-grace", "2s"});
  Process worker(argv, c.dir() + "/worker-w1.log", NotifyEnv(sd));
  CHECK_MESSAGE(
      !sd.WaitForStatus("waiting for the scheduler at " + c.tasks_endpoint())
           .empty(),
      Joined(sd.lines()));
  CHECK(sd.Count("READY=1") == 0);
  // It keeps its watchdog fed while it waits.
  CHECK(!sd.WaitFor([](const std::string& l) {
             return l == "WATCHDOG=1";
           }).empty());

  c.StartScheduler();
  REQUIRE_MESSAGE(!sd.WaitForLine("READY=1").empty(), Joined(sd.lines()));
  CHECK(!sd.WaitForStatus("connected to the scheduler").empty());

  c.Submit("name = \"n\"\n[[tasks]]\nname = \"t\"\nrun = \"sleep 30\"\n");
  CHECK_MESSAGE(!sd.WaitForStatus("1 tasks running").empty(),
                Joined(sd.lines()));

  sd.Clear();
  std::this_thread::sleep_for(3s);
  sd.Drain();
  CHECK_MESSAGE(sd.Count("WATCHDOG=1") >= 2, Joined(sd.lines()));

  // STOPPING=1 once it starts draining; after the 2s grace the task is
  // handed back and the worker exits.
  worker.Signal(SIGTERM);
  CHECK_MESSAGE(!sd.WaitForLine("STOPPING=1").empty(), Joined(sd.lines()));
  CHECK(!sd.WaitForStatus("draining").empty());
  CHECK(worker.Wait(30s) == 0);
}

TEST_CASE("Systemd.LogLinesSuitTheJournal") {
  Cluster c;
  // Stand in for the journal: systemd names the stream it gave the service
  // in $JOURNAL_STREAM as DEVICE:INODE.
  const std::string log = c.dir() + "/droverd.log";
  WriteFile(log, "");
  struct stat st;
  REQUIRE(stat(log.c_str(), &st) == 0);
  const std::string stream =
      std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  Process droverd(SchedulerArgv(c), log, {{"JOURNAL_STREAM", stream}});
  REQUIRE(Cluster::Eventually(
      [&] { return c.client().Call<WorkersReply>(WorkersRequest{}).ok(); }));
  c.StartWorker("w1");
  const std::string good =
      c.Submit("name = \"good\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  const std::string bad = c.Submit(
      "name = \"bad\"\n[[tasks]]\nname = \"boom\"\nrun = \"exit 3\"\n");
  CHECK(c.Wait(good).state == "COMPLETED");
  CHECK(c.Wait(bad).state == "FAILED");
  droverd.Signal(SIGTERM);
  REQUIRE(droverd.Wait() == 0);

  // One line per event: a priority prefix journald turns into PRIORITY=,
  // the level, no timestamp (the journal has its own), no colour codes.
  const std::string text = ReadFile(log);
  CHECK(text.find('\x1b') == std::string::npos);
  std::istringstream in(text);
  const std::regex journal_line(
      "<[2-7]>(trace|debug|info|warning|error|critical) \\S.*");
  for (std::string line; std::getline(in, line);) {
    CHECK_MESSAGE(std::regex_match(line, journal_line), line);
  }
  // How each job ended, with its id, state and error.
  CHECK(text.find("<6>info job " + good + ": COMPLETED after ") !=
        std::string::npos);
  CHECK(text.find("<4>warning job " + bad + ": FAILED after ") !=
        std::string::npos);
  CHECK(text.find(": task 'boom' failed: exited with code 3\n") !=
        std::string::npos);
  CHECK(text.find("info job " + bad +
                  " task boom attempt 1: FAILED on w1: "
                  "exited with code 3") != std::string::npos);

  // The worker, outside the journal: a timestamp, the level, no colour,
  // and the job on every line about a task.
  const std::string wlog = ReadFile(c.dir() + "/worker-w1.log");
  CHECK(wlog.find('\x1b') == std::string::npos);
  const std::regex plain_line(
      "\\d{4}-\\d\\d-\\d\\dT[0-9:.]+ "
      "(trace|debug|info|warning|error|critical) \\S.*");
  std::istringstream win(wlog);
  for (std::string line; std::getline(win, line);) {
    CHECK_MESSAGE(std::regex_match(line, plain_line), line);
    if (line.find(" task ") != std::string::npos) {
      CHECK_MESSAGE(line.find(" job ") != std::string::npos, line);
    }
  }
  CHECK(wlog.find("job " + bad +
                  " task 0 attempt 1: 'boom' finished, exit "
                  "code 3") != std::string::npos);
}

TEST_CASE("Systemd.UnitFilesPassSystemdAnalyzeVerify") {
  // systemd-analyze verify checks that every key is known and well formed
  // and that ExecStart= names an executable: point it at this build.
  const std::string analyze = "/usr/bin/systemd-analyze";
  REQUIRE_MESSAGE(fs::exists(analyze),
                  "systemd-analyze is missing: install the systemd package");
  char tmpl[] = "/tmp/drover-units-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string bin_dir = fs::path(BuildPath("droverd")).parent_path();
  std::vector<std::string> argv = {analyze, "verify"};
  for (const char* unit : {"droverd.service", "drover-worker@.service"}) {
    std::string text =
        ReadFile(SourcePath(std::string("config/systemd/") + unit));
    REQUIRE(!text.empty());
    // As shipped, they run what `make install` puts in /usr/local/bin.
    CHECK(text.find("ExecStart=/usr/local/bin/") != std::string::npos);
    for (const char* key :
         {"Type=notify", "WatchdogSec=", "Restart=on-failure", "User=drover",
          "Group=drover", "ProtectSystem=strict", "StateDirectory=drover",
          "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes",
          "KillMode=mixed"}) {
      CHECK_MESSAGE(text.find(std::string("\n") + key) != std::string::npos,
                    unit << " lacks " << key);
    }
    text = std::regex_replace(text, std::regex("/usr/local/bin"), bin_dir);
    WriteFile(dir + "/" + unit, text);
    argv.push_back(dir + "/" + unit);
  }
  CHECK(ReadFile(dir + "/drover-worker@.service")
            .find("--config /etc/drover/worker-%i.toml") != std::string::npos);
  CHECK(ReadFile(dir + "/drover-worker@.service")
            .find("SupplementaryGroups=docker") != std::string::npos);
  CommandResult r = RunCommand(argv);
  INFO("systemd-analyze verify said:\n" << r.out << r.err);
  CHECK(r.exit_code == 0);
  // It exits 0 even for unknown keys, so read what it printed: nothing at
  // all about our units.
  CHECK(r.err.find("droverd.service") == std::string::npos);
  CHECK(r.err.find("drover-worker@") == std::string::npos);
  for (const char* bad : {"Unknown", "nknown key", "Invalid", "gnoring",
                          "not executable", "Failed"}) {
    CHECK_MESSAGE(r.err.find(bad) == std::string::npos, bad);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// systemd's own measure of how exposed a service is (0 to 10, lower is
// better), offline on the units as shipped: droverd at most 2.0, the
// worker (which runs other people's shell tasks) at most 4.5, also with the
// drop-in its unit names for shell_uids.
TEST_CASE("Systemd.UnitsAreHardened") {
  const std::string analyze = "/usr/bin/systemd-analyze";
  REQUIRE(fs::exists(analyze));
  char tmpl[] = "/tmp/drover-units-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string bin_dir = fs::path(BuildPath("droverd")).parent_path();
  auto exposure = [&](const std::string& name, std::string text) {
    text = std::regex_replace(text, std::regex("/usr/local/bin"), bin_dir);
    WriteFile(dir + "/" + name, text);
    CommandResult r = RunCommand(
        {analyze, "security", "--offline=true", dir + "/" + name});
    std::smatch m;
    const std::string all = r.out + r.err;
    REQUIRE_MESSAGE(std::regex_search(all, m,
                                      std::regex("Overall exposure level for "
                                                 "[^:]+: ([0-9.]+)")),
                    all);
    MESSAGE(name << ": " << m[1]);
    return std::stod(m[1]);
  };
  const std::string worker =
      ReadFile(SourcePath("config/systemd/drover-worker@.service"));
  CHECK(exposure("droverd.service",
                 ReadFile(SourcePath("config/systemd/droverd.service"))) <= 2.0);
  CHECK(exposure("drover-worker@a.service", worker) <= 4.5);
  // The drop-in for shell_uids, as the unit's comment gives it.
  std::smatch caps;
  REQUIRE(std::regex_search(worker, caps,
                            std::regex("#   (AmbientCapabilities=[^\n]+)\n"
                                       "#   (CapabilityBoundingSet=[^\n]+)")));
  std::string uids = std::regex_replace(
      worker, std::regex("\nAmbientCapabilities=CAP_SETGID"),
      "\n" + caps[1].str());
  uids = std::regex_replace(uids,
                            std::regex("\nCapabilityBoundingSet=CAP_SETGID"),
                            "\n" + caps[2].str());
  CHECK(uids != worker);
  CHECK(exposure("drover-worker@u.service", uids) <= 4.5);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace drover::testing
