#include "docker_runtime.h"
#include "drover/policy.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
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

// Names a container's host output directory, so that CleanupLeftovers
// finds it even when the run that made it used another work dir (a temp
// dir of its own).
constexpr char kOutputDirLabel[] = "drover.output-dir";
constexpr char kOutputRootName[] = "docker-output";

Status ErrnoStatus(const std::string& doing) {
  const int err = errno;
  std::string text = doing + ": " + std::strerror(err);
  return err == ENOENT ? Status::NotFound(text) : Status::IOError(text);
}

// A fresh `dir` (the worker's alone, 0700) holding an empty `output` (mode
// 0666), so that a task under any `user` can write the file. Only the file
// is mounted into the container: the task has nothing else of the host to
// write to, and the file is watched for size (RunContainer). The daemon,
// as root, needs no permission to mount it.
Status MakeOutputDir(const std::filesystem::path& dir) {
  std::error_code ec;
  const std::filesystem::path root = dir.parent_path().parent_path();
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec) {
    return Status::IOError("creating " + dir.parent_path().string() + ": " +
                           ec.message());
  }
  std::filesystem::permissions(root, std::filesystem::perms::owner_all, ec);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    return ErrnoStatus("creating " + dir.string());
  }
  // fchmod, since the umask trims what open is given.
  const std::string file = (dir / "output").string();
  const int fd =
      ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) return ErrnoStatus("creating " + file);
  const int rc = ::fchmod(fd, 0666);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("chmod " + file);
  return Status::Ok();
}

// At most `max_bytes` of what a task left in `file`. Never through a
// symbolic link (the task could point it at any file of the host) and only
// from a regular file (opening a FIFO would block).
Result<std::string> ReadOutputFile(const std::filesystem::path& file,
                                   size_t max_bytes) {
  const int fd =
      ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) {
      return Status::InvalidArgument(std::string(kContainerOutputPath) +
                                     " is a symbolic link");
    }
    return ErrnoStatus("opening " + file.string());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(std::string(kContainerOutputPath) +
                                   " is not a regular file");
  }
  std::string out;
  char buf[16384];
  while (out.size() < max_bytes) {
    const ssize_t n =
        ::read(fd, buf, std::min(sizeof buf, max_bytes - out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = ErrnoStatus("reading " + file.string());
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status RemoveOutputDir(const std::filesystem::path& dir) {
  // A task running as root may have taken its owner's rights away.
  ::chmod(dir.c_str(), 0700);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec)
    return Status::IOError("removing " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

// Whether `path` (from a container's label) has the shape of an output
// directory of `worker`: .../docker-output/WORKER/drover-..., so a label
// can never make CleanupLeftovers remove anything else.
bool IsOutputDirOf(const std::filesystem::path& path, std::string_view worker) {
  return path.is_absolute() && path == path.lexically_normal() &&
         path.filename().string().rfind("drover-", 0) == 0 &&
         path.parent_path().filename() == NamePart(worker) &&
         path.parent_path().parent_path().filename() == kOutputRootName;
}

// Whether a create failed over the bind mount's source: the daemon does not
// see this host's files (it runs on another host, or outside the worker's
// container). Its message names the path ("invalid mount config for type
// "bind": bind source path does not exist: PATH").
bool BindRefused(const Status& s, const std::string& source) {
  if (s.code() == Code::kUnavailable) return false;
  return s.message().find(source) != std::string::npos ||
         s.message().find("bind source path") != std::string::npos;
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
  Status Pull(const std::string& image);
  Result<std::string> Create(ContainerConfig& config,
                             std::filesystem::path& out_dir);
  // Removes an output directory now; one that cannot be is left to Cleanup.
  void DropOutputDir(const std::filesystem::path& dir);
  StepResult RunStep(const TaskRun& step, std::string_view role, size_t index,
                     bool want_output);
  // `output_file`: the host file mounted as its output (the bind method),
  // kept to kMaxOutputFileBytes; empty with the archive method.
  StepResult RunContainer(const TaskRun& step, const std::string& id,
                          std::string_view what,
                          const std::filesystem::path& output_file);
  void Cleanup();

  DockerRuntime& runtime_;
  const DockerRuntimeOptions& options_;
  DockerClient& client_;
  const TaskRun& task_;
  LogSink& logs_;
  std::stop_token stop_;
  std::string suffix_;                   // makes this attempt's names unique
  std::vector<VolumeMount> volumes_;     // created, to remove
  std::vector<std::string> containers_;  // created and not yet removed
  std::vector<std::filesystem::path> output_dirs_;  // made, to remove
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

Status DockerRuntime::Attempt::Pull(const std::string& image) {
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
  return client_.ImagePull(image, options_.credentials, progress, cancel);
}

// Creates the container of `config`. With the bind method its /drover is a
// fresh host directory, returned in `out_dir`; with the archive method
// (`out_dir` empty) the caller puts the output file in. A daemon that
// refuses the bind mount switches the runtime to the archive method, and
// the container is created again that way.
Result<std::string> DockerRuntime::Attempt::Create(
    ContainerConfig& config, std::filesystem::path& out_dir) {
  out_dir.clear();
  config.binds.clear();
  config.labels.erase(kOutputDirLabel);
  if (runtime_.bind_output_.load()) {
    const std::filesystem::path dir =
        runtime_.OutputRoot(task_.worker) / config.name;
    if (Status s = MakeOutputDir(dir); !s.ok()) {
      (void)RemoveOutputDir(dir);
      runtime_.UseArchiveOutput("cannot make output directories under " +
                                options_.work_dir + ": " + s.message());
      Note("cannot make an output directory (" + s.message() +
           "); using the archive API");
    } else {
      output_dirs_.push_back(dir);
      const std::string source =
          (options_.daemon_work_dir.empty()
               ? dir
               : std::filesystem::path(options_.daemon_work_dir) /
                     dir.lexically_relative(options_.work_dir))
              .string();
      config.binds = {{(std::filesystem::path(source) / "output").string(),
                       std::string(kContainerOutputPath), false}};
      config.labels[kOutputDirLabel] = dir.string();
      Result<std::string> id = client_.ContainerCreate(config);
      if (id.ok()) {
        out_dir = dir;
        return id;
      }
      // Also when the daemon was cut off: should it have made the
      // container, the orphan's removal needs no directory.
      DropOutputDir(dir);
      if (!BindRefused(id.status(), source)) return id;
      runtime_.UseArchiveOutput("the Docker daemon does not see this host's " +
                                options_.work_dir + " (" +
                                id.status().message() + ")");
      Note("the Docker daemon cannot mount " + source +
           "; using the archive API for the output file");
      config.binds.clear();
      config.labels.erase(kOutputDirLabel);
    }
  }
  return client_.ContainerCreate(config);
}

void DockerRuntime::Attempt::DropOutputDir(const std::filesystem::path& dir) {
  if (RemoveOutputDir(dir).ok()) {
    output_dirs_.erase(
        std::remove(output_dirs_.begin(), output_dirs_.end(), dir),
        output_dirs_.end());
  }
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
  config.labels = Labels(role);
  config.network_mode = step.network.empty() ? "none" : step.network;
  // The worker's policy: what every container gets, whatever it asks.
  const ContainerPolicy& policy = options_.policy;
  config.user = step.user;
  if (!policy.allow_root && IsRootUser(step.user)) {
    config.user = std::string(kNobody);
    if (!step.user.empty() || role == "main") {
      Note(std::string(role == "main" ? "task" : role) + " runs as " +
           config.user + ": this worker does not allow root (allow_root)");
    }
  }
  TaskRun limited = step;  // as it runs: the effective limits
  const WireLimits limits = EffectiveLimits(policy, step);
  limited.cpus = limits.cpus;
  limited.memory_bytes = limits.memory_bytes;
  limited.pids = limits.pids;
  config.memory_bytes = limits.memory_bytes;
  config.nano_cpus = static_cast<int64_t>(limits.cpus * 1e9);
  config.pids_limit = limits.pids;
  config.drop_caps = true;
  config.caps = BaseCapabilities();
  for (const std::string& cap : step.cap_add) {
    if (std::find(config.caps.begin(), config.caps.end(), cap) ==
        config.caps.end()) {
      config.caps.push_back(cap);
    }
  }
  config.no_new_privileges = true;
  // drover streams the output itself and keeps max_log_bytes of it; the
  // daemon's own copy (JSON, about twice the size) stays as small.
  config.log_max_bytes = 2 * policy.max_log_bytes + (1 << 20);
  config.init = options_.init;
  config.mounts = volumes_;

  std::filesystem::path out_dir;
  Result<std::string> id = Create(config, out_dir);
  if (!id.ok() && id.status().code() == Code::kNotFound) {
    // The image is pulled when the create says it is missing: asking the
    // daemon first would cost every container a round trip.
    Result<bool> exists = client_.ImageExists(image);
    if (exists.ok() && !*exists) {
      if (Status s = Pull(image); !s.ok()) {
        if (s.code() == Code::kTimeout && stop_.stop_requested()) {
          StepResult r;
          r.cancelled = true;
          r.error = "cancelled while pulling " + image;
          return r;
        }
        return Failed(s, "pulling image " + image + " failed");
      }
      id = Create(config, out_dir);
    }
  }
  if (!id.ok()) {
    // The daemon may have made it before the connection dropped; the name
    // finds it.
    if (id.status().code() == Code::kUnavailable) {
      runtime_.AddOrphan(false, config.name);
    }
    return Failed(id.status(), "creating the container failed");
  }
  containers_.push_back(*id);
  if (out_dir.empty()) {
    // The output file exists, empty and writable by any user, before the
    // task starts, so `echo x > "$DROVER_OUTPUT"` works under any `user`.
    Status put = client_.PutArchive(
        *id, "/", MakeTarWithFile("drover", 01777, "output", 0666, ""));
    if (!put.ok()) {
      return Failed(put, "creating " + std::string(kContainerOutputPath) +
                             " in the container failed");
    }
  }

  Note("running " + what + " in container " + config.name + " (image " + image +
       ")");
  StepResult result = RunContainer(
      limited, *id, what, out_dir.empty() ? "" : out_dir / "output");
  if (result.infrastructure) return result;

  if (want_output && !result.cancelled) {
    Result<std::string> out =
        out_dir.empty()
            ? client_.ReadFile(*id, std::string(kContainerOutputPath),
                               kMaxOutputBytes + 1)
            : ReadOutputFile(out_dir / "output", kMaxOutputBytes + 1);
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
  if (!out_dir.empty()) DropOutputDir(out_dir);
  return result;
}

// Starts the container, streams its logs, waits for it (stopping it on
// timeout or stop), then, if it failed, inspects it.
StepResult DockerRuntime::Attempt::RunContainer(
    const TaskRun& step, const std::string& id, std::string_view what,
    const std::filesystem::path& output_file) {
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

  // The output file on the worker's host: emptied and the container
  // killed as soon as it grows past its bound (inotify wakes this at
  // every write, so little more than one write's worth gets past).
  std::atomic<bool> output_over{false};
  std::jthread output_guard;
  if (!output_file.empty()) {
    output_guard = std::jthread([&](std::stop_token done) {
      const int fd =
          ::open(output_file.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
      const int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (fd < 0 || in < 0 ||
          inotify_add_watch(in, output_file.c_str(), IN_MODIFY) < 0) {
        if (fd >= 0) ::close(fd);
        if (in >= 0) ::close(in);
        Note("cannot watch the output file's size: " +
             std::string(std::strerror(errno)));
        return;
      }
      // Woken at once when the container is done, not at the next tick.
      const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      {
        // Unregistered before `wake` is closed.
        std::stop_callback on_done(done, [wake] {
          const uint64_t one = 1;
          (void)!::write(wake, &one, sizeof one);
        });
        char events[4096];
        while (!done.stop_requested()) {
          pollfd p[] = {{in, POLLIN, 0}, {wake, POLLIN, 0}};
          ::poll(p, wake >= 0 ? 2 : 1, 100);
          while (::read(in, events, sizeof events) > 0) {
          }
          struct stat st {};
          if (::fstat(fd, &st) != 0 || st.st_size <= kMaxOutputFileBytes) {
            continue;
          }
          (void)!::ftruncate(fd, 0);
          if (!output_over.exchange(true)) {
            Note("the output file grew past " +
                 std::to_string(kMaxOutputFileBytes) + " bytes: emptied, and the " +
                 std::string(what) + " stopped");
            (void)client_.ContainerKill(id, "SIGKILL");
          }
        }
      }
      ::close(fd);
      ::close(in);
      if (wake >= 0) ::close(wake);
    });
  }

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
  if (output_guard.joinable()) {
    output_guard.request_stop();
    output_guard.join();
  }

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
  if (output_over.load()) {
    r.error = "its output file grew past " +
              std::to_string(kMaxOutputFileBytes) +
              " bytes (drover keeps " + std::to_string(kMaxOutputBytes) +
              " of it); the " + std::string(what) + " was stopped";
    return r;
  }
  if (r.timed_out) {
    r.error = "timed out after " + FormatDuration(step.timeout);
    return r;
  }
  if (r.cancelled) {
    r.error = "cancelled";
    return r;
  }
  if (r.exit_code == 0) return r;
  // Only a failure can be an OOM kill that matters (the kernel's SIGKILL
  // gives 137), so a task that succeeds costs no inspect.
  Result<ContainerState> state = client_.ContainerInspect(id);
  if (!state.ok() && state.status().code() == Code::kUnavailable) {
    return Failed(state.status(), "");
  }
  if (state.ok() && state->oom_killed) {
    r.error = step.memory_bytes > 0
                  ? "out of memory: container killed at its limit of " +
                        std::to_string(step.memory_bytes) + " bytes"
                  : "out of memory: container killed by the kernel";
  } else {
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
    for (const std::filesystem::path& dir : output_dirs_) {
      if (Status s = RemoveOutputDir(dir); !s.ok()) {
        Note("could not remove output directory " + dir.string() +
             " (removed at the worker's next start): " + s.message());
      }
    }
    output_dirs_.clear();
  } catch (...) {
    // A destructor must not throw; what is left behind carries the worker's
    // label and CleanupLeftovers removes it on the next start.
  }
}

// ---------------------------------------------------------------------------

DockerRuntime::DockerRuntime(DockerRuntimeOptions options)
    : options_(std::move(options)),
      client_(options_.socket_path),
      bind_output_(options_.output == DockerOutputMethod::kBind &&
                   !options_.work_dir.empty()) {
  // The daemon takes only absolute bind sources.
  std::error_code ec;
  if (!options_.work_dir.empty()) {
    std::filesystem::path abs =
        std::filesystem::absolute(options_.work_dir, ec).lexically_normal();
    if (!abs.has_filename()) abs = abs.parent_path();  // a trailing slash
    if (!ec) options_.work_dir = abs.string();
  }
}

DockerRuntime::DockerRuntime(std::string socket_path,
                             std::optional<RegistryCredentials> credentials)
    : DockerRuntime([&] {
        DockerRuntimeOptions o;
        o.socket_path = std::move(socket_path);
        o.credentials = std::move(credentials);
        return o;
      }()) {}

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

void DockerRuntime::UseArchiveOutput(const std::string& why) {
  if (bind_output_.exchange(false) && options_.warn) {
    options_.warn(why +
                  "; task output files go through the archive API from now "
                  "on (slower)");
  }
}

std::filesystem::path DockerRuntime::OutputRoot(std::string_view worker) const {
  return std::filesystem::path(options_.work_dir) / kOutputRootName /
         NamePart(worker);
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
      // Its output directory, wherever that run's work dir was.
      auto dir = c.labels.find(kOutputDirLabel);
      if (dir != c.labels.end() && IsOutputDirOf(dir->second, worker)) {
        if (Status s = RemoveOutputDir(dir->second); !s.ok()) {
          failures += " " + s.message() + ";";
        }
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
    // Output directories under this work dir whose container was already
    // gone (or whose run used this work dir too).
    if (!options_.work_dir.empty()) {
      if (Status s = RemoveOutputDir(OutputRoot(worker)); !s.ok()) {
        failures += " " + s.message() + ";";
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
