// drover_docker_overhead: what running a task in a container through drover
// costs over the bare Docker Engine API calls, measured in one run, one
// round at a time so all three see the same machine:
//
//   bare     DockerClient: create, start, wait, remove — no logs, no output
//            file, no init, no labels
//   runtime  DockerRuntime::Run of the same task (volumes none): the output
//            directory (bind-mounted), create, start, logs, wait, read the
//            output, remove
//   e2e      a one-task job submitted to a real droverd with one real
//            drover-worker (--runtime docker), timed from submit until
//            `status` says COMPLETED (polled every millisecond)
//
// Each runs `/bin/sh -c true` in IMAGE. Prints one figure a line, then the
// overheads (medians) of runtime and e2e over bare.
//
//   build/drover_docker_overhead [--n 20] [--image drover-test/busybox:latest]
//
// Needs a daemon on DOCKER_HOST (unix://) or /var/run/docker.sock with the
// image present (scripts/docker-env.sh start), and droverd and
// drover-worker in the build dir. Not a test: it asserts nothing.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "docker_client.h"
#include "docker_runtime.h"
#include "drover/client.h"
#include "drover/protocol.h"

extern char** environ;

namespace drover {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string SocketPath() {
  const char* host = std::getenv("DOCKER_HOST");
  if (host != nullptr && std::string(host).rfind("unix://", 0) == 0) {
    return std::string(host).substr(7);
  }
  return "/var/run/docker.sock";
}

// A child process, output to a log file, ended by its PID.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) !=
        0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Child() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(10ms);
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

class NullSink : public LogSink {
 public:
  void Write(char, std::string_view) override {}
};

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct Figures {
  std::vector<double> ms;
  double Median() const {
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  double Mean() const {
    return std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
  }
  double Min() const { return *std::min_element(ms.begin(), ms.end()); }
  double Max() const { return *std::max_element(ms.begin(), ms.end()); }
};

void Print(const char* name, const Figures& f) {
  std::printf(
      "%-8s n=%zu median=%.1f ms mean=%.1f ms min=%.1f ms max=%.1f ms\n", name,
      f.ms.size(), f.Median(), f.Mean(), f.Min(), f.Max());
}

// create, start, wait, remove: the least a container task can cost.
Status Bare(DockerClient& docker, const std::string& image) {
  ContainerConfig config;
  config.image = image;
  config.cmd = {"/bin/sh", "-c", "true"};
  config.entrypoint = std::vector<std::string>{};
  Result<std::string> id = docker.ContainerCreate(config);
  if (!id.ok()) return id.status();
  Status s = docker.ContainerStart(*id);
  if (s.ok()) {
    Result<int64_t> code = docker.ContainerWait(*id, [] { return false; });
    if (!code.ok()) s = code.status();
  }
  Status removed = docker.ContainerRemove(*id);
  return s.ok() ? removed : s;
}

int Main(int argc, char** argv) {
  int n = 20;
  std::string image = "drover-test/busybox:latest";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--n" && i + 1 < argc) {
      n = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--image" && i + 1 < argc) {
      image = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--n N] [--image IMAGE]\n", argv[0]);
      return 2;
    }
  }
  const std::string socket = SocketPath();
  DockerClient docker(socket);
  if (Status s = docker.Ping(); !s.ok()) {
    std::fprintf(stderr, "%s; start one with scripts/docker-env.sh start\n",
                 s.ToString().c_str());
    return 1;
  }
  Result<bool> present = docker.ImageExists(image);
  if (!present.ok() || !*present) {
    std::fprintf(stderr, "image %s is not present on the daemon\n",
                 image.c_str());
    return 1;
  }

  char tmpl[] = "/tmp/drover-overhead-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  const std::string api = "ipc://" + dir + "/api";
  const std::string tasks = "ipc://" + dir + "/tasks";
  const std::string heartbeat = "ipc://" + dir + "/heartbeat";
  const std::string build = DROVER_BUILD_DIR;
  {
    Child droverd(
        {build + "/droverd", "--data-dir", dir + "/data", "--api", api,
         "--tasks", tasks, "--heartbeat", heartbeat, "--log-level", "warn"},
        dir + "/droverd.log");
    Child worker({build + "/drover-worker", "--name", "overhead", "--tasks",
                  tasks, "--heartbeat", heartbeat, "--runtime", "docker",
                  "--docker-socket", socket, "--queue", "default:1",
                  "--work-dir", dir + "/work", "--log-level", "warn"},
                 dir + "/worker.log");
    if (!droverd.started() || !worker.started()) return 1;
    Client client(api, 5s);
    bool ready = false;
    for (int i = 0; i < 200 && !ready; ++i) {
      auto reply = client.Call<WorkersReply>(WorkersRequest{});
      if (reply.ok()) {
        for (const auto& w : reply->workers) ready |= w.state == "ready";
      }
      if (!ready) std::this_thread::sleep_for(50ms);
    }
    if (!ready) {
      std::fprintf(stderr, "the worker never became ready; logs in %s\n",
                   dir.c_str());
      return 1;
    }

    const std::string job =
        "name = \"overhead\"\n[[tasks]]\nname = \"t\"\n"
        "image = \"" +
        image + "\"\nrun = \"true\"\n";
    auto end_to_end = [&]() -> Result<Clock::duration> {
      const auto start = Clock::now();
      SubmitRequest submit;
      submit.source = job;
      submit.file_name = "overhead.toml";
      auto id = client.Call<SubmitReply>(submit);
      if (!id.ok()) return id.status();
      StatusRequest status;
      status.job_id = id->job_id;
      while (true) {
        auto view = client.Call<StatusReply>(status);
        if (!view.ok()) return view.status();
        const std::string& state = view->job.state;
        if (state == "COMPLETED") return Clock::now() - start;
        if (state == "FAILED" || state == "CANCELLED") {
          return Status::Internal("job " + id->job_id + " " + state + ": " +
                                  view->job.error.value_or(""));
        }
        std::this_thread::sleep_for(1ms);
      }
    };
    DockerRuntimeOptions options;
    options.socket_path = socket;
    options.work_dir = dir + "/runtime-work";  // the bind method, as a worker
    DockerRuntime runtime(options);
    TaskRun task;
    task.job_id = "overhead";
    task.task_name = "t";
    task.attempt = 1;
    task.worker = "overhead-runtime";
    task.image = image;
    task.run = "true";
    NullSink sink;

    Figures bare, direct, e2e;
    // Round 0 warms caches (image layers, the API version) and is not kept.
    for (int round = 0; round <= n; ++round) {
      auto t0 = Clock::now();
      if (Status s = Bare(docker, image); !s.ok()) {
        std::fprintf(stderr, "bare: %s\n", s.ToString().c_str());
        return 1;
      }
      auto t1 = Clock::now();
      RunOutcome out = runtime.Run(task, sink, std::stop_token{});
      auto t2 = Clock::now();
      if (!out.error.empty()) {
        std::fprintf(stderr, "runtime: %s\n", out.error.c_str());
        return 1;
      }
      auto took = end_to_end();
      if (!took.ok()) {
        std::fprintf(stderr, "e2e: %s\n", took.status().ToString().c_str());
        return 1;
      }
      if (round == 0) continue;
      bare.ms.push_back(Ms(t1 - t0));
      direct.ms.push_back(Ms(t2 - t1));
      e2e.ms.push_back(Ms(*took));
    }
    Print("bare", bare);
    Print("runtime", direct);
    Print("e2e", e2e);
    std::printf("overhead runtime-bare median=%.1f ms\n",
                direct.Median() - bare.Median());
    std::printf("overhead e2e-bare median=%.1f ms\n",
                e2e.Median() - bare.Median());
  }
  // Kept on the early returns above, for their logs.
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace drover

int main(int argc, char** argv) { return drover::Main(argc, argv); }
