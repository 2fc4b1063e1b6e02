// DockerRuntime: runs a task attempt — its pre tasks, the task, its post
// tasks — each in a container of its own through the Docker Engine API
// (DockerClient). docs/DOCKER.md describes how each TaskRun field maps to
// the container, the labels, the output file, stopping and cleanup.
//
// The worker owns one DockerRuntime and calls Run from several task threads
// at once; Run, Healthy and CleanupLeftovers are thread-safe.
#ifndef DROVER_WORKERS_DOCKER_RUNTIME_H_
#define DROVER_WORKERS_DOCKER_RUNTIME_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "docker_client.h"
#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

// Where DROVER_OUTPUT points inside every container.
inline constexpr std::string_view kContainerOutputPath = "/drover/output";

struct DockerRuntimeOptions {
  std::string socket_path = "/var/run/docker.sock";
  // Sent with every pull (to the registry they name, if they name one).
  std::optional<RegistryCredentials> credentials;
  // Between SIGTERM and SIGKILL when a timeout or a stop ends a container.
  std::chrono::milliseconds stop_grace{10'000};
  // Runs docker-init as PID 1, so SIGTERM reaches a task's shell (PID 1
  // ignores signals it has no handler for) and zombies are reaped.
  bool init = true;
};

// An attempt whose containers or volumes an earlier run of the worker left
// behind (found by the drover.worker label).
struct LeftoverAttempt {
  std::string job_id;
  std::string task_name;
  uint32_t attempt = 0;
  bool operator==(const LeftoverAttempt&) const = default;
  auto operator<=>(const LeftoverAttempt&) const = default;
};

class DockerRuntime : public Runtime {
 public:
  explicit DockerRuntime(DockerRuntimeOptions options);
  explicit DockerRuntime(
      std::string socket_path,
      std::optional<RegistryCredentials> credentials = std::nullopt);

  std::string_view name() const override { return "docker"; }
  // Never throws. A daemon that cannot be reached gives
  // {error = "Docker daemon not reachable at ...", infrastructure = true}.
  RunOutcome Run(const TaskRun& task, LogSink& logs,
                 std::stop_token stop) override;
  // Pings the daemon; the answer is kept for a second so a busy worker does
  // not ping on every heartbeat.
  bool Healthy() override;

  // Removes every container and volume labelled drover.worker=`worker`
  // (left by a run of this worker that died) and returns their attempts,
  // sorted and without duplicates, so the worker can report them failed.
  // Call it at start-up, before running anything.
  Result<std::vector<LeftoverAttempt>> CleanupLeftovers(
      std::string_view worker);

  DockerClient& client() { return client_; }

 private:
  class Attempt;

  DockerRuntimeOptions options_;
  DockerClient client_;

  std::mutex health_mu_;
  std::chrono::steady_clock::time_point health_checked_;  // guarded
  bool healthy_ = false;                                  // guarded
};

}  // namespace drover

#endif  // DROVER_WORKERS_DOCKER_RUNTIME_H_
