// DockerRuntime and DockerClient against a real Docker daemon (never a
// fake): scripts/docker-env.sh provides one, the busybox test images and a
// local registry. With no daemon the tests fail loudly; they only report a
// skip when DROVER_ALLOW_NO_DOCKER=1 (and never when CI=true).
#include "docker_runtime.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "docker_client.h"
#include "docker_test_env.h"

namespace drover {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

using docker_test::Env;
using docker_test::kImage;
using docker_test::SocketPath;
constexpr const char* kEntrypointImage = "drover-test/entrypoint:latest";

// This test process's worker name: labels its containers and volumes, so
// leftover checks see only what these tests made.
const std::string& Worker() {
  static const std::string name = "docker-test-" + std::to_string(::getpid());
  return name;
}

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
  std::string notes() {
    std::lock_guard lock(mu_);
    return notes_;
  }

 private:
  std::mutex mu_;
  std::string out_, err_, notes_;
};

using docker_test::DockerAvailable;

// This test process's work dir, holding the bind method's output
// directories; removed at exit.
const std::string& WorkDir() {
  struct Dir {
    std::string path;
    Dir() {
      char tmpl[] = "/tmp/drover-docker-test-XXXXXX";
      REQUIRE(::mkdtemp(tmpl) != nullptr);
      path = tmpl;
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

// Where the runtime keeps `worker`'s output directories.
std::filesystem::path OutputRoot(const std::string& worker = Worker()) {
  return std::filesystem::path(WorkDir()) / "docker-output" / worker;
}

std::vector<std::string> Entries(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(e.path().filename().string());
  }
  return names;
}

DockerRuntimeOptions Options() {
  DockerRuntimeOptions o;
  o.socket_path = SocketPath();
  o.stop_grace = milliseconds(1000);
  o.work_dir = WorkDir();
  return o;
}

TaskRun Task(std::string name, std::string run) {
  static std::atomic<int> counter{0};
  TaskRun t;
  t.job_id =
      "job-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  t.task_name = std::move(name);
  t.worker = Worker();
  t.image = kImage;
  t.run = std::move(run);
  return t;
}

// No container, volume or output directory of this test process may
// outlive a Run.
void ExpectNoLeftovers() {
  for (const std::string& d : Entries(OutputRoot())) {
    FAIL_CHECK("left: output directory " << d);
  }
  DockerClient client(SocketPath());
  std::string label = "drover.worker=" + Worker();
  Result<std::vector<DockerObject>> containers = client.ContainerList(label);
  REQUIRE(containers.ok());
  for (const DockerObject& c : *containers) FAIL_CHECK("left: " << c.name);
  CHECK(containers->empty());
  Result<std::vector<DockerObject>> volumes = client.VolumeList(label);
  REQUIRE(volumes.ok());
  for (const DockerObject& v : *volumes) FAIL_CHECK("left: " << v.name);
  CHECK(volumes->empty());
}

std::string RegistryAddress() {
  std::string addr = Env("DROVER_TEST_REGISTRY");
  if (!addr.empty()) return addr;
  std::string state = Env("DROVER_DOCKER_STATE");
  std::ifstream in((state.empty() ? "/tmp/drover-docker" : state) +
                   "/registry.addr");
  std::getline(in, addr);
  return addr;
}

// ---------------------------------------------------------------------------
// Pure pieces: no daemon needed.

std::string Frame(unsigned char type, std::string_view payload) {
  std::string f(8, '\0');
  f[0] = static_cast<char>(type);
  uint32_t n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) f[4 + i] = static_cast<char>(n >> (24 - 8 * i));
  return f + std::string(payload);
}

TEST_CASE("DockerClient.DemuxesFramesSplitAcrossChunks") {
  std::string big(70000, 'x');
  std::string stream = Frame(1, "hello ") + Frame(2, "oops\n") +
                       Frame(1, "world\n") + Frame(1, "") + Frame(2, big);
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{7}, size_t{8}, size_t{9},
                       size_t{4096}, stream.size()}) {
    std::string out, err;
    StreamDemuxer demux([&](std::string_view d) { out.append(d); },
                        [&](std::string_view d) { err.append(d); });
    for (size_t i = 0; i < stream.size(); i += chunk) {
      demux.Feed(std::string_view(stream).substr(i, chunk));
    }
    CHECK(out == "hello world\n");
    CHECK(err == "oops\n" + big);
    CHECK(demux.AtFrameBoundary());
  }
}

TEST_CASE("DockerClient.ReadsTheFileOutOfATar") {
  std::string contents(1500, 'a');
  std::string tar = MakeTarWithFile("drover", 0777, "output", 0644, contents);
  for (size_t chunk : {size_t{1}, size_t{100}, size_t{512}, tar.size()}) {
    TarFileReader reader(1 << 20);
    for (size_t i = 0; i < tar.size(); i += chunk) {
      if (!reader.Feed(std::string_view(tar).substr(i, chunk))) break;
    }
    CHECK(reader.found());
    CHECK(reader.complete());
    CHECK(reader.contents() == contents);
  }
  TarFileReader capped(1000);
  capped.Feed(tar);
  CHECK(capped.truncated());
  CHECK(capped.contents().size() == 1000);
  TarFileReader garbage(10);
  garbage.Feed(std::string(512, 'g'));
  CHECK(!garbage.error().empty());
}

TEST_CASE("DockerClient.SplitsImageReferences") {
  using P = std::pair<std::string, std::string>;
  CHECK(SplitImageReference("busybox") == P{"busybox", "latest"});
  CHECK(SplitImageReference("busybox:1.36") == P{"busybox", "1.36"});
  CHECK(SplitImageReference("127.0.0.1:5000/a/b") ==
        P{"127.0.0.1:5000/a/b", "latest"});
  CHECK(SplitImageReference("127.0.0.1:5000/a/b:t") ==
        P{"127.0.0.1:5000/a/b", "t"});
  CHECK(SplitImageReference("a/b@sha256:00") == P{"a/b", "sha256:00"});
}

// A stand-in daemon on a unix socket for what a real one will not do on
// demand (an error inside a 200 pull stream, an older API version). Each
// request gets the canned answer of the first route its path contains,
// written a few bytes at a time so the client has to reassemble it.
class FakeDaemon {
 public:
  struct Route {
    std::string path_part;
    int status;
    std::string body;
  };
  explicit FakeDaemon(std::vector<Route> routes)
      : routes_(std::move(routes)),
        path_("/tmp/drover-fake-docker-" + std::to_string(::getpid()) +
              ".sock") {
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(fd_, 8) == 0);
    thread_ = std::jthread([this](std::stop_token stop) { Serve(stop); });
  }
  ~FakeDaemon() {
    thread_.request_stop();
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // The head (request line and headers) of every request so far.
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Serve(std::stop_token stop) {
    while (!stop.stop_requested()) {
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) return;
      std::string head;
      char c;
      while (head.find("\r\n\r\n") == std::string::npos &&
             ::read(conn, &c, 1) == 1) {
        head += c;
      }
      {
        std::lock_guard lock(mu_);
        requests_.push_back(head);
      }
      std::string target = head.substr(0, head.find("\r\n"));
      Route answer{"", 404, R"({"message":"fake: no route"})"};
      for (const Route& r : routes_) {
        if (target.find(r.path_part) != std::string::npos) {
          answer = r;
          break;
        }
      }
      std::string response = "HTTP/1.1 " + std::to_string(answer.status) +
                             " X\r\nConnection: close\r\n\r\n" + answer.body;
      for (size_t i = 0; i < response.size(); i += 5) {
        size_t n = std::min<size_t>(5, response.size() - i);
        if (::write(conn, response.data() + i, n) < 0) break;
      }
      ::close(conn);
    }
  }

  std::vector<Route> routes_;
  std::string path_;
  int fd_ = -1;
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::jthread thread_;
};

TEST_CASE("DockerClient.AgainstAFakeDaemon") {
  std::string frames = Frame(1, "out\n") + Frame(2, "err\n");
  FakeDaemon fake({
      {"/version", 200, R"({"ApiVersion":"1.40","MinAPIVersion":"1.12"})"},
      {"/images/create", 200,
       "{\"status\":\"Pulling from x/y\"}\n"
       "{\"errorDetail\":{\"message\":\"boom: layer broke\"},"
       "\"error\":\"boom: layer broke\"}\n"},
      {"/containers/c1/logs", 200, frames},
      {"/containers/c1/wait", 200, R"({"StatusCode":7,"Error":null})"},
      {"/containers/gone/json", 404,
       R"({"message":"No such container: gone"})"},
  });
  DockerClient client(fake.path());
  Result<std::string> version = client.ApiVersion();
  REQUIRE(version.ok());
  CHECK(*version == "1.40");  // the daemon's, being older than ours

  // A pull error inside an HTTP 200 stream is still an error.
  std::vector<std::string> lines;
  RegistryCredentials creds{"u", "p", "registry.example:5000"};
  Status pull = client.ImagePull(
      "x/y:1", creds, [&](std::string_view l) { lines.emplace_back(l); },
      [] { return false; });
  CHECK(pull.code() == Code::kIOError);
  CHECK(pull.message() == "boom: layer broke");
  CHECK(lines.size() == 2);
  std::string head = fake.requests().back();
  CHECK(head.find("POST /v1.40/images/create?fromImage=x%2Fy&tag=1 ") == 0);
  // Credentials go only to the registry they are for.
  CHECK(head.find("X-Registry-Auth") == std::string::npos);
  (void)client.ImagePull("registry.example:5000/x/y", creds, {},
                         [] { return false; });
  CHECK(fake.requests().back().find("X-Registry-Auth: ") != std::string::npos);

  std::string out, err;
  CHECK(client
            .ContainerLogs(
                "c1", [&](std::string_view d) { out.append(d); },
                [&](std::string_view d) { err.append(d); },
                [] { return false; })
            .ok());
  CHECK(out == "out\n");
  CHECK(err == "err\n");
  Result<int64_t> code = client.ContainerWait("c1", [] { return false; });
  REQUIRE(code.ok());
  CHECK(*code == 7);
  Result<ContainerState> gone = client.ContainerInspect("gone");
  CHECK(gone.status().code() == Code::kNotFound);
  CHECK(gone.status().message() == "No such container: gone");
}

TEST_CASE("DockerRuntime.UnreachableDaemonIsAnInfrastructureError") {
  DockerRuntime missing("/tmp/drover-no-such-dir/docker.sock");
  CaptureSink logs;
  RunOutcome r = missing.Run(Task("t", "true"), logs, {});
  CHECK(r.infrastructure);
  CHECK(r.exit_code == -1);
  CHECK(r.error.rfind("Docker daemon not reachable at "
                      "/tmp/drover-no-such-dir/docker.sock",
                      0) == 0);
  CHECK(!missing.Healthy());
  CHECK(!missing.CleanupLeftovers("w").ok());

  // A socket nobody listens on: connection refused.
  std::string path = "/tmp/drover-refused-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  DockerRuntime refused(path);
  RunOutcome r2 = refused.Run(Task("t", "true"), logs, {});
  CHECK(r2.infrastructure);
  CHECK(r2.error.find("Docker daemon not reachable at " + path) == 0);
  CHECK(!refused.Healthy());
  ::close(fd);
  ::unlink(path.c_str());
}

// ---------------------------------------------------------------------------
// Against the daemon.

TEST_CASE("DockerClient.NegotiatesTheApiVersion") {
  if (!DockerAvailable()) return;
  DockerClient client(SocketPath());
  Result<std::string> v = client.ApiVersion();
  REQUIRE(v.ok());
  CHECK(!v->empty());
  CHECK(client.ContainerInspect("drover-no-such-container").status().code() ==
        Code::kNotFound);
  CHECK(client.ContainerInspect("drover-no-such-container")
            .status()
            .message()
            .find("No such container") != std::string::npos);
}

TEST_CASE("DockerRuntime.RunCapturesStdoutAndStderrSeparately") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CHECK(rt.Healthy());
  CaptureSink logs;
  RunOutcome r = rt.Run(
      Task("t", "echo to-out; echo to-err >&2; echo more-out"), logs, {});
  CHECK(r.ok());
  CHECK(r.error == "");
  CHECK(r.exit_code == 0);
  CHECK(logs.out() == "to-out\nmore-out\n");
  CHECK(logs.err() == "to-err\n");
  CHECK(r.output == "");
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.CmdAndEntrypoint") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  {
    CaptureSink logs;
    TaskRun t = Task("argv", "");
    t.cmd = {"/bin/echo", "a  b", "$HOME"};
    RunOutcome r = rt.Run(t, logs, {});
    CHECK(r.ok());
    CHECK(logs.out() == "a  b $HOME\n");  // no shell in between
  }
  {
    // `run` replaces the image's entrypoint.
    CaptureSink logs;
    TaskRun t = Task("script", "echo from-script");
    t.image = kEntrypointImage;
    RunOutcome r = rt.Run(t, logs, {});
    CHECK(r.ok());
    CHECK(logs.out() == "from-script\n");
  }
  {
    // `cmd` alone keeps it; `entrypoint` replaces it.
    CaptureSink logs;
    TaskRun t = Task("keep", "");
    t.image = kEntrypointImage;
    t.cmd = {"x"};
    CHECK(rt.Run(t, logs, {}).ok());
    CHECK(logs.out() == "image-entrypoint x\n");
    CaptureSink logs2;
    t.entrypoint = {"/bin/echo", "mine"};
    CHECK(rt.Run(t, logs2, {}).ok());
    CHECK(logs2.out() == "mine x\n");
  }
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.NonZeroExitFails") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  RunOutcome r =
      rt.Run(Task("t", "echo partial > $DROVER_OUTPUT; exit 3"), logs, {});
  CHECK(!r.ok());
  CHECK(r.exit_code == 3);
  CHECK(r.error == "exited with code 3");
  CHECK(!r.infrastructure);
  CHECK(r.output == "partial\n");

  // A missing command is the daemon's (OCI runtime's) message.
  TaskRun t = Task("nocmd", "");
  t.cmd = {"/no/such/binary"};
  RunOutcome r2 = rt.Run(t, logs, {});
  CHECK(!r2.ok());
  CHECK(!r2.infrastructure);
  // docker-init reports it (exit 127); without init the daemon would.
  CHECK((r2.error.find("no/such/binary") != std::string::npos ||
         logs.err().find("no/such/binary") != std::string::npos));
  MESSAGE("missing command: " << r2.error << " / " << logs.err());
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.EnvAndOutput") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  TaskRun t = Task("t",
                   "printf '%s|%s|%s' \"$GREETING\" \"$DROVER_OUTPUT\" "
                   "\"$SPACED\" > \"$DROVER_OUTPUT\"");
  t.env = {{"GREETING", "hello"}, {"SPACED", "a b=c"}};
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(r.output == "hello|/drover/output|a b=c");

  // The output is capped at kMaxOutputBytes.
  RunOutcome big = rt.Run(
      Task("big", "head -c 100000 /dev/zero | tr '\\0' a > $DROVER_OUTPUT"),
      logs, {});
  CHECK(big.ok());
  CHECK(big.output.size() == kMaxOutputBytes);
  CHECK(big.output.find_first_not_of('a') == std::string::npos);
  CHECK(logs.notes().find("output truncated") != std::string::npos);
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.WorkdirAndUser") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  TaskRun t = Task("t", "pwd; id -u; id -g; echo mine > $DROVER_OUTPUT");
  t.workdir = "/tmp/work";
  t.user = "65534:65534";
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(logs.out() == "/tmp/work\n65534\n65534\n");
  CHECK(r.output == "mine\n");  // a non-root user can write the output
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.VolumesAreSharedByPreTaskAndPost") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  TaskRun t = Task("t", "cat /data/f > $DROVER_OUTPUT; echo main >> /data/f");
  t.volumes = {"/data"};
  TaskRun pre;
  pre.run = "echo from-pre > /data/f";
  TaskRun post;
  post.run = "cat /data/f";
  t.pre = {pre};
  t.post = {post};
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(r.output == "from-pre\n");
  CHECK(logs.out() == "from-pre\nmain\n");  // post saw both writes
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.PreFailureSkipsTaskAndPost") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  TaskRun t = Task("t", "echo main-ran");
  t.volumes = {"/data"};
  TaskRun ok_pre, bad_pre, post;
  ok_pre.run = "echo pre1-ran";
  bad_pre.run = "exit 4";
  post.run = "echo post-ran";
  t.pre = {ok_pre, bad_pre};
  t.post = {post};
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(!r.ok());
  CHECK(r.exit_code == -1);
  CHECK(r.error == "pre task 2 of 2: exited with code 4");
  CHECK(logs.out() == "pre1-ran\n");

  // A failed task skips its post tasks; a failed post task fails the task.
  CaptureSink logs2;
  TaskRun m = Task("m", "exit 5");
  m.post = {post};
  RunOutcome r2 = rt.Run(m, logs2, {});
  CHECK(r2.error == "exited with code 5");
  CHECK(logs2.out() == "");
  CaptureSink logs3;
  TaskRun p = Task("p", "echo main-ok");
  TaskRun bad_post;
  bad_post.run = "exit 6";
  p.post = {bad_post};
  RunOutcome r3 = rt.Run(p, logs3, {});
  CHECK(!r3.ok());
  CHECK(r3.exit_code == 0);
  CHECK(r3.error == "post task 1 of 1: exited with code 6");
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.TimeoutStopsTheContainer") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  // `exec sleep`: ignores SIGTERM's default only if PID 1; under init it
  // dies at once. Either way it must be gone well before 30 s.
  TaskRun t = Task("t", "echo started; exec sleep 30");
  t.timeout = milliseconds(1500);
  auto start = Clock::now();
  RunOutcome r = rt.Run(t, logs, {});
  auto took = Clock::now() - start;
  CHECK(r.timed_out);
  CHECK(!r.cancelled);
  CHECK(r.error == "timed out after 1.5s");
  CHECK(took < seconds(12));
  CHECK(logs.out() == "started\n");

  // SIGTERM first: a task that handles it ends cleanly within the grace.
  DockerRuntimeOptions o = Options();
  o.stop_grace = seconds(20);
  DockerRuntime patient(o);
  CaptureSink logs2;
  TaskRun g = Task("g", "trap 'echo got-term; exit 0' TERM; sleep 30 & wait");
  g.timeout = seconds(1);
  start = Clock::now();
  RunOutcome r2 = patient.Run(g, logs2, {});
  CHECK(r2.timed_out);
  CHECK(r2.error == "timed out after 1s");
  CHECK(logs2.out() == "got-term\n");
  CHECK(Clock::now() - start < seconds(12));

  // A task that ignores SIGTERM gets SIGKILL after the grace.
  CaptureSink logs3;
  TaskRun k = Task("k", "trap '' TERM; sleep 30 & wait; sleep 30");
  k.timeout = seconds(1);
  start = Clock::now();
  RunOutcome r3 = rt.Run(k, logs3, {});
  CHECK(r3.timed_out);
  CHECK(r3.exit_code == 137);
  CHECK(Clock::now() - start < seconds(12));
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.StopTokenCancels") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  std::stop_source stop;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(seconds(2));
    stop.request_stop();
  });
  TaskRun t = Task("t", "echo started; sleep 30");
  t.volumes = {"/data"};
  auto start = Clock::now();
  RunOutcome r = rt.Run(t, logs, stop.get_token());
  CHECK(r.cancelled);
  CHECK(!r.timed_out);
  CHECK(r.error == "cancelled");
  CHECK(Clock::now() - start < seconds(12));
  CHECK(logs.out() == "started\n");

  // Stopped during a pre task: the task and its post tasks never run.
  std::stop_source stop_pre;
  std::jthread pre_stopper([&] {
    std::this_thread::sleep_for(seconds(2));
    stop_pre.request_stop();
  });
  CaptureSink logs_pre;
  TaskRun p = Task("p", "echo main-ran");
  TaskRun pre, post;
  pre.run = "echo pre-started; sleep 30";
  post.run = "echo post-ran";
  p.pre = {pre};
  p.post = {post};
  RunOutcome rp = rt.Run(p, logs_pre, stop_pre.get_token());
  CHECK(rp.cancelled);
  CHECK(rp.exit_code == -1);
  CHECK(rp.error == "pre task 1 of 1: cancelled");
  CHECK(logs_pre.out() == "pre-started\n");

  // Stopped before it starts: nothing runs.
  CaptureSink logs2;
  RunOutcome r2 = rt.Run(Task("t2", "echo never"), logs2, stop.get_token());
  CHECK(r2.cancelled);
  CHECK(logs2.out() == "");
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.MemoryLimitOutOfMemory") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  // tail keeps the whole newline-free input in memory.
  TaskRun t = Task("t", "head -c 100m /dev/zero | tail");
  t.memory_bytes = 8 << 20;
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(!r.ok());
  CHECK(r.error ==
        "out of memory: container killed at its limit of 8388608 bytes");
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.PullsFromARegistry") {
  if (!DockerAvailable()) return;
  std::string registry = RegistryAddress();
  if (registry.empty()) {
    FAIL(
        "no local registry: run scripts/docker-env.sh start "
        "(it writes /tmp/drover-docker/registry.addr)");
  }
  DockerRuntime rt(Options());
  std::string image = registry + "/drover-test/busybox:pushed";
  (void)rt.client().ImageRemove(image);  // so the run has to pull
  CaptureSink logs;
  TaskRun t = Task("t", "echo pulled-ok");
  t.image = image;
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(logs.out() == "pulled-ok\n");
  CHECK(logs.notes().find("pulling image " + image) != std::string::npos);
  (void)rt.client().ImageRemove(image);

  CaptureSink logs2;
  TaskRun m = Task("m", "true");
  m.image = registry + "/drover-test/missing:nope";
  RunOutcome r2 = rt.Run(m, logs2, {});
  CHECK(!r2.ok());
  CHECK(!r2.infrastructure);
  CHECK(r2.error.find("pulling image " + m.image + " failed: ") == 0);
  CHECK(r2.error.find("manifest unknown") != std::string::npos);
  MESSAGE("missing image: " << r2.error);
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.NetworkIsNoneByDefault") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  RunOutcome r = rt.Run(
      Task("t", "grep : /proc/net/dev | cut -d: -f1 | tr -d ' '"), logs, {});
  CHECK(r.ok());
  CHECK(logs.out() == "lo\n");
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.ConcurrentRuns") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  constexpr int kRuns = 3;
  CaptureSink logs[kRuns];
  RunOutcome results[kRuns];
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kRuns; ++i) {
      threads.emplace_back([&, i] {
        TaskRun t = Task("t", "echo run-$N > $DROVER_OUTPUT; sleep 1");
        t.env = {{"N", std::to_string(i)}};
        t.volumes = {"/data"};
        results[i] = rt.Run(t, logs[i], {});
      });
    }
  }
  for (int i = 0; i < kRuns; ++i) {
    CHECK(results[i].ok());
    CHECK(results[i].output == "run-" + std::to_string(i) + "\n");
  }
  ExpectNoLeftovers();
}

// A sink that calls `on_stdout` with everything the task prints, as it
// arrives (on the runtime's log thread).
class WatchingSink : public CaptureSink {
 public:
  explicit WatchingSink(std::function<void(std::string_view)> on_stdout)
      : on_stdout_(std::move(on_stdout)) {}
  void Write(char stream, std::string_view data) override {
    CaptureSink::Write(stream, data);
    if (stream == 'o') on_stdout_(data);
  }

 private:
  std::function<void(std::string_view)> on_stdout_;
};

TEST_CASE("DockerRuntime.OutputThroughABindMountUnderANonRootUser") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CHECK(rt.output_method() == DockerOutputMethod::kBind);
  // While the task runs, its /drover is a directory of the work dir.
  std::mutex mu;
  std::vector<std::string> seen;
  std::string host_contents;
  WatchingSink logs([&](std::string_view data) {
    if (data.find("written") == std::string_view::npos) return;
    std::lock_guard lock(mu);
    seen = Entries(OutputRoot());
    if (seen.size() == 1) {
      std::ifstream in(OutputRoot() / seen[0] / "output");
      std::getline(in, host_contents);
    }
  });
  // Only the file is mounted: /drover is the container's own, and the
  // task can write nothing else of the host's.
  TaskRun t = Task("t",
                   "grep -c ' /drover/output ' /proc/mounts; "
                   "ls -ld /drover | cut -c1-10; "
                   "ls -l $DROVER_OUTPUT | cut -c1-10; id -u; "
                   "touch /drover/other 2>/dev/null || echo no-other; "
                   "echo from-nobody > $DROVER_OUTPUT; echo written; sleep 1");
  t.user = "65534:65534";
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(logs.out() ==
        "1\ndrwxr-xr-x\n-rw-rw-rw-\n65534\nno-other\nwritten\n");
  CHECK(r.output == "from-nobody\n");
  {
    std::lock_guard lock(mu);
    CHECK(seen.size() == 1);
    CHECK(host_contents == "from-nobody");
  }
  CHECK(rt.output_method() == DockerOutputMethod::kBind);
  ExpectNoLeftovers();
}

// Followed on the host, a link would hand over the host's file, and opening
// a FIFO for reading would wait for a writer: the task, even as root,
// cannot put either in the place of its output file, which is a mount.
TEST_CASE("DockerRuntime.BindOutputCannotBeReplacedByALinkOrAFifo") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  RunOutcome r = rt.Run(
      Task("link",
           "rm $DROVER_OUTPUT || echo kept; "
           "ln -sf /etc/hostname $DROVER_OUTPUT || echo kept; "
           "mv /etc/hostname $DROVER_OUTPUT || echo kept; "
           "mkfifo /tmp/f && mv /tmp/f $DROVER_OUTPUT || echo kept"),
      logs, {});
  CHECK(r.ok());
  CHECK(r.output == "");
  CHECK(logs.out() == "kept\nkept\nkept\nkept\n");
  CHECK(logs.notes().find("could not read the output") == std::string::npos);
  ExpectNoLeftovers();
}

// A task may not fill the worker's disk through its output file: past
// kMaxOutputFileBytes it is emptied and the container stopped.
TEST_CASE("DockerRuntime.OutputFileIsBoundedOnTheHost") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  CaptureSink logs;
  TaskRun t = Task("fill",
                   "while true; do cat /bin/busybox >> $DROVER_OUTPUT; done");
  t.user = "65534:65534";
  const auto start = std::chrono::steady_clock::now();
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
  CHECK(!r.ok());
  CHECK_MESSAGE(r.error.find("its output file grew past 1048576 bytes") !=
                    std::string::npos,
                r.error);
  CHECK(r.output.size() <= kMaxOutputBytes);
  ExpectNoLeftovers();
}

// The daemon's own view of a running container of this test's job:
// GET /containers/{id}/json, through curl on the daemon's socket.
nlohmann::json InspectRunning(const std::string& job_id) {
  auto curl = [](const std::string& path) {
    const std::string cmd = "curl -s --unix-socket " + SocketPath() +
                            " 'http://docker" + path + "'";
    std::string out;
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
      ::pclose(f);
    }
    return nlohmann::json::parse(out, nullptr, false);
  };
  nlohmann::json list = curl(
      "/containers/json?filters=%7B%22label%22%3A%5B%22drover.job%3D" +
      job_id + "%22%5D%7D");
  REQUIRE(list.is_array());
  REQUIRE(list.size() == 1);
  return curl("/containers/" + list[0]["Id"].get<std::string>() + "/json");
}

// What the worker's policy gives every container, seen by the daemon and
// from inside: capabilities (Docker's defaults without NET_RAW, plus the
// task's cap_add), no-new-privileges, limits, a bounded log, no root when
// root is not allowed.
TEST_CASE("DockerRuntime.ContainersRunUnderTheWorkersPolicy") {
  if (!DockerAvailable()) return;
  DockerRuntimeOptions o = Options();
  o.policy.default_limits = {0.5, 256 << 20, 64};
  o.policy.max_log_bytes = 1 << 20;
  DockerRuntime rt(o);
  nlohmann::json seen;
  TaskRun t = Task("caps",
                   "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; id -u; "
                   "ping -c 1 127.0.0.1 >/dev/null 2>&1 || echo no-raw-sockets; "
                   "echo inspect-now; sleep 1");
  t.cap_add = {"NET_ADMIN"};
  WatchingSink logs([&](std::string_view data) {
    if (data.find("inspect-now") != std::string_view::npos) {
      seen = InspectRunning(t.job_id);
    }
  });
  RunOutcome r = rt.Run(t, logs, {});
  CHECK_MESSAGE(r.ok(), r.error);
  // Docker's default set is 00000000a80425fb; without NET_RAW (bit 13),
  // with NET_ADMIN (bit 12).
  CHECK(logs.out() ==
        "CapEff:\t00000000a80415fb\nNoNewPrivs:\t1\n0\nno-raw-sockets\n"
        "inspect-now\n");
  REQUIRE(seen.is_object());
  const nlohmann::json& host = seen["HostConfig"];
  CHECK(host["CapDrop"] == nlohmann::json::array({"ALL"}));
  CHECK(host["CapAdd"].size() == 14);
  CHECK(host["Privileged"] == false);
  CHECK(host["SecurityOpt"] == nlohmann::json::array({"no-new-privileges"}));
  CHECK(host["Memory"] == 256 << 20);
  CHECK(host["NanoCpus"] == 500000000);
  CHECK(host["PidsLimit"] == 64);
  CHECK(host["LogConfig"]["Type"] == "json-file");
  CHECK(host["LogConfig"]["Config"]["max-size"] ==
        std::to_string((2 << 20) + (1 << 20)));
  // No host path but its output file.
  REQUIRE(host["Mounts"].size() == 1);
  CHECK(host["Mounts"][0]["Type"] == "bind");
  CHECK(host["Mounts"][0]["Target"] == "/drover/output");
  CHECK(host["Binds"].is_null());
  CHECK(host["Devices"].empty());

  // Without root: a task that names none (or root) runs as nobody.
  o.policy.allow_root = false;
  DockerRuntime no_root(o);
  for (const char* user : {"", "root", "0:0"}) {
    CAPTURE(user);
    CaptureSink l;
    TaskRun u = Task("who", "id -u; id -g");
    u.user = user;
    RunOutcome ru = no_root.Run(u, l, {});
    CHECK(ru.ok());
    CHECK(l.out() == "65534\n65534\n");
    CHECK(l.notes().find("does not allow root (allow_root)") !=
          std::string::npos);
  }
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.ArchiveOutputMethod") {
  if (!DockerAvailable()) return;
  DockerRuntimeOptions o = Options();
  o.output = DockerOutputMethod::kArchive;
  DockerRuntime rt(o);
  CHECK(rt.output_method() == DockerOutputMethod::kArchive);
  CaptureSink logs;
  TaskRun t = Task("t",
                   "grep -c ' /drover ' /proc/mounts; "
                   "ls -ld /drover | cut -c1-10; id -u; "
                   "echo from-nobody > $DROVER_OUTPUT");
  t.user = "65534:65534";
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(logs.out() == "0\ndrwxrwxrwt\n65534\n");  // not a mount
  CHECK(r.output == "from-nobody\n");

  RunOutcome failed =
      rt.Run(Task("f", "echo partial > $DROVER_OUTPUT; exit 3"), logs, {});
  CHECK(failed.error == "exited with code 3");
  CHECK(failed.output == "partial\n");

  CaptureSink logs2;
  RunOutcome big = rt.Run(
      Task("big", "head -c 100000 /dev/zero | tr '\\0' a > $DROVER_OUTPUT"),
      logs2, {});
  CHECK(big.ok());
  CHECK(big.output.size() == kMaxOutputBytes);
  CHECK(logs2.notes().find("output truncated") != std::string::npos);
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.FallsBackToArchiveWhenTheDaemonCannotMount") {
  if (!DockerAvailable()) return;
  DockerRuntimeOptions o = Options();
  // As if the daemon ran elsewhere: the path it is given does not exist.
  o.daemon_work_dir = "/drover-no-such-dir-" + std::to_string(::getpid());
  std::mutex mu;
  std::vector<std::string> warnings;
  o.warn = [&](const std::string& m) {
    std::lock_guard lock(mu);
    warnings.push_back(m);
  };
  DockerRuntime rt(o);
  CHECK(rt.output_method() == DockerOutputMethod::kBind);
  CaptureSink logs;
  TaskRun t = Task("t", "id -u; echo fell-back > $DROVER_OUTPUT");
  t.user = "65534:65534";
  RunOutcome r = rt.Run(t, logs, {});
  CHECK(r.ok());
  CHECK(r.error == "");
  CHECK(logs.out() == "65534\n");
  CHECK(r.output == "fell-back\n");
  CHECK(rt.output_method() == DockerOutputMethod::kArchive);
  CHECK(logs.notes().find("using the archive API") != std::string::npos);
  {
    std::lock_guard lock(mu);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find(o.daemon_work_dir) != std::string::npos);
    CHECK(warnings[0].find("archive API from now on") != std::string::npos);
  }
  // For good: the next attempt goes straight to the archive API.
  CaptureSink logs2;
  RunOutcome r2 = rt.Run(Task("t2", "echo again > $DROVER_OUTPUT"), logs2, {});
  CHECK(r2.ok());
  CHECK(r2.output == "again\n");
  CHECK(logs2.notes().find("archive API") == std::string::npos);
  {
    std::lock_guard lock(mu);
    CHECK(warnings.size() == 1);
  }
  ExpectNoLeftovers();
}

TEST_CASE("DockerRuntime.CleanupLeftoversRemovesAndReports") {
  if (!DockerAvailable()) return;
  DockerRuntime rt(Options());
  std::string worker = Worker() + "-dead";
  std::map<std::string, std::string> labels = {{"drover.job", "left-job"},
                                               {"drover.task", "left-task"},
                                               {"drover.attempt", "3"},
                                               {"drover.worker", worker}};
  std::string volume = "drover-leftover-" + std::to_string(::getpid());
  REQUIRE(rt.client().VolumeCreate(volume, labels).ok());
  ContainerConfig c;
  c.image = kImage;
  c.cmd = {"sleep", "60"};
  c.labels = labels;
  c.mounts = {{volume, "/data"}};
  // Output directories: one under this work dir whose container is gone,
  // one of an earlier run with another work dir that a container names,
  // and one a label names that is no output directory: it stays.
  namespace fs = std::filesystem;
  const fs::path stale = OutputRoot(worker) / "drover-stale";
  const fs::path earlier =
      fs::path(WorkDir()) / "earlier" / "docker-output" / worker / "drover-e";
  const fs::path not_ours = fs::path(WorkDir()) / "not-ours" / "drover-x";
  for (const fs::path& d : {stale, earlier, not_ours}) {
    fs::create_directories(d);
    std::ofstream(d / "output") << "x";
  }
  c.labels["drover.output-dir"] = earlier.string();
  Result<std::string> id = rt.client().ContainerCreate(c);
  REQUIRE(id.ok());
  REQUIRE(rt.client().ContainerStart(*id).ok());
  ContainerConfig c2 = c;
  c2.mounts.clear();
  c2.labels["drover.output-dir"] = not_ours.string();
  REQUIRE(rt.client().ContainerCreate(c2).ok());

  Result<std::vector<LeftoverAttempt>> left = rt.CleanupLeftovers(worker);
  REQUIRE(left.ok());
  REQUIRE(left->size() == 1);
  CHECK((*left)[0] == LeftoverAttempt{"left-job", "left-task", 3});
  std::string label = "drover.worker=" + worker;
  CHECK(rt.client().ContainerList(label)->empty());
  CHECK(rt.client().VolumeList(label)->empty());
  CHECK(!fs::exists(stale));
  CHECK(!fs::exists(OutputRoot(worker)));
  CHECK(!fs::exists(earlier));
  CHECK(fs::exists(not_ours / "output"));
  Result<std::vector<LeftoverAttempt>> again = rt.CleanupLeftovers(worker);
  REQUIRE(again.ok());
  CHECK(again->empty());
  ExpectNoLeftovers();
}

}  // namespace
}  // namespace drover
