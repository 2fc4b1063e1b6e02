// drover-worker: runs tasks for a drover scheduler. See the spec and
// docs/DEPLOY.md.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>
#include <tuple>

#include "docker_runtime.h"
#include "drover/cli.h"
#include "drover/config.h"
#include "drover/job_spec.h"
#include "drover/policy.h"
#include "drover/service_notifier.h"
#include "shell_runtime.h"
#include "worker.h"

namespace {

drover::Worker* g_worker = nullptr;

void OnSignal(int) {
  if (g_worker != nullptr) g_worker->RequestStop();
}

// --queue NAME:SLOTS, SLOTS a positive integer. Parsed again in main().
CLI::Validator QueueValidator() {
  return CLI::Validator(
      [](std::string& q) -> std::string {
        const size_t colon = q.rfind(':');
        if (colon == std::string::npos || colon == 0) {
          return "'" + q + "' must be NAME:SLOTS, e.g. default:4";
        }
        const std::string slots = q.substr(colon + 1);
        if (slots.empty() || slots.size() > 6 ||
            slots.find_first_not_of("0123456789") != std::string::npos ||
            std::stoi(slots) < 1) {
          return "'" + q + "': SLOTS must be a positive integer";
        }
        return "";
      },
      "NAME:SLOTS");
}

// Whether a process of this worker's user, without its supplementary
// groups (as shell tasks run), may connect to the socket at `path`.
bool TasksReachSocket(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return geteuid() == 0;
  if (geteuid() == 0 || st.st_uid == geteuid()) return true;
  if (st.st_gid == getegid() && (st.st_mode & 060) == 060) return true;
  return (st.st_mode & 06) == 06;
}

std::string DefaultName() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + "-" + std::to_string(getpid());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace drover;  // NOLINT: main only
  CLI::App app{"drover-worker: runs tasks for a drover scheduler"};
  app.set_version_flag("--version",
                       std::string("drover-worker ") + DROVER_VERSION);
  WorkerOptions o;
  std::string config, log_level = "info", heartbeat_interval = "1s",
                      shutdown_grace = "30s";
  std::string docker_socket = "/var/run/docker.sock", work_dir;
  std::string docker_output = "bind", docker_daemon_work_dir;
  std::vector<std::string> queues, runtimes;
  int64_t prefetch = -1;
  app.add_option("--config", config, "TOML config file");
  app.add_option("--tasks", o.tasks, "scheduler's worker channel")
      ->capture_default_str()
      ->check(EndpointValidator());
  app.add_option("--heartbeat", o.heartbeat, "scheduler's heartbeat channel")
      ->capture_default_str()
      ->check(EndpointValidator());
  std::string key_file, server_key_file;
  AddKeyOptions(app, "worker", &key_file, &server_key_file);
  app.add_option("--name", o.name, "worker id (default: hostname-pid)");
  app.add_option("--queue", queues,
                 "NAME:SLOTS, repeatable (default: default:<cores>)")
      ->check(QueueValidator());
  app.add_option("--prefetch", prefetch,
                 "per queue, at most this many tasks taken beyond the "
                 "slots and started as soon as one frees; the scheduler "
                 "sends about 20 ms of work (default: 16 a slot; 0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--runtime", runtimes,
                 "docker or shell, repeatable (default: docker)")
      ->check(CLI::Validator(
          [](std::string& r) -> std::string {
            if (r == "docker" || r == "shell") return "";
            return "'" + r + "' is not a runtime: docker or shell";
          },
          "docker|shell"));
  // The container policy (docs/SECURITY.md): what Docker tasks may ask for.
  ContainerPolicy& policy = o.policy;
  std::vector<std::string> allowed_images, allowed_networks, cap_add_allowed;
  std::string default_limits = FormatLimits(policy.default_limits);
  std::string max_limits = FormatLimits(policy.max_limits);
  std::string max_log_bytes = "16m";
  app.add_option("--allowed-images", allowed_images,
                 "glob patterns of the images Docker tasks may use, "
                 "repeatable (default: *)");
  app.add_option("--allowed-networks", allowed_networks,
                 "networks Docker tasks may use, repeatable; host and "
                 "container:NAME only when listed so (default: none, bridge)");
  app.add_option("--allow-root", policy.allow_root,
                 "false: Docker tasks whose user is root or unset run as "
                 "65534:65534")
      ->capture_default_str();
  app.add_option("--default-limits", default_limits,
                 "limits of a Docker task that sets none, as "
                 "memory=SIZE,cpus=N,pids=N (0: none)")
      ->capture_default_str();
  app.add_option("--max-limits", max_limits,
                 "the most a Docker task may ask for, as "
                 "memory=SIZE,cpus=N,pids=N (0: no bound)")
      ->capture_default_str();
  app.add_option("--cap-add-allowed", cap_add_allowed,
                 "capabilities a Docker task may add with cap_add, "
                 "repeatable (default: none)");
  app.add_option("--max-log-bytes", max_log_bytes,
                 "output kept of an attempt; past it, a marker line and the "
                 "task goes on")
      ->capture_default_str();
  std::string shell_uids;
  app.add_option("--shell-uids", shell_uids,
                 "a uid range such as 61000-61063: each shell slot runs its "
                 "tasks as its own uid from it (default: the worker's user)");
  app.add_option("--docker-socket", docker_socket, "Docker Engine API socket")
      ->capture_default_str();
  app.add_option("--docker-output", docker_output,
                 "how a Docker task's output file leaves its container: "
                 "bind (a directory of the work dir mounted into it; "
                 "archive if the daemon cannot see it) or archive (the "
                 "archive API: any daemon, slower)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& m) -> std::string {
            if (m == "bind" || m == "archive") return "";
            return "'" + m + "' is not an output method: bind or archive";
          },
          "bind|archive"));
  app.add_option("--docker-daemon-work-dir", docker_daemon_work_dir,
                 "the work dir as the Docker daemon sees it, if that "
                 "differs (a worker in a container, its work dir mounted "
                 "from the host); needs --work-dir");
  app.add_option("--work-dir", work_dir,
                 "scratch space: shell tasks' files, Docker tasks' output "
                 "dirs (default: a temp dir)");
  app.add_option("--heartbeat-interval", heartbeat_interval,
                 "heartbeat period (at least 10ms)")
      ->capture_default_str()
      ->check(DurationValidator(std::chrono::milliseconds(10)));
  app.add_option("--shutdown-grace", shutdown_grace,
                 "on SIGTERM, how long running tasks may finish before they "
                 "are handed back")
      ->capture_default_str()
      ->check(DurationValidator(std::chrono::milliseconds(0)));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(LogLevelValidator());
  if (auto rc = ParseCommandLine(app, argc, argv)) return *rc;
  if (!ApplyConfig(app, config, WorkerConfigKeys())) return kExitUsage;
  if (!SetUpLogging(log_level, "drover-worker")) {
    std::cerr << "drover-worker: --log-level must be trace, debug, info, "
                 "warn or error\n";
    return kExitUsage;
  }
  auto usage = [](const std::string& msg) {
    std::cerr << "drover-worker: " << msg << "\n";
    return kExitUsage;
  };
  if (o.name.empty()) o.name = DefaultName();
  ProtectProcessMemory();
  auto keys = LoadClientKeys(key_file, server_key_file);
  if (!keys.ok()) return usage(keys.status().message());
  o.keys = std::move(*keys);
  if (!o.keys) {
    for (const std::string& endpoint : {o.tasks, o.heartbeat}) {
      if (IsLocalEndpoint(endpoint)) continue;
      spdlog::warn("{}: a scheduler beyond this host without --key and "
                   "--server-key: tasks, their secrets and results travel "
                   "unencrypted, and nothing proves that the scheduler is "
                   "yours",
                   endpoint);
    }
  }
  for (const std::string& q : queues) {
    const size_t colon = q.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return usage("--queue '" + q + "' must be NAME:SLOTS");
    }
    try {
      size_t used = 0;
      const int slots = std::stoi(q.substr(colon + 1), &used);
      if (slots < 1 || used != q.size() - colon - 1) throw std::exception();
      o.queues[q.substr(0, colon)] = static_cast<uint32_t>(slots);
    } catch (const std::exception&) {
      return usage("--queue '" + q + "': SLOTS must be a positive integer");
    }
  }
  if (o.queues.empty()) {
    o.queues["default"] = std::max(1u, std::thread::hardware_concurrency());
  }
  if (!docker_daemon_work_dir.empty() &&
      (work_dir.empty() || docker_daemon_work_dir.front() != '/')) {
    return usage(
        "--docker-daemon-work-dir needs --work-dir, and must be absolute");
  }
  if (prefetch > 100000) return usage("--prefetch must be at most 100000");
  if (!allowed_images.empty()) policy.allowed_images = allowed_images;
  if (!allowed_networks.empty()) policy.allowed_networks = allowed_networks;
  for (const std::string& cap : cap_add_allowed) {
    policy.cap_add_allowed.push_back(CapabilityName(cap));
    if (policy.cap_add_allowed.back().empty()) {
      return usage("--cap-add-allowed '" + cap +
                   "' is not a capability name such as NET_ADMIN");
    }
  }
  for (const auto& [flag, text, limits] :
       {std::tuple<const char*, const std::string&, WireLimits&>{
            "--default-limits", default_limits, policy.default_limits},
        {"--max-limits", max_limits, policy.max_limits}}) {
    auto parsed = ParseLimits(text);
    if (!parsed.ok()) {
      return usage(std::string(flag) + ": " + parsed.status().message());
    }
    limits = *parsed;
  }
  if (auto bytes = ParseSize(max_log_bytes); bytes && *bytes > 0) {
    policy.max_log_bytes = *bytes;
  } else {
    return usage("--max-log-bytes '" + max_log_bytes +
                 "' is not a size such as 16m");
  }
  if (Status st = ValidatePolicy(policy); !st.ok()) return usage(st.message());
  if (prefetch >= 0) o.prefetch = static_cast<uint32_t>(prefetch);
  // Both checked by DurationValidator, from the flag or the file.
  o.heartbeat_interval = *ParseDuration(heartbeat_interval);
  o.shutdown_grace = *ParseDuration(shutdown_grace);

  std::error_code ec;
  bool own_work_dir = false;
  if (work_dir.empty()) {
    char tmpl[] = "/tmp/drover-worker-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      spdlog::critical("cannot create a work dir in /tmp");
      return kExitFailed;
    }
    work_dir = tmpl;
    own_work_dir = true;
  } else {
    std::filesystem::create_directories(work_dir, ec);
  }
  if (runtimes.empty()) runtimes.push_back("docker");
  std::map<std::string, std::unique_ptr<Runtime>> rts;
  for (const std::string& r : runtimes) {
    if (r == "shell") {
      ShellRuntimeOptions options;
      options.work_dir = work_dir;
      if (!shell_uids.empty()) {
        auto range = ParseUidRange(shell_uids);
        if (!range.ok()) {
          return usage("--shell-uids: " + range.status().message());
        }
        options.uids = *range;
      }
      options.slots = 0;  // the sum of the queues' slots
      for (const auto& [q, n] : o.queues) options.slots += n;
      auto shell = std::make_unique<ShellRuntime>(std::move(options));
      std::vector<std::string> notes;
      if (Status st = shell->Start(&notes); !st.ok()) {
        return usage("--runtime shell: " + st.message());
      }
      for (const std::string& n : notes) spdlog::warn("{}", n);
      if (shell_uids.empty() && TasksReachSocket(docker_socket)) {
        spdlog::warn(
            "shell tasks run as this worker's user, which can use the Docker "
            "socket {} (and so is as good as root on this host): set "
            "shell_uids, or run the worker as a user that cannot",
            docker_socket);
      }
      rts[r] = std::move(shell);
    } else if (r == "docker") {
      DockerRuntimeOptions options;
      options.socket_path = docker_socket;
      // Output files go through a directory of the work dir bind-mounted
      // into each container, or through the archive API for a daemon that
      // does not see this host's files (docs/DOCKER.md).
      options.work_dir = work_dir;
      options.daemon_work_dir = docker_daemon_work_dir;
      options.output = docker_output == "archive"
                           ? DockerOutputMethod::kArchive
                           : DockerOutputMethod::kBind;
      options.policy = o.policy;
      options.warn = [](const std::string& m) {
        spdlog::warn("docker: {}", m);
      };
      auto docker = std::make_unique<DockerRuntime>(std::move(options));
      // What an earlier run of this worker left is removed before anything
      // runs; its attempts were requeued by the scheduler when this run
      // said hello. With the daemon down that waits until it answers.
      auto report = [](const Result<std::vector<LeftoverAttempt>>& left) {
        if (!left.ok()) {
          spdlog::warn(
              "docker: cannot remove what an earlier run of this "
              "worker left: {}",
              left.status().message());
          return;
        }
        for (const auto& l : *left) {
          spdlog::warn(
              "job {} task {} attempt {}: removed the container an "
              "earlier run of this worker left behind",
              l.job_id, l.task_name, l.attempt);
        }
      };
      auto left = docker->RemoveLeftoversBeforeUse(o.name, report);
      if (!left.ok() && left.status().code() == Code::kUnavailable) {
        spdlog::warn(
            "docker: {}; containers an earlier run of this worker "
            "left are removed once the daemon answers",
            left.status().message());
      } else {
        report(left);
      }
      rts[r] = std::move(docker);
    } else {
      return usage("--runtime '" + r + "' must be docker or shell");
    }
  }

  Worker worker(o, std::move(rts));
  Status st = worker.Start();
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return kExitUnreachable;
  }
  g_worker = &worker;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  // Under systemd (Type=notify): READY=1 once the scheduler has welcomed
  // this worker (it then takes tasks), STATUS= and WATCHDOG=1 from the
  // loop, STOPPING=1 as soon as draining begins.
  ServiceNotifier notifier;
  worker.set_ready_callback([&] { notifier.Ready(worker.StatusLine()); });
  worker.set_tick_callback(notifier.tick_period(), [&] {
    if (worker.stopping()) notifier.Stopping(worker.StatusLine());
    notifier.Tick(worker.StatusLine());
  });
  st = worker.Run();
  notifier.Stopping(worker.StatusLine());
  g_worker = nullptr;
  if (own_work_dir) std::filesystem::remove_all(work_dir, ec);
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return kExitFailed;
  }
  spdlog::info("worker {} stopped", o.name);
  return kExitOk;
}
