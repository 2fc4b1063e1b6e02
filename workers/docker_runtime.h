// DockerRuntime: runs a task attempt — its pre tasks, the task, its post
// tasks — each in a container of its own through the Docker Engine API
// (DockerClient). docs/DOCKER.md describes how each TaskRun field maps to
// the container, the labels, the output file, stopping and cleanup.
//
// The worker owns one DockerRuntime and calls Run from several task threads
// at once; every public method is thread-safe. Once Healthy has been called,
// a background thread pings the daemon about once a second, so the worker's
// loop never waits on a daemon that hangs; the same thread finishes what a
// daemon outage interrupted (see RemoveLeftoversBeforeUse and the removals
// an attempt could not do) as soon as the daemon answers again.
#ifndef DROVER_WORKERS_DOCKER_RUNTIME_H_
#define DROVER_WORKERS_DOCKER_RUNTIME_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "docker_client.h"
#include "drover/protocol.h"
#include "drover/runtime.h"
#include "drover/status.h"

namespace drover {

// Where DROVER_OUTPUT points inside every container, and its directory.
inline constexpr std::string_view kContainerOutputPath = "/drover/output";
inline constexpr std::string_view kContainerOutputDir = "/drover";

// How the task's output file gets into a container and back out.
enum class DockerOutputMethod {
  // A fresh host directory per container, WORK_DIR/docker-output/WORKER/
  // CONTAINER, bind-mounted at /drover: no daemon call at all. Needs a
  // daemon that sees this host's files; when one refuses the mount, the
  // runtime switches to kArchive for good.
  kBind,
  // The archive API: PUT before the start, GET after the exit. Works with
  // any daemon, but each call makes the daemon mount the container's
  // filesystem.
  kArchive,
};

struct DockerRuntimeOptions {
  std::string socket_path = "/var/run/docker.sock";
  // Holds the bind method's output directories; empty: the archive method.
  std::string work_dir;
  // work_dir as the daemon sees it, when that differs (a worker in a
  // container whose work dir is mounted from the host); empty: work_dir.
  std::string daemon_work_dir;
  DockerOutputMethod output = DockerOutputMethod::kBind;
  // Receives what belongs in the worker's log rather than an attempt's
  // (the switch from the bind to the archive method), on the thread of the
  // Run that found it; empty: dropped.
  std::function<void(const std::string&)> warn;
  // Sent with every pull (to the registry they name, if they name one).
  std::optional<RegistryCredentials> credentials;
  // Between SIGTERM and SIGKILL when a timeout or a stop ends a container.
  std::chrono::milliseconds stop_grace{10'000};
  // Runs docker-init as PID 1, so SIGTERM reaches a task's shell (PID 1
  // ignores signals it has no handler for) and zombies are reaped.
  bool init = true;
  // What every container gets: the worker's limits, capabilities (all
  // dropped, then BaseCapabilities() and the task's allowed cap_add),
  // no-new-privileges, its user when root is not allowed, a bounded log
  // (drover/policy.h). Whether a task may run at all is the worker's check.
  ContainerPolicy policy;
};

// A task's output file may grow to this size on the worker's host (the
// bind method); past it, it is emptied and the container stopped. The
// output kept is kMaxOutputBytes of it.
inline constexpr int64_t kMaxOutputFileBytes = 1 << 20;

// An attempt whose containers or volumes an earlier run of the worker left
// behind (found by the drover.worker label).
struct LeftoverAttempt {
  std::string job_id;
  std::string task_name;
  uint32_t attempt = 0;
  bool operator==(const LeftoverAttempt&) const = default;
  auto operator<=>(const LeftoverAttempt&) const = default;
};

// Receives the outcome of a leftover sweep that had to wait for the daemon.
using LeftoverReport =
    std::function<void(const Result<std::vector<LeftoverAttempt>>&)>;

class DockerRuntime : public Runtime {
 public:
  explicit DockerRuntime(DockerRuntimeOptions options);
  explicit DockerRuntime(
      std::string socket_path,
      std::optional<RegistryCredentials> credentials = std::nullopt);
  ~DockerRuntime() override;

  std::string_view name() const override { return "docker"; }
  // Never throws. A daemon that cannot be reached gives
  // {error = "Docker daemon not reachable at ...", infrastructure = true}.
  RunOutcome Run(const TaskRun& task, LogSink& logs,
                 std::stop_token stop) override;
  // Whether the daemon answers. The first call pings (up to 5 s) and starts
  // the background probe; later calls return its latest answer at once. An
  // attempt that fails because the daemon is unreachable makes it false at
  // once, until the probe finds the daemon again.
  bool Healthy() override;

  // Removes every container and volume labelled drover.worker=`worker`
  // (left by a run of this worker that died), and the output directories
  // of that worker — those under this runtime's work dir and those the
  // removed containers name — and returns their attempts, sorted and
  // without duplicates, so the worker can report them failed. Call it at
  // start-up, before running anything.
  Result<std::vector<LeftoverAttempt>> CleanupLeftovers(
      std::string_view worker);

  // For a worker's start: runs CleanupLeftovers(worker) now and returns its
  // result. If the daemon cannot be reached (Unavailable), the sweep stays
  // due: it runs before this runtime creates anything — in the background
  // probe as soon as the daemon answers, or in the next Run, whichever is
  // first; Run fails as infrastructure until it has run — and `later` gets
  // its result then, on that thread. Since nothing of this run of the worker
  // exists before the sweep, it removes only what the earlier run left.
  Result<std::vector<LeftoverAttempt>> RemoveLeftoversBeforeUse(
      std::string worker, LeftoverReport later);

  DockerClient& client() { return client_; }
  // kBind until a daemon refuses the bind mount (or with no work dir).
  DockerOutputMethod output_method() const {
    return bind_output_.load() ? DockerOutputMethod::kBind
                               : DockerOutputMethod::kArchive;
  }

 private:
  class Attempt;

  // Runs a due leftover sweep and retries removals that failed; an error
  // only if the daemon could not be reached for a due sweep.
  Status PrepareForUse();
  // Something an attempt created and could not remove (the daemon was gone).
  void AddOrphan(bool volume, std::string name);
  // After a daemon refused a bind mount: the archive method from now on.
  void UseArchiveOutput(const std::string& why);
  // WORK_DIR/docker-output/WORKER, holding the worker's output directories.
  std::filesystem::path OutputRoot(std::string_view worker) const;
  void RetryOrphans();
  void MarkUnhealthy();
  bool Probe();
  void ProbeLoop(std::stop_token stop);

  DockerRuntimeOptions options_;
  DockerClient client_;
  std::atomic<bool> bind_output_;

  std::mutex health_mu_;
  std::condition_variable_any health_cv_;
  bool healthy_ = false;  // guarded by health_mu_
  bool recheck_ = false;  // guarded by health_mu_: probe now

  std::mutex sweep_mu_;  // held while a sweep runs, so Run waits for it
  std::optional<std::string> sweep_due_for_;  // guarded: the worker's name
  LeftoverReport sweep_report_;               // guarded

  struct Orphan {
    bool volume = false;
    std::string name;  // container name or id, or volume name
    int refusals = 0;  // times the daemon answered but would not remove it
  };
  std::mutex orphans_mu_;
  std::vector<Orphan> orphans_;  // guarded by orphans_mu_

  // Last: stopped and joined before everything it uses goes away.
  std::jthread prober_;  // guarded by health_mu_ until started
};

}  // namespace drover

#endif  // DROVER_WORKERS_DOCKER_RUNTIME_H_
