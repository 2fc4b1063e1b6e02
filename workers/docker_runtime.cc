#include "docker_runtime.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

namespace drover {
namespace {

using Clock = std::chrono::steady_clock;

// After SIGKILL a container is gone within moments; a daemon that has not
// reported the exit by then is stuck, and the attempt stops waiting for it.
constexpr std::chrono::seconds kKillWait{20};
// The log stream ends when the container stops; this long after the exit it
// is abandoned rather than waited for.
constexpr std::chrono::seconds kLogDrainWait{10};
// How often the background probe pings the daemon.
constexpr std::chrono::milliseconds kProbeEvery{1000};
// Removals the daemon answers but refuses (not "not reachable") are retried
// this many times, then left to CleanupLeftovers at the worker's next start.
constexpr int kMaxRemovalRefusals = 10;

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  if (ms < 1000) return std::to_string(ms) + "ms";
  std::string s = std::to_string(ms / 1000) + "." +
                  std::to_string(1000 + ms % 1000).substr(1);
  while (s.back() == '0') s.pop_back();
  return s + "s";
}

// Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; job ids and task names may
// hold anything.
std::string NamePart(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    out += ok ? c : '_';
  }
  return out.empty() ? "x" : out;
}

std::string RandomSuffix() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  uint64_t n = rng();
  for (int i = 0; i < 8; ++i, n >>= 4) s += kHex[n & 15];
  return s;
}

// A step's outcome: a pre task, the task, or a post task.
struct StepResult {
  int64_t exit_code = -1;
  std::string output;
  std::string error;
  bool timed_out = false;
  bool cancelled = false;
  bool infrastructure = false;
  bool ok() const { return error.empty() && exit_code == 0; }
};

StepResult Failed(const Status& s, std::string_view doing) {
  StepResult r;
  r.infrastructure = s.code() == Code::kUnavailable;
  // "Docker daemon not reachable ..." speaks for itself.
  r.error =
      r.infrastructure ? s.message() : std::string(doing) + ": " + s.message();
  return r;
}

}  // namespace

// One call of Run: owns the attempt's containers and volumes and removes
// them in its destructor, whatever happened.
class DockerRuntime::Attempt {
 public:
  Attempt(DockerRuntime& runtime, const TaskRun& task, LogSink& logs,
          std::stop_token stop)
      : runtime_(runtime),
        options_(runtime.options_),
        client_(runtime.client_),
        task_(task),
        logs_(logs),
        stop_(std::move(stop)),
        suffix_(RandomSuffix()) {}
  ~Attempt() { Cleanup(); }
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  RunOutcome Run();

 private:
  void Note(const std::string& text) { logs_.Write('s', text + "\n"); }
  std::map<std::string, std::string> Labels(std::string_view role) const;
  Status CreateVolumes();
  Status EnsureImage(const std::string& image);
  StepResult RunStep(const TaskRun& step, std::string_view role, size_t index,
                     bool want_output);
  StepResult RunContainer(const TaskRun& step, const std::string& id,
                          std::string_view what);
  void Cleanup();

  DockerRuntime& runtime_;
  const DockerRuntimeOptions& options_;
  DockerClient& client_;
  const TaskRun& task_;
  LogSink& logs_;
  std::stop_token stop_;
  std::string suffix_;  // makes this attempt's names unique
  std::set<std::string> present_images_;
  std::vector<VolumeMount> volumes_;     // created, to remove
  std::vector<std::string> containers_;  // created and not yet removed
};

std::map<std::string, std::string> DockerRuntime::Attempt::Labels(
    std::string_view role) const {
  return {{"drover.job", task_.job_id},
          {"drover.task", task_.task_name},
          {"drover.attempt", std::to_string(task_.attempt)},
          {"drover.worker", task_.worker},
          {"drover.role", std::string(role)}};
}

// One named volume per distinct path among the task's and its pre and post
// tasks' `volumes`; every container of the attempt mounts them all.
Status DockerRuntime::Attempt::CreateVolumes() {
  std::vector<std::string> paths;
  auto add = [&](const TaskRun& t) {
    for (const std::string& p : t.volumes) {
      if (std::find(paths.begin(), paths.end(), p) == paths.end()) {
        paths.push_back(p);
      }
    }
  };
  add(task_);
  for (const TaskRun& t : task_.pre) add(t);
  for (const TaskRun& t : task_.post) add(t);
  for (size_t i = 0; i < paths.size(); ++i) {
    std::string name = "drover-" + NamePart(task_.job_id) + "-" +
                       NamePart(task_.task_name) + "-a" +
                       std::to_string(task_.attempt) + "-" + suffix_ + "-v" +
                       std::to_string(i);
    auto labels = Labels("volume");
    labels["drover.path"] = paths[i];
    if (Status s = client_.VolumeCreate(name, labels); !s.ok()) {
      // The daemon may have made it before the connection dropped.
      if (s.code() == Code::kUnavailable) runtime_.AddOrphan(true, name);
      return s;
    }
    volumes_.push_back({name, paths[i]});
  }
  return Status::Ok();
}

Status DockerRuntime::Attempt::EnsureImage(const std::string& image) {
  if (present_images_.count(image)) return Status::Ok();
  Result<bool> exists = client_.ImageExists(image);
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    Note("pulling image " + image);
    auto progress = [&](std::string_view line) {
      // Byte counters ("Downloading [==>  ]") would flood the log; the
      // per-layer state changes are what a reader wants.
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) return;
      auto detail = j.find("progressDetail");
      if (detail != j.end() && detail->is_object() &&
          detail->contains("current")) {
        return;
      }
      std::string text = "pull " + image + ":";
      for (const char* key : {"id", "status", "error"}) {
        auto it = j.find(key);
        if (it != j.end() && it->is_string()) {
          text += " " + it->get<std::string>();
        }
      }
      Note(text);
    };
    CancelFn cancel = [this] { return stop_.stop_requested(); };
    Status s = client_.ImagePull(image, options_.credentials, progress, cancel);
    if (!s.ok()) return s;
  }
  present_images_.insert(image);
  return Status::Ok();
}

StepResult DockerRuntime::Attempt::RunStep(const TaskRun& step,
                                           std::string_view role, size_t index,
                                           bool want_output) {
  if (stop_.stop_requested()) {
    StepResult r;
    r.cancelled = true;
    r.error = "cancelled";
    return r;
  }
  const std::string& image = step.image.empty() ? task_.image : step.image;
  if (image.empty()) {
    StepResult r;
    r.error = "no image: the Docker runtime needs `image`";
    return r;
  }
  if (Status s = EnsureImage(image); !s.ok()) {
    if (s.code() == Code::kTimeout && stop_.stop_requested()) {
      StepResult r;
      r.cancelled = true;
      r.error = "cancelled while pulling " + image;
      return r;
    }
    return Failed(s, "pulling image " + image + " failed");
  }

  ContainerConfig config;
  std::string what =
      role == "main" ? std::string("task")
                     : std::string(role) + " task " + std::to_string(index + 1);
  config.name = "drover-" + NamePart(task_.job_id) + "-" +
                NamePart(task_.task_name) + "-a" +
                std::to_string(task_.attempt) + "-" + std::string(role) +
                (role == "main" ? "" : std::to_string(index)) + "-" + suffix_;
  config.image = image;
  if (!step.run.empty()) {
    // A script runs under the image's shell; the image's entrypoint would
    // otherwise receive "/bin/sh -c ..." as arguments.
    config.cmd = {"/bin/sh", "-c", step.run};
    config.entrypoint = step.entrypoint;
  } else {
    config.cmd = step.cmd;
    if (!step.entrypoint.empty()) config.entrypoint = step.entrypoint;
  }
  for (const auto& [k, v] : step.env) {
    if (k != "DROVER_OUTPUT") config.env.push_back(k + "=" + v);
  }
  config.env.push_back("DROVER_OUTPUT=" + std::string(kContainerOutputPath));
  config.workdir = step.workdir;
  config.user = step.user;
  config.labels = Labels(role);
  config.network_mode = step.network.empty() ? "none" : step.network;
  config.memory_bytes = step.memory_bytes;
  config.nano_cpus = static_cast<int64_t>(step.cpus * 1e9);
  config.init = options_.init;
  config.mounts = volumes_;

  Result<std::string> id = client_.ContainerCreate(config);
  if (!id.ok()) {
    // The daemon may have made it before the connection dropped; the name
    // finds it.
    if (id.status().code() == Code::kUnavailable) {
      runtime_.AddOrphan(false, config.name);
    }
    return Failed(id.status(), "creating the container failed");
  }
  containers_.push_back(*id);
  // The output file exists, empty and writable by any user, before the task
  // starts, so `echo x > "$DROVER_OUTPUT"` works under any `user`.
  Status put = client_.PutArchive(
      *id, "/", MakeTarWithFile("drover", 01777, "output", 0666, ""));
  if (!put.ok()) {
    return Failed(put, "creating " + std::string(kContainerOutputPath) +
                           " in the container failed");
  }

  Note("running " + what + " in container " + config.name + " (image " + image +
       ")");
  StepResult result = RunContainer(step, *id, what);
  if (result.infrastructure) return result;

  if (want_output && !result.cancelled) {
    Result<std::string> out = client_.ReadFile(
        *id, std::string(kContainerOutputPath), kMaxOutputBytes + 1);
    if (out.ok()) {
      result.output = std::move(*out);
      if (result.output.size() > kMaxOutputBytes) {
        result.output.resize(kMaxOutputBytes);
        Note("output truncated to " + std::to_string(kMaxOutputBytes) +
             " bytes");
      }
    } else if (out.status().code() == Code::kUnavailable) {
      return Failed(out.status(), "");
    } else if (out.status().code() != Code::kNotFound) {
      Note("could not read the output: " + out.status().message());
    }
  }
  if (Status s = client_.ContainerRemove(*id); s.ok()) {
    containers_.erase(std::find(containers_.begin(), containers_.end(), *id));
  }
  return result;
}

// Starts the container, streams its logs, waits for it (stopping it on
// timeout or stop), then inspects it.
StepResult DockerRuntime::Attempt::RunContainer(const TaskRun& step,
                                                const std::string& id,
                                                std::string_view what) {
  struct Watch {
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;   // the container exited (or we gave up on it)
    bool stop = false;       // stop_ was requested
    bool logs_done = false;  // the log stream ended
    bool timed_out = false;
    bool cancelled = false;
  } w;
  std::atomic<bool> abort_wait{false};
  std::atomic<bool> abort_logs{false};

  std::optional<Clock::time_point> deadline;
  if (step.timeout.count() > 0) deadline = Clock::now() + step.timeout;
  if (Status s = client_.ContainerStart(id); !s.ok()) {
    return Failed(s, "starting the " + std::string(what) + " failed");
  }

  std::jthread logs_thread([&] {
    CancelFn cancel = [&] { return abort_logs.load(); };
    Status s = client_.ContainerLogs(
        id, [&](std::string_view d) { logs_.Write('o', d); },
        [&](std::string_view d) { logs_.Write('e', d); }, cancel);
    if (!s.ok() && !abort_logs.load()) {
      Note("log stream of the " + std::string(what) + " ended: " + s.message());
    }
    std::lock_guard lock(w.mu);
    w.logs_done = true;
    w.cv.notify_all();
  });

  std::jthread watchdog([&] {
    std::unique_lock lock(w.mu);
    auto woken = [&] { return w.finished || w.stop; };
    if (deadline) {
      w.cv.wait_until(lock, *deadline, woken);
    } else {
      w.cv.wait(lock, woken);
    }
    if (w.finished) return;
    (w.stop ? w.cancelled : w.timed_out) = true;
    lock.unlock();
    Note(std::string(w.cancelled ? "cancelled" : "timed out") +
         ": stopping the " + std::string(what) + " (SIGTERM, SIGKILL after " +
         FormatDuration(options_.stop_grace) + ")");
    if (Status s = client_.ContainerKill(id, "SIGTERM"); !s.ok()) {
      Note("SIGTERM failed: " + s.message());
    }
    lock.lock();
    if (w.cv.wait_for(lock, options_.stop_grace, [&] { return w.finished; })) {
      return;
    }
    lock.unlock();
    if (Status s = client_.ContainerKill(id, "SIGKILL"); !s.ok()) {
      Note("SIGKILL failed: " + s.message());
    }
    lock.lock();
    if (!w.cv.wait_for(lock, kKillWait, [&] { return w.finished; })) {
      abort_wait = true;
    }
  });

  // Wakes the watchdog on stop; declared after `w`, so it is unregistered
  // before `w` goes away.
  std::stop_callback on_stop(stop_, [&] {
    std::lock_guard lock(w.mu);
    w.stop = true;
    w.cv.notify_all();
  });
  // Tells the watchdog the container is done and gives the log stream a
  // moment to drain. Also runs if this function is left by an exception,
  // since the jthreads' destructors join and must not wait forever.
  struct Finisher {
    Watch& w;
    std::atomic<bool>& abort_logs;
    bool done = false;
    void Done() {
      if (done) return;
      done = true;
      std::unique_lock lock(w.mu);
      w.finished = true;
      w.cv.notify_all();
      if (!w.cv.wait_for(lock, kLogDrainWait, [&] { return w.logs_done; })) {
        abort_logs = true;
      }
    }
    ~Finisher() { Done(); }
  } finisher{w, abort_logs};

  Result<int64_t> code =
      client_.ContainerWait(id, [&] { return abort_wait.load(); });
  finisher.Done();
  watchdog.join();
  logs_thread.join();

  StepResult r;
  {
    std::lock_guard lock(w.mu);
    r.timed_out = w.timed_out;
    r.cancelled = w.cancelled;
  }
  if (!code.ok()) {
    if (abort_wait.load()) {
      r.error = "the " + std::string(what) +
                " did not stop after SIGKILL; Docker daemon stuck?";
      r.infrastructure = true;
      return r;
    }
    StepResult f = Failed(code.status(),
                          "waiting for the " + std::string(what) + " failed");
    f.timed_out = r.timed_out;
    f.cancelled = r.cancelled;
    return f;
  }
  r.exit_code = *code;
  Result<ContainerState> state = client_.ContainerInspect(id);
  if (!state.ok() && state.status().code() == Code::kUnavailable) {
    return Failed(state.status(), "");
  }
  if (r.timed_out) {
    r.error = "timed out after " + FormatDuration(step.timeout);
  } else if (r.cancelled) {
    r.error = "cancelled";
  } else if (state.ok() && state->oom_killed && r.exit_code != 0) {
    r.error = step.memory_bytes > 0
                  ? "out of memory: container killed at its limit of " +
                        std::to_string(step.memory_bytes) + " bytes"
                  : "out of memory: container killed by the kernel";
  } else if (r.exit_code != 0) {
    r.error = "exited with code " + std::to_string(r.exit_code);
  }
  return r;
}

RunOutcome DockerRuntime::Attempt::Run() {
  RunOutcome outcome;
  if (stop_.stop_requested()) {
    outcome.cancelled = true;
    outcome.error = "cancelled before it started";
    return outcome;
  }
  auto fail = [&](const StepResult& r, const std::string& prefix) {
    outcome.error =
        prefix.empty() || r.infrastructure ? r.error : prefix + r.error;
    outcome.timed_out = r.timed_out;
    outcome.cancelled = r.cancelled;
    outcome.infrastructure = r.infrastructure;
    return outcome;
  };
  if (Status s = CreateVolumes(); !s.ok()) {
    return fail(Failed(s, "creating volumes failed"), "");
  }
  // A failed pre task skips the task and the post tasks; a failed task
  // skips the post tasks (they usually publish what the task made).
  for (size_t i = 0; i < task_.pre.size(); ++i) {
    StepResult r = RunStep(task_.pre[i], "pre", i, false);
    if (!r.ok()) {
      return fail(r, "pre task " + std::to_string(i + 1) + " of " +
                         std::to_string(task_.pre.size()) + ": ");
    }
  }
  StepResult main = RunStep(task_, "main", 0, true);
  outcome.exit_code = static_cast<int32_t>(main.exit_code);
  outcome.output = std::move(main.output);
  if (!main.ok()) return fail(main, "");
  for (size_t i = 0; i < task_.post.size(); ++i) {
    StepResult r = RunStep(task_.post[i], "post", i, false);
    if (!r.ok()) {
      return fail(r, "post task " + std::to_string(i + 1) + " of " +
                         std::to_string(task_.post.size()) + ": ");
    }
  }
  return outcome;
}

void DockerRuntime::Attempt::Cleanup() {
  try {
    // What cannot be removed now (the daemon is gone) is handed to the
    // runtime, which removes it once the daemon answers again.
    for (const std::string& id : containers_) {
      if (Status s = client_.ContainerRemove(id); !s.ok()) {
        Note("could not remove container " + id +
             " (removed later): " + s.message());
        runtime_.AddOrphan(false, id);
      }
    }
    containers_.clear();
    for (const VolumeMount& v : volumes_) {
      if (Status s = client_.VolumeRemove(v.volume); !s.ok()) {
        Note("could not remove volume " + v.volume +
             " (removed later): " + s.message());
        runtime_.AddOrphan(true, v.volume);
      }
    }
    volumes_.clear();
  } catch (...) {
    // A destructor must not throw; what is left behind carries the worker's
    // label and CleanupLeftovers removes it on the next start.
  }
}

// ---------------------------------------------------------------------------

DockerRuntime::DockerRuntime(DockerRuntimeOptions options)
    : options_(std::move(options)), client_(options_.socket_path) {}

DockerRuntime::DockerRuntime(std::string socket_path,
                             std::optional<RegistryCredentials> credentials)
    : DockerRuntime(
          DockerRuntimeOptions{.socket_path = std::move(socket_path),
                               .credentials = std::move(credentials)}) {}

DockerRuntime::~DockerRuntime() {
  // Before the members the probe uses go away.
  if (prober_.joinable()) {
    prober_.request_stop();
    prober_.join();
  }
}

RunOutcome DockerRuntime::Run(const TaskRun& task, LogSink& logs,
                              std::stop_token stop) {
  try {
    if (Status s = PrepareForUse(); !s.ok()) {
      RunOutcome outcome;
      outcome.error = s.message();
      outcome.infrastructure = true;
      MarkUnhealthy();
      return outcome;
    }
    RunOutcome outcome;
    {
      Attempt attempt(*this, task, logs, std::move(stop));
      outcome = attempt.Run();
    }  // the attempt's containers and volumes are removed here
    // Say so in the next heartbeat, so the scheduler stops sending Docker
    // tasks here until the daemon answers again.
    if (outcome.infrastructure) MarkUnhealthy();
    return outcome;
  } catch (const std::exception& e) {
    RunOutcome outcome;
    outcome.error =
        std::string("internal error in the Docker runtime: ") + e.what();
    return outcome;
  } catch (...) {
    RunOutcome outcome;
    outcome.error = "internal error in the Docker runtime";
    return outcome;
  }
}

bool DockerRuntime::Healthy() {
  std::unique_lock lock(health_mu_);
  if (prober_.joinable()) return healthy_;
  lock.unlock();
  const bool ok = Probe();
  lock.lock();
  if (!prober_.joinable()) {
    healthy_ = ok;
    prober_ = std::jthread([this](std::stop_token stop) { ProbeLoop(stop); });
  }
  return healthy_;
}

bool DockerRuntime::Probe() {
  try {
    return client_.Ping().ok() && PrepareForUse().ok();
  } catch (...) {
    return false;
  }
}

void DockerRuntime::ProbeLoop(std::stop_token stop) {
  std::unique_lock lock(health_mu_);
  while (!stop.stop_requested()) {
    health_cv_.wait_for(lock, stop, kProbeEvery, [&] { return recheck_; });
    if (stop.stop_requested()) return;
    recheck_ = false;
    lock.unlock();
    const bool ok = Probe();
    lock.lock();
    // A failure reported meanwhile asks for another look; keep it.
    if (!recheck_) healthy_ = ok;
  }
}

void DockerRuntime::MarkUnhealthy() {
  std::lock_guard lock(health_mu_);
  healthy_ = false;
  recheck_ = true;
  health_cv_.notify_all();
}

Status DockerRuntime::PrepareForUse() {
  {
    std::lock_guard lock(sweep_mu_);
    if (sweep_due_for_) {
      auto left = CleanupLeftovers(*sweep_due_for_);
      if (!left.ok() && left.status().code() == Code::kUnavailable) {
        return left.status();
      }
      sweep_due_for_.reset();
      if (sweep_report_) sweep_report_(left);
      sweep_report_ = nullptr;
    }
  }
  RetryOrphans();
  return Status::Ok();
}

Result<std::vector<LeftoverAttempt>> DockerRuntime::RemoveLeftoversBeforeUse(
    std::string worker, LeftoverReport later) {
  std::lock_guard lock(sweep_mu_);
  auto left = CleanupLeftovers(worker);
  if (!left.ok() && left.status().code() == Code::kUnavailable) {
    sweep_due_for_ = std::move(worker);
    sweep_report_ = std::move(later);
  }
  return left;
}

void DockerRuntime::AddOrphan(bool volume, std::string name) {
  std::lock_guard lock(orphans_mu_);
  orphans_.push_back(Orphan{volume, std::move(name), 0});
}

void DockerRuntime::RetryOrphans() {
  std::vector<Orphan> todo;
  {
    std::lock_guard lock(orphans_mu_);
    if (orphans_.empty()) return;
    todo.swap(orphans_);
  }
  // Containers first: a volume in use cannot be removed.
  std::stable_partition(todo.begin(), todo.end(),
                        [](const Orphan& o) { return !o.volume; });
  std::vector<Orphan> again;
  for (Orphan& o : todo) {
    Status s = o.volume ? client_.VolumeRemove(o.name)
                        : client_.ContainerRemove(o.name);
    if (s.ok()) continue;
    if (s.code() != Code::kUnavailable && ++o.refusals >= kMaxRemovalRefusals) {
      continue;
    }
    again.push_back(std::move(o));
  }
  std::lock_guard lock(orphans_mu_);
  orphans_.insert(orphans_.end(), std::make_move_iterator(again.begin()),
                  std::make_move_iterator(again.end()));
}

Result<std::vector<LeftoverAttempt>> DockerRuntime::CleanupLeftovers(
    std::string_view worker) {
  try {
    std::string label = "drover.worker=" + std::string(worker);
    std::set<LeftoverAttempt> found;
    auto record = [&](const std::map<std::string, std::string>& labels) {
      LeftoverAttempt a;
      auto get = [&](const char* key) {
        auto it = labels.find(key);
        return it == labels.end() ? std::string() : it->second;
      };
      a.job_id = get("drover.job");
      a.task_name = get("drover.task");
      std::string n = get("drover.attempt");
      std::from_chars(n.data(), n.data() + n.size(), a.attempt);
      found.insert(std::move(a));
    };
    std::string failures;
    Result<std::vector<DockerObject>> containers = client_.ContainerList(label);
    if (!containers.ok()) return containers.status();
    for (const DockerObject& c : *containers) {
      record(c.labels);
      if (Status s = client_.ContainerRemove(c.id); !s.ok()) {
        failures += " container " + c.name + ": " + s.message() + ";";
      }
    }
    // Volumes after containers: a volume in use cannot be removed.
    Result<std::vector<DockerObject>> volumes = client_.VolumeList(label);
    if (!volumes.ok()) return volumes.status();
    for (const DockerObject& v : *volumes) {
      record(v.labels);
      if (Status s = client_.VolumeRemove(v.name); !s.ok()) {
        failures += " volume " + v.name + ": " + s.message() + ";";
      }
    }
    if (!failures.empty()) {
      return Status::IOError("could not remove leftovers of worker " +
                             std::string(worker) + ":" + failures);
    }
    return std::vector<LeftoverAttempt>(found.begin(), found.end());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("CleanupLeftovers: ") + e.what());
  }
}

}  // namespace drover
