// droverd: the scheduler daemon. See the spec and docs/DEPLOY.md.
#include <csignal>
#include <filesystem>
#include <iostream>

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include "drover/cli.h"
#include "drover/clock.h"
#include "drover/job_spec.h"
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
      ->capture_default_str();
  app.add_option("--tasks", o.tasks, "worker channel (ROUTER)")
      ->capture_default_str();
  app.add_option("--heartbeat", o.heartbeat, "heartbeat channel (XPUB)")
      ->capture_default_str();
  app.add_option("--watch-dir", o.watch_dir, "watched directory for job files");
  app.add_option("--heartbeat-interval", heartbeat_interval,
                 "expected worker heartbeat period")
      ->capture_default_str();
  app.add_option("--heartbeat-liveness", o.heartbeat_liveness,
                 "missed heartbeats before a worker is declared dead")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  if (auto rc = ParseCommandLine(app, argc, argv)) return *rc;
  const std::vector<ConfigKey> keys = {
      {"data-dir", ConfigKind::kString},
      {"api", ConfigKind::kString},
      {"tasks", ConfigKind::kString},
      {"heartbeat", ConfigKind::kString},
      {"watch-dir", ConfigKind::kString},
      {"heartbeat-interval", ConfigKind::kDuration},
      {"heartbeat-liveness", ConfigKind::kInteger},
      {"log-level", ConfigKind::kString},
  };
  if (!ApplyConfig(app, config, keys)) return kExitUsage;
  if (!SetUpLogging(log_level, "droverd")) {
    std::cerr << "droverd: --log-level must be trace, debug, info, warn or "
                 "error\n";
    return kExitUsage;
  }
  auto interval = ParseDuration(heartbeat_interval);
  if (!interval || interval->count() < 10) {
    std::cerr << "droverd: --heartbeat-interval '" << heartbeat_interval
              << "' is not a duration of at least 10ms\n";
    return kExitUsage;
  }
  o.heartbeat_interval = *interval;

  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  auto store = Store::Open(o.data_dir + "/db");
  if (!store.ok()) {
    spdlog::critical("cannot open the store in {}: {}", o.data_dir,
                     store.status().ToString());
    return kExitFailed;
  }
  SystemClock clock;
  Server server(o, std::move(*store), clock);
  Status st = server.Start();
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return kExitFailed;
  }
  g_server = &server;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  server.set_ready_callback([] { sd_notify(0, "READY=1"); });
  st = server.Run();
  sd_notify(0, "STOPPING=1");
  g_server = nullptr;
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return kExitFailed;
  }
  return kExitOk;
}
