// droverd: the scheduler daemon. See the spec and docs/DEPLOY.md.
#include <spdlog/spdlog.h>

#include <sys/stat.h>

#include <csignal>
#include <filesystem>
#include <iostream>

#include "drover/cli.h"
#include "drover/clock.h"
#include "drover/config.h"
#include "drover/job_spec.h"
#include "drover/service_notifier.h"
#include "drover/store.h"
#include "server.h"

namespace {

drover::Server* g_server = nullptr;

void OnSignal(int) {
  if (g_server != nullptr) g_server->RequestStop();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace drover;  // NOLINT: main only
  CLI::App app{"droverd: the drover scheduler"};
  app.set_version_flag("--version", std::string("droverd ") + DROVER_VERSION);
  ServerOptions o;
  std::string config, heartbeat_interval = "1s", log_level = "info";
  app.add_option("--config", config, "TOML config file");
  app.add_option("--data-dir", o.data_dir, "LevelDB database and runtime files")
      ->capture_default_str();
  app.add_option("--api", o.api, "client requests (ROUTER)")
      ->capture_default_str()
      ->check(EndpointValidator());
  app.add_option("--tasks", o.tasks, "worker channel (ROUTER)")
      ->capture_default_str()
      ->check(EndpointValidator());
  app.add_option("--heartbeat", o.heartbeat, "heartbeat channel (XPUB)")
      ->capture_default_str()
      ->check(EndpointValidator());
  app.add_option("--watch-dir", o.watch_dir, "watched directory for job files");
  bool insecure = false;
  app.add_option("--auth", o.auth_dir,
                 "CURVE keys and allowlists on every socket: the scheduler's "
                 "key pair and clients/, readers/, workers/ in this "
                 "directory (docs/SECURITY.md)");
  app.add_option("--secrets-key", o.secrets_key,
                 "the key that seals job secrets in the store, made on first "
                 "start (default: secrets.key in the --auth directory, else "
                 "in the data dir)");
  app.add_flag("--insecure", insecure,
               "without --auth, allow endpoints beyond this host (ipc:// and "
               "loopback only otherwise)");
  app.add_option("--heartbeat-interval", heartbeat_interval,
                 "expected worker heartbeat period (at least 10ms)")
      ->capture_default_str()
      ->check(DurationValidator(std::chrono::milliseconds(10)));
  app.add_option("--heartbeat-liveness", o.heartbeat_liveness,
                 "missed heartbeats before a worker is declared dead")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(LogLevelValidator());
  if (auto rc = ParseCommandLine(app, argc, argv)) return *rc;
  if (!ApplyConfig(app, config, DroverdConfigKeys())) return kExitUsage;
  if (!SetUpLogging(log_level, "droverd")) {
    std::cerr << "droverd: --log-level must be trace, debug, info, warn or "
                 "error\n";
    return kExitUsage;
  }
  // Checked by DurationValidator, from the flag or the file.
  o.heartbeat_interval = *ParseDuration(heartbeat_interval);
  ProtectProcessMemory();
  // Everything droverd makes is its own alone: the store, ipc sockets,
  // processed/ and failed/, the keys.
  umask(077);

  // Without keys, anyone who reaches a socket may submit work, run tasks
  // as a worker and read every job: only this host may, unless the
  // operator says otherwise.
  if (o.auth_dir.empty()) {
    for (const auto& [flag, endpoint] :
         {std::pair<const char*, const std::string&>{"--api", o.api},
          {"--tasks", o.tasks},
          {"--heartbeat", o.heartbeat}}) {
      if (IsLocalEndpoint(endpoint)) continue;
      if (!insecure) {
        std::cerr << "droverd: " << flag << " " << endpoint
                  << " reaches beyond this host, and without --auth anyone "
                     "who can connect may submit jobs, serve as a worker "
                     "and read every job; use --auth DIR "
                     "(docs/SECURITY.md), or --insecure to allow it\n";
        return kExitUsage;
      }
      spdlog::warn("{} {}: no authentication and no encryption (--insecure): "
                   "anyone who can connect may submit jobs, serve as a "
                   "worker and read every job",
                   flag, endpoint);
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  // A data dir from before, or made by hand, may let others in.
  std::filesystem::permissions(o.data_dir, std::filesystem::perms::owner_all,
                               ec);
  auto store = Store::Open(o.data_dir + "/db");
  if (!store.ok()) {
    spdlog::critical("cannot open the store in {}: {}", o.data_dir,
                     store.status().ToString());
    return kExitFailed;
  }
  SystemClock clock;
  Server server(o, std::move(*store), clock);
  // Before Start, which may take a while loading unfinished jobs: a SIGTERM
  // then makes Run return at once instead of killing the process.
  g_server = &server;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  // Past a file-size limit (RLIMIT_FSIZE), a write fails with EFBIG like a
  // full disk, and the store's sticky error handles both; the signal would
  // kill droverd instead.
  std::signal(SIGXFSZ, SIG_IGN);
  Status st = server.Start();
  if (!st.ok()) {
    g_server = nullptr;
    spdlog::critical("{}", st.ToString());
    return kExitFailed;
  }
  // Under systemd (Type=notify): READY=1 once the sockets are bound and
  // unfinished jobs loaded, STATUS= from the loop, WATCHDOG=1 at half of
  // WatchdogSec=, STOPPING=1 once the loop has ended.
  ServiceNotifier notifier;
  server.set_ready_callback([&] { notifier.Ready(server.StatusLine()); });
  server.set_tick_callback(notifier.tick_period(),
                           [&] { notifier.Tick(server.StatusLine()); });
  st = server.Run();
  // Every loop turn commits its batch before the next, so what was
  // acknowledged is on disk; the store closes when `server` goes.
  notifier.Stopping("stopping: " + server.StatusLine());
  g_server = nullptr;
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return kExitFailed;
  }
  spdlog::info("droverd stopped");
  return kExitOk;
}
