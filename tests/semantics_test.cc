// Job semantics end to end, through real droverd, drover-worker and drover
// processes: ordering and parallel branches, inputs and outputs,
// expressions and conditions, secrets, retries, timeouts, failure, cancel,
// defaults, pre and post tasks, and every example job in docs/JOBS.md.
//
// Most tests use shell workers; the docs examples that name an image run
// on a worker that also offers the Docker runtime, against the real daemon
// (see scripts/docker-env.sh). Times are only compared with each other
// (this ran before that, these two overlapped), never with a threshold.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "cluster.h"

namespace drover::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

// ---- Helpers. ------------------------------------------------------------

// Runs the drover CLI against the cluster's scheduler.
CommandResult Drover(Cluster& c, std::vector<std::string> args) {
  std::vector<std::string> argv = {BuildPath("drover"), "--api", c.api()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

// Writes a job file into the cluster's dir and returns its path.
std::string JobFile(Cluster& c, const std::string& name,
                    const std::string& toml) {
  const std::string path = c.dir() + "/" + name + ".toml";
  WriteFile(path, toml);
  return path;
}

// `drover submit FILE --input K=V...`; the job id it prints.
std::string SubmitCli(Cluster& c, const std::string& file,
                      const std::map<std::string, std::string>& inputs = {}) {
  std::vector<std::string> args = {"submit", file};
  for (const auto& [k, v] : inputs) {
    args.push_back("--input");
    args.push_back(k + "=" + v);
  }
  CommandResult r = Drover(c, args);
  REQUIRE_MESSAGE(r.exit_code == 0, file << ": " << r.err);
  std::string id = r.out;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  REQUIRE_FALSE(id.empty());
  return id;
}

// `drover status JOB --json`, parsed.
json StatusJson(Cluster& c, const std::string& id) {
  CommandResult r = Drover(c, {"status", id, "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return json::parse(r.out);
}

const TaskView& TaskNamed(const JobView& job, const std::string& name) {
  for (const TaskView& t : job.tasks) {
    if (t.name == name) return t;
  }
  FAIL("job " << job.id << " has no task " << name);
  throw std::logic_error("unreachable");
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Times are RFC 3339 with milliseconds, all in UTC, so they compare as
// strings.
std::string Started(const TaskView& t) { return t.started_at.value_or(""); }
std::string Finished(const TaskView& t) { return t.finished_at.value_or("~"); }

// Milliseconds since the epoch of an RFC 3339 time such as
// "2026-11-23T16:01:12.345Z", for messages.
int64_t EpochMs(const std::string& rfc3339) {
  std::tm tm{};
  std::istringstream in(rfc3339);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  const size_t dot = rfc3339.find('.');
  const int64_t ms =
      dot == std::string::npos ? 0 : std::stoll(rfc3339.substr(dot + 1, 3));
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

// Whether two tasks ran at the same time for a while.
bool Overlap(const TaskView& a, const TaskView& b) {
  REQUIRE(a.started_at);
  REQUIRE(b.started_at);
  return Started(a) < Finished(b) && Started(b) < Finished(a);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// Exited, or a zombie its parent has yet to reap (PID 1 in a container may
// never reap it): either way it runs no more.
bool ProcessGone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!stat || !std::getline(stat, content)) return true;
  const size_t close = content.rfind(')');
  return close != std::string::npos && close + 2 < content.size() &&
         content[close + 2] == 'Z';
}

// The PIDs a task wrote to `path`, one a line; all of them gone soon.
void ExpectProcessesGone(const std::string& path, size_t expected) {
  std::vector<pid_t> pids;
  for (const std::string& line : Lines(ReadFile(path))) {
    pids.push_back(static_cast<pid_t>(std::stol(line)));
  }
  REQUIRE(pids.size() == expected);
  for (pid_t pid : pids) {
    CHECK_MESSAGE(Cluster::Eventually([&] { return ProcessGone(pid); }, 10s),
                  "process " << pid << " still runs");
  }
}

// Replaces every `{KEY}` in `text` with its value.
std::string Fill(std::string text,
                 const std::map<std::string, std::string>& values) {
  for (const auto& [k, v] : values) {
    const std::string key = "{" + k + "}";
    for (size_t pos = text.find(key); pos != std::string::npos;
         pos = text.find(key, pos + v.size())) {
      text.replace(pos, key.size(), v);
    }
  }
  return text;
}

// A cluster with one shell worker serving `queues`.
void StartShellCluster(Cluster& c,
                       std::vector<std::string> queues = {"default:2"},
                       std::vector<std::string> args = {}) {
  c.StartScheduler();
  for (const std::string& q : queues) {
    args.push_back("--queue");
    args.push_back(q);
  }
  c.StartWorker("w1", args);
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
}

// A minimal HTTP/1.1 server on 127.0.0.1 for the docs examples that
// download, upload and call a web hook: it serves fixed bodies to GET and
// records every request. One connection at a time, closed after the reply.
class HttpServer {
 public:
  struct Request {
    std::string method, path, headers, body;
  };

  HttpServer() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(fd_, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  }
  ~HttpServer() {
    thread_.request_stop();
    thread_.join();
    close(fd_);
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  void Serve(const std::string& path, std::string body) {
    std::lock_guard lock(mu_);
    files_[path] = std::move(body);
  }
  std::vector<Request> Requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // The first request for `path`, or nullopt.
  std::optional<Request> Find(const std::string& method,
                              const std::string& path) {
    for (const Request& r : Requests()) {
      if (r.method == method && r.path == path) return r;
    }
    return std::nullopt;
  }

 private:
  void Loop(std::stop_token stop) {
    while (!stop.stop_requested()) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      timeval tv{5, 0};  // a client that stalls cannot hang the test
      setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      Handle(conn);
      close(conn);
    }
  }

  static void SendAll(int conn, const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n =
          send(conn, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  void Handle(int conn) {
    std::string data;
    char buf[65536];
    size_t head_end;
    while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = recv(conn, buf, sizeof buf, 0);
      if (n <= 0) return;
      data.append(buf, static_cast<size_t>(n));
    }
    Request r;
    const std::string head = data.substr(0, head_end);
    std::istringstream line(head.substr(0, head.find("\r\n")));
    line >> r.method >> r.path;
    const size_t eol = head.find("\r\n");
    r.headers = eol == std::string::npos ? "" : head.substr(eol + 2);
    std::string lower = r.headers;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    size_t length = 0;
    if (size_t at = lower.find("content-length:"); at != std::string::npos) {
      length = std::stoul(lower.substr(at + 15));
    }
    if (Contains(lower, "expect: 100-continue")) {
      SendAll(conn, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    r.body = data.substr(head_end + 4);
    while (r.body.size() < length) {
      ssize_t n = recv(conn, buf, sizeof buf, 0);
      if (n <= 0) break;
      r.body.append(buf, static_cast<size_t>(n));
    }
    std::string status = "200 OK", body = "ok\n";
    {
      std::lock_guard lock(mu_);
      if (r.method == "GET") {
        auto it = files_.find(r.path);
        if (it == files_.end()) {
          status = "404 Not Found";
          body = "not found\n";
        } else {
          body = it->second;
        }
      }
      requests_.push_back(r);
    }
    SendAll(conn, "HTTP/1.1 " + status +
                      "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body);
  }

  int fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::string> files_;
  std::vector<Request> requests_;
  std::jthread thread_;
};

// The fenced ```toml blocks of docs/JOBS.md, in order.
std::vector<std::string> DocExamples() {
  const std::string doc = ReadFile(SourcePath("docs/JOBS.md"));
  REQUIRE_FALSE(doc.empty());
  std::vector<std::string> blocks;
  for (size_t pos = doc.find("```toml\n"); pos != std::string::npos;
       pos = doc.find("```toml\n", pos)) {
    const size_t start = pos + 8;
    const size_t end = doc.find("\n```", start);
    REQUIRE(end != std::string::npos);
    blocks.push_back(doc.substr(start, end - start + 1));
    pos = end + 4;
  }
  return blocks;
}

// ---- 1. Ordering. ----------------------------------------------------------

TEST_CASE("Semantics.PlainListRunsInFileOrderAndEmptyDependsOnMakesARoot") {
  Cluster c;
  StartShellCluster(c, {"default:2"});
  const std::string toml = Fill(R"(
name = "order"

[[tasks]]
name = "first"
run = "echo first >> {LEDGER}; sleep 0.4"

[[tasks]]
name = "second"
run = "echo second >> {LEDGER}"

[[tasks]]
name = "third"
run = "echo third >> {LEDGER}"

[[tasks]]
name = "side"
depends_on = []
run = "sleep 0.4; echo side >> {LEDGER}"
)",
                                {{"LEDGER", c.dir() + "/ledger"}});
  CommandResult r =
      Drover(c, {"submit", JobFile(c, "order", toml), "--wait", "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  JobView job = c.Status(json::parse(r.out).at("id").get<std::string>());
  REQUIRE(job.state == "COMPLETED");
  const TaskView &first = TaskNamed(job, "first"),
                 &second = TaskNamed(job, "second"),
                 &third = TaskNamed(job, "third"),
                 &side = TaskNamed(job, "side");
  // No depends_on: after the task above, never beside it.
  CHECK(Started(second) >= Finished(first));
  CHECK(Started(third) >= Finished(second));
  // depends_on = []: a root, which runs beside the first task although it
  // is written last.
  CHECK(Overlap(side, first));
  std::vector<std::string> ledger = Lines(ReadFile(c.dir() + "/ledger"));
  std::erase(ledger, "side");
  CHECK(ledger == std::vector<std::string>{"first", "second", "third"});
}

// A start task, two branches of `secs` each, and a join.
std::string Diamond(const std::string& queue, const std::string& secs) {
  return Fill(R"(
name = "diamond"
queue = "{QUEUE}"

[[tasks]]
name = "start"
run = "true"

[[tasks]]
name = "left"
depends_on = ["start"]
run = "sleep {SECS}"

[[tasks]]
name = "right"
depends_on = ["start"]
run = "sleep {SECS}"

[[tasks]]
name = "join"
depends_on = ["left", "right"]
run = "true"
)",
              {{"QUEUE", queue}, {"SECS", secs}});
}

TEST_CASE("Semantics.IndependentBranchesRunInParallelUpToTheSlots") {
  Cluster c;
  StartShellCluster(c, {"two:2", "one:1"});
  // Two slots: both 1.5 s branches are dispatched as soon as `start` ends.
  const std::string wide =
      SubmitCli(c, JobFile(c, "wide", Diamond("two", "1.5")));
  // One slot: the branches take turns.
  const std::string narrow =
      SubmitCli(c, JobFile(c, "narrow", Diamond("one", "0.3")));
  CommandResult waited = Drover(c, {"wait", wide});
  CHECK_MESSAGE(waited.exit_code == 0, waited.err);
  JobView w = c.Wait(wide);
  REQUIRE(w.state == "COMPLETED");
  const TaskView &left = TaskNamed(w, "left"), &right = TaskNamed(w, "right");
  CHECK(Started(left) >= Finished(TaskNamed(w, "start")));
  CHECK(Started(right) >= Finished(TaskNamed(w, "start")));
  CHECK(Overlap(left, right));
  CHECK(Started(TaskNamed(w, "join")) >= Finished(left));
  CHECK(Started(TaskNamed(w, "join")) >= Finished(right));
  MESSAGE("two 1.5 s branches with two slots: the job ran for "
          << (EpochMs(*w.finished_at) - EpochMs(*w.started_at)) << " ms");

  JobView n = c.Wait(narrow);
  REQUIRE(n.state == "COMPLETED");
  CHECK_FALSE(Overlap(TaskNamed(n, "left"), TaskNamed(n, "right")));
}

// ---- 2. Data flow. ---------------------------------------------------------

TEST_CASE("Semantics.InputsEnvOutputsVarsAndJobFieldsFlowThroughTheCli") {
  Cluster c;
  StartShellCluster(c);
  const std::string file = JobFile(c, "flow", R"(
name = "data flow"

[inputs]
greeting = "hello"
who = "world"
list = "a,b,c"

[[tasks]]
name = "make"
run = "printf '%s, %s' '{{ inputs.greeting }}' \"$WHO\" > \"$DROVER_OUTPUT\""
env = { WHO = "{{ upper(inputs.who) }}" }
var = "made"

[[tasks]]
name = "use"
cmd = ["sh", "-c", "printf '%s|%s|%s|%s|%s|%s' \"$1\" \"$MADE\" \"$JOB\" \"$N\" \"$D\" \"$T\" > \"$DROVER_OUTPUT\"", "sh", "{{ tasks.made }}"]
env = { MADE = "{{ tasks.made }}", JOB = "{{ job.name }}/{{ job.id }}", N = "{{ len(inputs.list) }}", D = "{{ default(inputs.nothing, 'fallback') }}", T = "{{ trim('  x ') .. tostring(contains(inputs.list, 'b')) }}" }
)");
  CommandResult r =
      Drover(c, {"submit", file, "--input", "who=drover", "--wait", "--json"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  json job = json::parse(r.out);
  const std::string id = job.at("id");
  CHECK(job.at("state") == "COMPLETED");
  CHECK(job.at("inputs").at("who") == "drover");
  CHECK(job.at("inputs").at("greeting") == "hello");
  REQUIRE(job.at("tasks").size() == 2);
  CHECK(job["tasks"][0].at("output") == "hello, DROVER");
  CHECK(job["tasks"][1].at("output") ==
        "hello, DROVER|hello, DROVER|data flow/" + id + "|5|fallback|xtrue");

  // An --input the file does not declare: a located error, exit 2, and
  // nothing stored.
  r = Drover(c, {"submit", file, "--input", "whom=x"});
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(
      std::regex_search(
          r.err, std::regex(file + R"(:[1-9]\d*:\d+: error: --input 'whom')")),
      r.err);
  CHECK(Contains(r.err, "did you mean 'who'"));
  r = Drover(c, {"submit", file, "--input", "who"});
  CHECK(r.exit_code == 2);
  CHECK(Contains(r.err, "must be KEY=VALUE"));
  const std::string bare = JobFile(
      c, "bare", "name = \"bare\"\n[[tasks]]\nname = \"t\"\nrun = \"true\"\n");
  r = Drover(c, {"submit", bare, "--input", "x=1"});
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(Contains(r.err, bare + ":0:0: error: --input 'x'"), r.err);
  r = Drover(c, {"list", "--json"});
  REQUIRE(r.exit_code == 0);
  CHECK(json::parse(r.out).size() == 1);
  // No scheduler there: exit 3.
  r = RunCommand({BuildPath("drover"), "--api", "ipc://" + c.dir() + "/nobody",
                  "--request-timeout", "300ms", "status", id});
  CHECK(r.exit_code == 3);
}

// ---- 3. Expressions and conditions. ------------------------------------

TEST_CASE("Semantics.FalseConditionsSkipTasksAndTheirDependentsStillRun") {
  Cluster c;
  StartShellCluster(c);
  const std::string ledger = c.dir() + "/ledger";
  const std::string id = SubmitCli(c, JobFile(c, "conditions",
                                              Fill(R"(
name = "conditions"

[inputs]
mode = "fast"

[[tasks]]
name = "probe"
run = "printf 3 > \"$DROVER_OUTPUT\""
var = "n"

[[tasks]]
name = "slow-path"
if = "{{ inputs.mode == 'slow' }}"
run = "echo slow-path >> {LEDGER}"

[[tasks]]
name = "after-skip"
run = "echo after-skip >> {LEDGER}"

[[tasks]]
name = "big"
if = "{{ tonumber(tasks.n) > 2 and len(inputs.mode) == 4 }}"
run = "echo big >> {LEDGER}"

[[tasks]]
name = "hooks"
run = "echo main >> {LEDGER}"

[[tasks.pre]]
name = "skipped-pre"
if = "{{ inputs.mode != 'fast' }}"
run = "echo skipped-pre >> {LEDGER}"

[[tasks.pre]]
name = "kept-pre"
if = "{{ inputs.mode == 'fast' }}"
run = "echo kept-pre >> {LEDGER}"

[[tasks.post]]
name = "skipped-post"
if = "false"
run = "echo skipped-post >> {LEDGER}"

[[tasks]]
name = "last-skipped"
if = "false"
run = "echo last-skipped >> {LEDGER}"
)",
                                                   {{"LEDGER", ledger}})));
  // A job whose only task is skipped ends at once, and only once.
  const std::string lone =
      SubmitCli(c, JobFile(c, "lone",
                           "name = \"lone\"\n[[tasks]]\nname = \"t\"\nif = "
                           "\"{{ 1 > 2 }}\"\nrun = \"echo lone >> " +
                               ledger + "\"\n"));
  JobView job = c.Wait(id);
  CHECK(job.state == "COMPLETED");
  CHECK(TaskNamed(job, "probe").state == "COMPLETED");
  CHECK(TaskNamed(job, "slow-path").state == "SKIPPED");
  CHECK(TaskNamed(job, "slow-path").attempts == 0);
  CHECK(TaskNamed(job, "after-skip").state == "COMPLETED");
  CHECK(TaskNamed(job, "big").state == "COMPLETED");
  CHECK(TaskNamed(job, "hooks").state == "COMPLETED");
  CHECK(TaskNamed(job, "last-skipped").state == "SKIPPED");
  JobView l = c.Wait(lone);
  CHECK(l.state == "COMPLETED");
  CHECK(l.tasks[0].state == "SKIPPED");
  CHECK(Lines(ReadFile(ledger)) ==
        std::vector<std::string>{"after-skip", "big", "kept-pre", "main"});
  CommandResult logs = Drover(c, {"logs", id, "--task", "hooks"});
  REQUIRE(logs.exit_code == 0);
  CHECK_MESSAGE(
      Contains(logs.err,
               "pre task 'skipped-pre' skipped: its condition is false"),
      logs.err);
  CHECK(Contains(logs.err, "post task 'skipped-post' skipped"));
  CHECK(Drover(c, {"wait", lone}).exit_code == 0);
}

TEST_CASE("Semantics.AFailingExpressionFailsItsTaskWithItsMessage") {
  Cluster c;
  StartShellCluster(c);
  const std::string ledger = c.dir() + "/ledger";
  const std::string in_run = SubmitCli(c, JobFile(c, "run",
                                                  Fill(R"(
name = "bad run"
[[tasks]]
name = "ok"
run = "true"
[[tasks]]
name = "bad"
run = "echo {{ tonumber('x') + 1 }}"
[[tasks]]
name = "never"
run = "echo never >> {LEDGER}"
)",
                                                       {{"LEDGER", ledger}})));
  const std::string in_if = SubmitCli(c, JobFile(c, "if", R"(
name = "bad if"
[[tasks]]
name = "bad"
if = "{{ inputs.nothing.field }}"
run = "true"
)"));
  const std::string in_env = SubmitCli(c, JobFile(c, "env", R"(
name = "bad env"
[[tasks]]
name = "bad"
run = "true"
env = { X = "{{ len(42) }}" }
)"));
  // The sandbox has no library to reach processes or files with.
  const std::string escape = c.dir() + "/escaped";
  std::vector<std::string> escapes;
  for (const char* lib : {"os", "io"}) {
    escapes.push_back(SubmitCli(
        c, JobFile(c, lib,
                   Fill(R"(
name = "escape"
[[tasks]]
name = "{LIB}"
run = "echo {{ os == nil and io == nil and {LIB}.{CALL} }}"
)",
                        {{"LIB", lib},
                         {"CALL", std::string(lib) == "os"
                                      ? "execute('touch " + escape + "')"
                                      : "open('" + escape + "', 'w')"}}))));
  }
  JobView run = c.Wait(in_run);
  CHECK(run.state == "FAILED");
  const TaskView& bad = TaskNamed(run, "bad");
  CHECK(bad.state == "FAILED");
  CHECK(bad.attempts == 0);  // it never ran
  const std::string err = bad.error.value_or("");
  CHECK_MESSAGE(Contains(err, "in run: expression 'tonumber('x') + 1'"), err);
  CHECK_MESSAGE(Contains(err, "arithmetic"), err);
  CHECK(run.error.value_or("") == "task 'bad' failed: " + err);
  CHECK(TaskNamed(run, "never").state == "CANCELLED");
  CHECK(TaskNamed(run, "never").attempts == 0);
  CHECK_FALSE(fs::exists(ledger));

  JobView iff = c.Wait(in_if);
  CHECK(iff.state == "FAILED");
  CHECK_MESSAGE(Contains(iff.tasks[0].error.value_or(""),
                         "in if: expression 'inputs.nothing.field'"),
                iff.tasks[0].error.value_or(""));
  JobView env = c.Wait(in_env);
  CHECK(env.state == "FAILED");
  CHECK_MESSAGE(Contains(env.tasks[0].error.value_or(""),
                         "in env X: expression 'len(42)'"),
                env.tasks[0].error.value_or(""));
  for (const std::string& e : escapes) {
    JobView sandbox = c.Wait(e);
    CHECK(sandbox.state == "FAILED");
    const TaskView& t = sandbox.tasks[0];
    CHECK_MESSAGE(Contains(t.error.value_or(""), "(global '" + t.name + "')"),
                  t.error.value_or(""));
  }
  CHECK_FALSE(fs::exists(escape));
  // The CLI says why.
  CommandResult w = Drover(c, {"wait", in_env});
  CHECK(w.exit_code == 1);
  CHECK(Contains(w.err, "expression 'len(42)'"));
}

// ---- 4. Secrets. -----------------------------------------------------------

TEST_CASE("Semantics.SecretsAppearNowhereAUserOrOperatorCanRead") {
  Cluster c;
  StartShellCluster(c);
  const std::string secret = "tok-5ecret-Zq9";
  // The task prints the secret to stdout and stderr (once split over two
  // writes), writes it to its output, passes it on as a var; the last task
  // fails with an error message that quotes it.
  const std::string id = SubmitCli(c, JobFile(c, "secrets", R"(
name = "secrets"

[secrets]
TOKEN = "tok-5ecret-Zq9"

[[tasks]]
name = "leak"
run = """
[ "$TOKEN" = "$EXPECTED" ] && echo token-ok
echo "stdout $TOKEN"
echo "stderr $TOKEN" >&2
printf '%.6s' "$TOKEN"; sleep 0.3; printf '%s split\n' "${TOKEN#??????}"
printf '%s' "$TOKEN" > "$DROVER_OUTPUT"
"""
env = { TOKEN = "{{ secrets.TOKEN }}", EXPECTED = "{{ 'tok-' .. '5ecret-Zq9' }}" }
var = "leaked"

[[tasks]]
name = "echo-var"
run = "printf '%s' \"$V\" > \"$DROVER_OUTPUT\"; echo \"var $V\""
env = { V = "{{ tasks.leaked }}" }

[[tasks]]
name = "fail"
run = "echo \"$X\""
env = { X = "{{ 'tok-5ecret-Zq9' .. nil }}" }
)"));
  JobView job = c.Wait(id);
  REQUIRE(job.state == "FAILED");
  CHECK(TaskNamed(job, "leak").state == "COMPLETED");
  CHECK(TaskNamed(job, "leak").output == "[redacted]");
  CHECK(TaskNamed(job, "echo-var").output == "[redacted]");
  CHECK(Contains(TaskNamed(job, "fail").error.value_or(""), "[redacted]"));
  CHECK(Contains(job.error.value_or(""), "[redacted]"));

  CommandResult logs = Drover(c, {"logs", id});
  REQUIRE(logs.exit_code == 0);
  const std::string all_logs = logs.out + logs.err;
  CAPTURE(all_logs);
  CHECK(Contains(all_logs, "token-ok"));  // the task did see the secret
  CHECK(Contains(all_logs, "stdout [redacted]"));
  CHECK(Contains(all_logs, "stderr [redacted]"));
  CHECK(Contains(all_logs, "[redacted] split"));
  CHECK(Contains(all_logs, "var [redacted]"));
  CHECK_FALSE(Contains(all_logs, secret));

  CommandResult status = Drover(c, {"status", id, "--json"});
  REQUIRE(status.exit_code == 0);
  CHECK_FALSE(Contains(status.out, secret));
  json sj = StatusJson(c, id);
  CHECK(sj.at("tasks").at(0).at("output") == "[redacted]");
  CHECK(Contains(sj.at("error").get<std::string>(), "[redacted]"));
  status = Drover(c, {"status", id});
  CHECK(Contains(status.out, "[redacted]"));
  CHECK_FALSE(Contains(status.out + status.err, secret));
  CommandResult list = Drover(c, {"list", "--json"});
  CHECK_FALSE(Contains(list.out, secret));
  CommandResult waited = Drover(c, {"wait", id});
  CHECK_FALSE(Contains(waited.out + waited.err, secret));

  // Neither daemon writes it to its own log.
  CHECK_FALSE(Contains(c.SchedulerLog(), secret));
  CHECK_FALSE(Contains(ReadFile(c.dir() + "/worker-w1.log"), secret));
  CHECK(Contains(c.SchedulerLog(), id));  // the right log was read

  // secrets.NAME outside env is refused before anything runs.
  const std::string misuse = JobFile(c, "misuse", R"(
name = "misuse"
[secrets]
TOKEN = "x"
[[tasks]]
name = "a"
run = "echo {{ secrets.TOKEN }}"
[[tasks]]
name = "b"
cmd = ["echo", "{{ secrets.TOKEN }}"]
[[tasks]]
name = "c"
if = "{{ secrets.TOKEN == 'x' }}"
run = "true"
)");
  CommandResult v = Drover(c, {"validate", misuse});
  CHECK(v.exit_code == 2);
  size_t refusals = 0;
  for (const std::string& line : Lines(v.out)) {
    refusals += Contains(line, "secrets can only be used in env values");
  }
  CHECK(refusals == 3);
  CHECK(Drover(c, {"submit", misuse}).exit_code == 2);
}

// ---- 5. Failure: retries, timeouts, propagation. --------------------------

TEST_CASE("Semantics.RetriesBackOffAndStatusShowsEveryAttemptsError") {
  Cluster c;
  StartShellCluster(c);
  const std::string counter = c.dir() + "/counter";
  const std::string stamps = c.dir() + "/stamps";
  const std::string id =
      SubmitCli(c, JobFile(c, "flaky",
                           Fill(R"(
name = "flaky"
[[tasks]]
name = "flaky"
run = "n=$(cat {COUNTER} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {COUNTER}; date +%s%N >> {STAMPS}; [ $n -ge 3 ] || exit 7"
retry = { limit = 3, initial_delay = "200ms", max_delay = "250ms" }
)",
                                {{"COUNTER", counter}, {"STAMPS", stamps}})));
  CommandResult w = Drover(c, {"wait", id});
  CHECK_MESSAGE(w.exit_code == 0, w.err);
  JobView job = c.Status(id);
  REQUIRE(job.state == "COMPLETED");
  const TaskView& t = job.tasks[0];
  CHECK(t.state == "COMPLETED");
  CHECK(t.attempts == 3);
  CHECK(t.exit_code == 0);
  CHECK(t.errors ==
        std::vector<std::string>{"attempt 1 on w1: exited with code 7",
                                 "attempt 2 on w1: exited with code 7"});
  CommandResult status = Drover(c, {"status", id});
  CHECK(Contains(status.out, "attempt 1 on w1: exited with code 7"));
  CHECK(Contains(status.out, "attempt 2 on w1: exited with code 7"));
  // Each retry waits at least half its backoff (equal jitter): 100 ms of
  // 200 ms, then 125 ms of min(400, 250) ms.
  std::vector<std::string> s = Lines(ReadFile(stamps));
  REQUIRE(s.size() == 3);
  for (size_t i = 1; i < s.size(); ++i) {
    const long long gap_ms =
        (std::stoll(s[i]) - std::stoll(s[i - 1])) / 1000000;
    CHECK_MESSAGE(gap_ms >= (i == 1 ? 100 : 125), "retry " << i);
  }
  CommandResult logs = Drover(c, {"logs", id});
  CHECK(
      Contains(logs.err, "attempt 1 failed: exited with code 7; retrying in"));
}

TEST_CASE("Semantics.AFailedTaskFailsTheJobLetsRunningSiblingsFinish") {
  Cluster c;
  StartShellCluster(c, {"default:3"});
  const std::string ledger = c.dir() + "/ledger";
  // The siblings run until a while after `bad` has failed for good (its
  // second attempt has begun), so they are running when the job fails.
  const std::string id = SubmitCli(c, JobFile(c, "failure",
                                              Fill(R"(
name = "failure"

[[tasks]]
name = "slow-sibling"
depends_on = []
run = "until grep -qs bad-2 {LEDGER}; do sleep 0.05; done; sleep 0.3; echo slow-sibling >> {LEDGER}"

[[tasks]]
name = "bad"
depends_on = []
run = "echo bad-$DROVER_ATTEMPT >> {LEDGER}; exit 3"
retry = { limit = 1, initial_delay = "100ms" }

[[tasks]]
name = "after-bad"
run = "echo after-bad >> {LEDGER}"

[[tasks]]
name = "late-sibling"
depends_on = ["slow-sibling"]
run = "echo late-sibling >> {LEDGER}"

[[tasks]]
name = "second-failure"
depends_on = []
run = "until grep -qs bad-2 {LEDGER}; do sleep 0.05; done; sleep 0.3; exit 4"
)",
                                                   {{"LEDGER", ledger}})));
  CommandResult w = Drover(c, {"wait", id});
  CHECK(w.exit_code == 1);
  CHECK(Contains(w.err, "task 'bad' failed: exited with code 3"));
  JobView job = c.Status(id);
  CHECK(job.state == "FAILED");
  CHECK(job.error == "task 'bad' failed: exited with code 3");  // the first
  const TaskView& bad = TaskNamed(job, "bad");
  CHECK(bad.state == "FAILED");
  CHECK(bad.attempts == 2);
  CHECK(bad.errors.size() == 2);
  const TaskView& slow = TaskNamed(job, "slow-sibling");
  CHECK(slow.state == "COMPLETED");  // already running: allowed to finish
  CHECK(Finished(slow) > Finished(bad));
  CHECK(TaskNamed(job, "second-failure").state == "FAILED");
  CHECK(TaskNamed(job, "second-failure").error == "exited with code 4");
  for (const char* never : {"after-bad", "late-sibling"}) {
    CHECK_MESSAGE(TaskNamed(job, never).state == "CANCELLED", never);
    CHECK_MESSAGE(TaskNamed(job, never).attempts == 0, never);
  }
  CHECK(Lines(ReadFile(ledger)) ==
        std::vector<std::string>{"bad-1", "bad-2", "slow-sibling"});
  CommandResult status = Drover(c, {"status", id});
  CHECK(Contains(status.out, "attempt 1 on w1: exited with code 3"));
  CHECK(Contains(status.out, "attempt 2 on w1: exited with code 3"));
}

TEST_CASE("Semantics.TimeoutKillsTheWholeProcessGroup") {
  Cluster c;
  StartShellCluster(c);
  const std::string pids = c.dir() + "/pids";
  // The shell backgrounds a grandchild; both must die at the timeout.
  const std::string id = SubmitCli(c, JobFile(c, "timeout",
                                              Fill(R"(
name = "timeout"
[[tasks]]
name = "hang"
run = "sleep 30 & echo $! >> {PIDS}; echo $$ >> {PIDS}; sleep 30"
timeout = "500ms"
retry = { limit = 1, initial_delay = "50ms" }
)",
                                                   {{"PIDS", pids}})));
  JobView job = c.Wait(id, 20s);
  CHECK(job.state == "FAILED");
  const TaskView& t = job.tasks[0];
  CHECK(t.attempts == 2);
  CHECK(t.error == "timed out after 500ms");
  REQUIRE(t.errors.size() == 2);
  for (const std::string& e : t.errors) {
    CHECK_MESSAGE(Contains(e, "timed out after 500ms"), e);
  }
  CHECK(job.error == "task 'hang' failed: timed out after 500ms");
  ExpectProcessesGone(pids, 4);
}

// ---- 6. Cancel. ------------------------------------------------------------

TEST_CASE("Semantics.CancelStopsRunningTasksAndStartsNothingMore") {
  Cluster c;
  // Nothing held on the worker: the third task waits in droverd's queue
  // (Mesh.HeldAttemptStartsOnlyInItsWorkersSlot cancels a held one).
  StartShellCluster(c, {"default:1"}, {"--prefetch", "0"});
  const std::string pids = c.dir() + "/pids";
  const std::string ledger = c.dir() + "/ledger";
  const std::string id =
      SubmitCli(c, JobFile(c, "cancel",
                           Fill(R"(
name = "cancel me"

[[tasks]]
name = "long"
run = "sleep 30 & echo $! >> {PIDS}; echo $$ >> {PIDS}; sleep 30"

[[tasks]]
name = "after-long"
run = "echo after-long >> {LEDGER}"

[[tasks]]
name = "waiting-for-a-slot"
depends_on = []
run = "echo waiting >> {LEDGER}"
)",
                                {{"PIDS", pids}, {"LEDGER", ledger}})));
  REQUIRE(Cluster::Eventually([&] {
    return c.Status(id).tasks[0].state == "RUNNING" &&
           Lines(ReadFile(pids)).size() == 2;
  }));
  CHECK(c.Status(id).tasks[2].state == "PENDING");  // no free slot
  CommandResult r = Drover(c, {"wait", id, "--timeout", "200ms"});
  CHECK(r.exit_code == 3);  // timed out waiting
  CHECK(Contains(r.err, "did not end within 200ms"));
  r = Drover(c, {"cancel", id});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == id + " CANCELLED\n");
  JobView job = c.Status(id);
  CHECK(job.state == "CANCELLED");
  for (const TaskView& t : job.tasks) {
    CHECK_MESSAGE(t.state == "CANCELLED", t.name);
  }
  CHECK(TaskNamed(job, "after-long").attempts == 0);
  CHECK(TaskNamed(job, "waiting-for-a-slot").attempts == 0);
  ExpectProcessesGone(pids, 2);
  CHECK(Drover(c, {"wait", id}).exit_code == 1);

  // The slot is free again, and what was cancelled never starts.
  const std::string next =
      SubmitCli(c, JobFile(c, "next",
                           "name = \"next\"\n[[tasks]]\nname = \"t\"\nrun = "
                           "\"true\"\n"));
  CHECK(c.Wait(next).state == "COMPLETED");
  CHECK_FALSE(fs::exists(ledger));
  CHECK(c.Status(id).state == "CANCELLED");

  // A finished job cannot be cancelled.
  r = Drover(c, {"cancel", id});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(Contains(r.err, "job " + id + " has already ended (CANCELLED)"),
                r.err);
  r = Drover(c, {"cancel", next});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(
      Contains(r.err, "job " + next + " has already ended (COMPLETED)"), r.err);
  CHECK(c.Status(next).state == "COMPLETED");
  r = Drover(c, {"cancel", "no-such-job"});
  CHECK(r.exit_code == 1);
  CHECK(Contains(r.err, "no-such-job"));
}

// ---- 7. Defaults, pre and post. ------------------------------------------

TEST_CASE("Semantics.DefaultsApplyToTasksThatDoNotSetAKey") {
  Cluster c;
  StartShellCluster(c);
  const std::string id = SubmitCli(c, JobFile(c, "defaults", R"(
name = "defaults"

[defaults]
timeout = "400ms"
retry = { limit = 1, initial_delay = "50ms" }
env = { A = "da", B = "db" }

[[tasks]]
name = "own"
timeout = "10s"
env = { B = "tb" }
run = "sleep 0.6; printf '%s-%s-%s' \"$A\" \"$B\" \"$(cat \"$DROVER_SCRATCH/pre\")\" > \"$DROVER_OUTPUT\""

[[tasks.pre]]
name = "pre"
run = "printf '%s' \"$A$B\" > \"$DROVER_SCRATCH/pre\""

[[tasks]]
name = "inherits"
depends_on = []
run = "sleep 5"
)"));
  JobView job = c.Wait(id, 20s);
  CHECK(job.state == "FAILED");
  const TaskView& own = TaskNamed(job, "own");
  // Its own timeout wins over the default's; env is merged, its own B
  // winning; the pre task gets the default env, not its task's.
  CHECK(own.state == "COMPLETED");
  CHECK(own.attempts == 1);
  CHECK(own.output == "da-tb-dadb");
  const TaskView& inherits = TaskNamed(job, "inherits");
  CHECK(inherits.state == "FAILED");
  CHECK(inherits.attempts == 2);                     // the default retry
  CHECK(inherits.error == "timed out after 400ms");  // the default timeout
}

TEST_CASE("Semantics.PreAndPostRunOnTheirTasksWorkerAndShareItsScratch") {
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:2"});
  c.StartWorker("w2", {"--queue", "default:2"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 2; }));
  const std::string ledger = c.dir() + "/ledger";
  std::string toml = "name = \"hooks\"\n";
  for (int i = 0; i < 4; ++i) {
    toml += Fill(R"(
[[tasks]]
name = "t{I}"
depends_on = []
run = "echo main >> trail; printf '%s|%s' \"$DROVER_SCRATCH\" \"$(cat trail | tr '\n' ' ')\" >> \"$DROVER_OUTPUT\"; sleep 0.2"

[[tasks.pre]]
name = "pre"
run = "echo pre > \"$DROVER_SCRATCH/trail\"; echo pre-output > \"$DROVER_OUTPUT\""

[[tasks.post]]
name = "post"
run = "echo post >> trail; printf '%s|%s\n' \"$DROVER_SCRATCH\" \"$(cat trail | tr '\n' ' ')\" >> {LEDGER}; echo post-output >> \"$DROVER_OUTPUT\""
)",
                 {{"I", std::to_string(i)}, {"LEDGER", ledger}});
  }
  JobView job = c.Wait(SubmitCli(c, JobFile(c, "hooks", toml)));
  REQUIRE(job.state == "COMPLETED");
  const std::vector<std::string> posts = Lines(ReadFile(ledger));
  CHECK(posts.size() == 4);
  std::set<std::string> workers;
  for (const TaskView& t : job.tasks) {
    CAPTURE(t.name);
    const std::string out = t.output.value_or("");
    const std::string scratch = out.substr(0, out.find('|'));
    // The main task found the pre task's file, in the worker's work dir;
    // the output is the main task's alone.
    CHECK(out == scratch + "|pre main ");
    REQUIRE(t.worker);
    workers.insert(*t.worker);
    CHECK(scratch.rfind(c.dir() + "/work-" + *t.worker + "/", 0) == 0);
    // The post task ran after it, in the same place.
    CHECK(std::count(posts.begin(), posts.end(), scratch + "|pre main post ") ==
          1);
  }
  CHECK(workers.size() == 2);

  // A failing pre task fails the task before it runs; a failing post task
  // fails it after; a failing main task runs no post task.
  const std::string failing =
      SubmitCli(c, JobFile(c, "failing-hooks",
                           Fill(R"(
name = "failing hooks"

[[tasks]]
name = "pre-fails"
depends_on = []
run = "echo pre-fails-main >> {LEDGER}"
pre = [{ name = "setup", run = "exit 5" }]

[[tasks]]
name = "post-fails"
depends_on = []
run = "echo post-fails-main >> {LEDGER}"
post = [{ name = "ship", run = "exit 6" }]

[[tasks]]
name = "main-fails"
depends_on = []
run = "exit 7"
post = [{ name = "ship", run = "echo main-fails-post >> {LEDGER}" }]
)",
                                {{"LEDGER", c.dir() + "/ledger2"}})));
  JobView f = c.Wait(failing);
  CHECK(f.state == "FAILED");
  CHECK(TaskNamed(f, "pre-fails").error ==
        "pre task 'setup' failed: exited with code 5");
  CHECK(TaskNamed(f, "post-fails").error ==
        "post task 'ship' failed: exited with code 6");
  CHECK(TaskNamed(f, "main-fails").error == "exited with code 7");
  CHECK(Lines(ReadFile(c.dir() + "/ledger2")) ==
        std::vector<std::string>{"post-fails-main"});
}

TEST_CASE("Semantics.EachAttemptStartsWithAnEmptyScratchAndNoOutput") {
  // One slot, tasks in a chain: each attempt follows the one before on the
  // same worker, which reuses a directory only if it was left empty.
  Cluster c;
  c.StartScheduler();
  c.StartWorker("w1", {"--queue", "default:1"});
  REQUIRE(Cluster::Eventually([&] { return c.Workers().size() == 1; }));
  const std::string id = SubmitCli(c, JobFile(c, "scratch", R"(
name = "scratch"

[[tasks]]
name = "litter"
run = "echo x > \"$DROVER_SCRATCH/left\"; echo litter > \"$DROVER_OUTPUT\""

[[tasks]]
name = "look"
run = "ls -A \"$DROVER_SCRATCH\" | wc -l > \"$DROVER_OUTPUT\""

[[tasks]]
name = "tidy"
run = "echo tidy > \"$DROVER_OUTPUT\""

[[tasks]]
name = "look-again"
run = "ls -A \"$DROVER_SCRATCH\" | wc -l > \"$DROVER_OUTPUT\""

[[tasks]]
name = "settle"
run = "sleep 2.2; echo settled > \"$DROVER_OUTPUT\""

[[tasks]]
name = "quiet"
run = "true"

[[tasks]]
name = "litter-late"
run = "touch \"$DROVER_SCRATCH/late\""

[[tasks]]
name = "look-late"
run = "ls -A \"$DROVER_SCRATCH\" | wc -l > \"$DROVER_OUTPUT\""

[[tasks]]
name = "link"
run = "echo linked > \"$DROVER_SCRATCH/../../linked\"; ln -sf \"$DROVER_SCRATCH/../../linked\" \"$DROVER_OUTPUT\""

[[tasks]]
name = "hard-link"
run = "echo kept > \"$DROVER_SCRATCH/../../kept\"; ln -f \"$DROVER_SCRATCH/../../kept\" \"$DROVER_OUTPUT\""

[[tasks]]
name = "after-link"
run = "test -f \"$DROVER_OUTPUT\" && ! test -L \"$DROVER_OUTPUT\" && ! test -s \"$DROVER_OUTPUT\" && echo fresh > \"$DROVER_OUTPUT\""

[[tasks]]
name = "hook-link"
run = "true"
pre = [{ name = "link", run = "echo hooked > \"$DROVER_SCRATCH/../../hooked\"; ln -f \"$DROVER_SCRATCH/../../hooked\" \"$DROVER_OUTPUT\"" }]

[[tasks]]
name = "hook-again"
run = "true"
pre = [{ name = "empty", run = "test -f \"$DROVER_OUTPUT\" && ! test -s \"$DROVER_OUTPUT\"" }]

[[tasks]]
name = "plain"
run = "true"

[[tasks]]
name = "plain-missing"
run = "drover-no-such-command --flag"
retry = { limit = 0 }
)"));
  JobView job = c.Wait(id);
  CHECK(job.state == "FAILED");
  CHECK(TaskNamed(job, "litter").output == "litter\n");
  CHECK(TaskNamed(job, "look").output == "0\n");
  CHECK(TaskNamed(job, "tidy").output == "tidy\n");
  CHECK(TaskNamed(job, "look-again").output == "0\n");
  // A directory unchanged for a while is taken again without reading it,
  // its output file emptied; one changed since is read again.
  CHECK(TaskNamed(job, "settle").output == "settled\n");
  CHECK(TaskNamed(job, "quiet").output.value_or("") == "");
  CHECK(TaskNamed(job, "look-late").output == "0\n");
  // An output file replaced by a link is read through it, and its
  // directory is not used again.
  CHECK(TaskNamed(job, "link").output == "linked\n");
  CHECK(TaskNamed(job, "after-link").output == "fresh\n");
  CHECK(ReadFile(c.dir() + "/work-w1/linked") == "linked\n");
  CHECK(TaskNamed(job, "hard-link").output == "kept\n");
  CHECK(ReadFile(c.dir() + "/work-w1/kept") == "kept\n");
  // A pre task's output file is made anew for each: a file linked there
  // by an earlier one is left as it was.
  CHECK(TaskNamed(job, "hook-again").state == "COMPLETED");
  CHECK(ReadFile(c.dir() + "/work-w1/hooked") == "hooked\n");
  CHECK(TaskNamed(job, "plain").state == "COMPLETED");
  // A plain command runs without a shell, but one that cannot be run is
  // left to /bin/sh, which says so as always.
  const TaskView& missing = TaskNamed(job, "plain-missing");
  CHECK(missing.state == "FAILED");
  CHECK(missing.exit_code == 127);
  const CommandResult logs = Drover(c, {"logs", id, "--task", "plain-missing"});
  const std::string printed = logs.out + logs.err;
  CHECK_MESSAGE(Contains(printed, "drover-no-such-command: not found"),
                printed);

  // An attempt whose main task never ran has no output, whatever the
  // attempt before it left.
  const std::string second = SubmitCli(c, JobFile(c, "no-output", R"(
name = "no output"

[[tasks]]
name = "writes"
run = "echo earlier > \"$DROVER_OUTPUT\""

[[tasks]]
name = "never-runs"
run = "echo main > \"$DROVER_OUTPUT\""
pre = [{ name = "setup", run = "exit 5" }]
retry = { limit = 0 }
)"));
  JobView j2 = c.Wait(second);
  CHECK(j2.state == "FAILED");
  CHECK(TaskNamed(j2, "writes").output == "earlier\n");
  const TaskView& never = TaskNamed(j2, "never-runs");
  CHECK(never.error == "pre task 'setup' failed: exited with code 5");
  CHECK(never.output.value_or("") == "");
}

// ---- 8. Every example in docs/JOBS.md. -----------------------------------

// How one docs example is run and what shows it worked.
struct ExampleRun {
  std::map<std::string, std::string> inputs;
  std::function<void(const JobView&)> check;
};

TEST_CASE("Semantics.EveryExampleInJobsMdRunsEndToEnd") {
  Cluster c;
  c.StartScheduler();
  // The examples' "bridge" networks run as "host" here (the test daemon
  // has no bridge), which a worker allows only when it lists it.
  std::vector<std::string> worker = {
      "--runtime", "docker",  "--runtime",     "shell",   "--queue",
      "default:4", "--queue", "maintenance:1", "--queue", "batch:2",
      "--allowed-networks", "none", "--allowed-networks", "host"};
  if (const char* host = std::getenv("DOCKER_HOST");
      host != nullptr && std::string(host).rfind("unix://", 0) == 0) {
    worker.push_back("--docker-socket");
    worker.push_back(std::string(host).substr(7));
  }
  c.StartWorker("w1", worker);
  // The Docker runtime must be usable: `scripts/docker-env.sh start` gives
  // a daemon and the local drover-test/busybox image.
  REQUIRE_MESSAGE(Cluster::Eventually(
                      [&] {
                        auto ws = c.Workers();
                        return ws.size() == 1 && ws[0].state == "ready";
                      },
                      10s),
                  "no ready worker with the Docker runtime; run "
                  "scripts/docker-env.sh start");
  HttpServer http;
  const std::string dir = c.dir();
  auto sh = [](const std::string& script) {
    CommandResult r = RunCommand({"/bin/sh", "-ec", script});
    REQUIRE_MESSAGE(r.exit_code == 0, script << "\n" << r.err);
    return r.out;
  };

  // ci: a checkout with a Makefile.
  fs::create_directories(dir + "/app");
  WriteFile(dir + "/app/Makefile",
            "all:\n\tmkdir -p dist && echo app > dist/app\n"
            "test:\n\ttest -f dist/app\n"
            "lint:\n\tgrep -q app dist/app\n");
  // release notes: a repository with two commits after v1.5.0.
  sh("cd " + dir +
     " && git init -q repo && cd repo && g() { git -c user.name=t -c "
     "user.email=t@example.com \"$@\"; } && g commit -q --allow-empty -m "
     "'release 1.5.0' && g tag v1.5.0 && g commit -q --allow-empty -m 'fix: "
     "a' && g commit -q --allow-empty -m 'feat: b'");
  fs::create_directories(dir + "/site");
  // nightly backup: data to archive.
  fs::create_directories(dir + "/data/sub");
  fs::create_directories(dir + "/backups");
  WriteFile(dir + "/data/sub/db", "rows\n");
  // unpack a release: an archive to download.
  sh("cd " + dir +
     " && mkdir -p rel/app-1.0/bin && echo readme > rel/app-1.0/README && "
     "echo run > rel/app-1.0/bin/run && tar czf release.tgz -C rel app-1.0");
  http.Serve("/releases/app-1.0.tar.gz", ReadFile(dir + "/release.tgz"));
  // compress a log: a log to fetch.
  std::string log;
  for (int i = 0; i < 200; ++i) log += "line " + std::to_string(i) + "\n";
  http.Serve("/logs/app.log", log);

  auto gzip = [](const std::string& body) {
    return body.size() > 2 && body[0] == '\x1f' && body[1] == '\x8b';
  };
  std::map<std::string, std::vector<ExampleRun>> runs;
  runs["hello"] = {
      {{}, [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         const std::string logs = c.Logs(j.id);
         CHECK(Contains(logs, "hello\n"));
         CHECK(Contains(logs, "this is a multi-line script\nbye\n"));
         CHECK(Started(TaskNamed(j, "date")) >=
               Finished(TaskNamed(j, "greet")));
         CHECK(Started(TaskNamed(j, "bye")) >= Finished(TaskNamed(j, "date")));
       }}};
  runs["ci"] = {
      {{{"src", dir + "/app"}}, [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         CHECK(Contains(sh("tar tzf " + dir + "/app/app.tgz"), "dist/app"));
         CHECK(Contains(c.Logs(j.id, "notify"), "ci job " + j.id + " started"));
         CHECK(Started(TaskNamed(j, "package")) >=
               Finished(TaskNamed(j, "lint")));
       }}};
  runs["release notes"] = {
      {{{"repo", dir + "/repo"},
        {"version", "1.5.0"},
        {"publish", "yes"},
        {"site", dir + "/site"}},
       [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         CHECK(TaskNamed(j, "count").output == "2\n");
         CHECK(TaskNamed(j, "publish").state == "COMPLETED");
         const std::string notes =
             ReadFile(dir + "/site/notes-1.5.0-stable.txt");
         CHECK(Lines(notes).size() == 2);
         CHECK(Contains(notes, "fix: a"));
         CHECK(Contains(notes, "feat: b"));
       }},
      // Not asked to publish: skipped.
      {{{"repo", dir + "/repo"}, {"version", "1.5.0"}}, [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         CHECK(TaskNamed(j, "publish").state == "SKIPPED");
       }}};
  runs["nightly backup"] = {
      {{{"data", dir + "/data"},
        {"backups", dir + "/backups"},
        {"upload_url", http.Url("/backups/")}},
       [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         auto put = http.Find("PUT", "/backups/app-" + j.id + ".tgz");
         REQUIRE_MESSAGE(put, "no upload of the backup");
         CHECK(gzip(put->body));
         // base64("backup:change-me"): the secret reached curl.
         CHECK(Contains(put->headers,
                        "Authorization: Basic YmFja3VwOmNoYW5nZS1tZQ=="));
       }}};
  runs["unpack a release"] = {
      {{{"url", http.Url("/releases/app-1.0.tar.gz")}}, [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         const std::string logs = c.Logs(j.id);
         CHECK(Contains(logs, "./app-1.0/README"));
         CHECK(Contains(logs, "./app-1.0/bin/run"));
       }}};
  runs["compress a log"] = {
      {{{"source", http.Url("/logs/app.log")},
        {"upload", http.Url("/upload")},
        {"hook", http.Url("/hook")}},
       [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         CHECK(TaskNamed(j, "compress").output == "/data/app.log.gz");
         auto up = http.Find("POST", "/upload/" + j.id + ".log.gz");
         REQUIRE_MESSAGE(up, "no upload of the log");
         CHECK(gzip(up->body));
         bool announced = false;
         for (const auto& r : http.Requests()) {
           if (r.path == "/hook" && r.body == "file=/data/app.log.gz") {
             announced = Contains(r.headers, "Authorization: Bearer s3cr3t");
           }
         }
         CHECK(announced);
       }},
      {{{"source", http.Url("/logs/app.log")},
        {"upload", http.Url("/upload")},
        {"hook", http.Url("/hook")},
        {"compress", "no"}},
       [&](const JobView& j) {
         CHECK(j.state == "COMPLETED");
         CHECK(TaskNamed(j, "compress").state == "SKIPPED");
         CHECK(TaskNamed(j, "announce").state == "COMPLETED");
         bool announced = false;
         for (const auto& r : http.Requests()) {
           announced |= r.path == "/hook" && r.body == "file=none";
         }
         CHECK(announced);
       }}};

  // Images from Docker Hub cannot be pulled here (no network): every image
  // becomes the local busybox one. The test daemon has no bridge network,
  // so the examples' downloads use the host's, to reach the local server.
  const std::regex image(R"(image = "[^"]*")");
  const std::regex bridge(R"(network = "bridge")");
  std::vector<std::pair<std::string, const ExampleRun*>> submitted;
  std::set<std::string> names;
  int n = 0;
  for (std::string block : DocExamples()) {
    std::smatch m;
    REQUIRE(std::regex_search(block, m, std::regex(R"re(name = "([^"]*)")re")));
    const std::string name = m[1];
    CAPTURE(name);
    names.insert(name);
    auto it = runs.find(name);
    REQUIRE_MESSAGE(it != runs.end(),
                    "docs/JOBS.md has an example this test does not run");
    block = std::regex_replace(block, image,
                               "image = \"drover-test/busybox:latest\"");
    block = std::regex_replace(block, bridge, "network = \"host\"");
    const std::string file = JobFile(c, "example" + std::to_string(++n), block);
    for (const ExampleRun& run : it->second) {
      submitted.emplace_back(SubmitCli(c, file, run.inputs), &run);
    }
  }
  CHECK(names.size() == runs.size());
  // `image` takes expressions too: this one names the local busybox.
  const std::string imaged = SubmitCli(c, JobFile(c, "image", R"(
name = "image expression"
[inputs]
repo = "drover-test/busybox"
[[tasks]]
name = "t"
image = "{{ inputs.repo }}:{{ 'lat' .. 'est' }}"
run = "echo in a container"
)"));
  for (const auto& [id, run] : submitted) {
    JobView job = c.Wait(id, 60s);
    CAPTURE(job.name);
    if (job.state != "COMPLETED") {
      for (const TaskView& t : job.tasks) {
        MESSAGE(t.name << ": " << t.state << " " << t.error.value_or(""));
      }
      MESSAGE(Drover(c, {"logs", id}).out);
    }
    run->check(job);
  }
  JobView image_job = c.Wait(imaged, 60s);
  CHECK(image_job.state == "COMPLETED");
  CommandResult logs = Drover(c, {"logs", imaged});
  CHECK(Contains(logs.out, "in a container"));
  CHECK_MESSAGE(Contains(logs.err, "(image drover-test/busybox:latest)"),
                logs.err);
}

}  // namespace
}  // namespace drover::testing
