#include "bench_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "drover/client.h"

extern char** environ;

namespace drover::bench {

using namespace std::chrono_literals;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// ------------------------------------------------------------------ Process

Process::Process(const std::vector<std::string>& argv,
                 const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  if (posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ) !=
      0) {
    pid_ = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
}

Process::~Process() {
  if (!Running()) return;
  Kill(SIGTERM);
  if (!Wait(5s)) {
    Kill(SIGKILL);
    Wait(5s);
  }
}

void Process::Kill(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

bool Process::Running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

bool Process::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Running()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

uint64_t Process::RssKib() const { return pid_ > 0 ? RssKibOf(pid_) : 0; }

uint64_t RssKibOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::strtoull(line.c_str() + 6, nullptr, 10);
    }
  }
  return 0;
}

double CpuSecondsOf(pid_t pid, bool children) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command (which may hold spaces), from field 3 on.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  unsigned long long ticks = 0;
  for (int i = 3; i <= 17 && fields >> f; ++i) {
    if (children ? i >= 16 : i == 14 || i == 15) ticks += std::stoull(f);
  }
  return static_cast<double>(ticks) / sysconf(_SC_CLK_TCK);
}

// --------------------------------------------------------------- ScratchDir

ScratchDir::ScratchDir(const std::string& tag) {
  std::string tmpl = "/tmp/drover-bench-" + tag + "-XXXXXX";
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

namespace {
bool keep_scratch = false;
}  // namespace

void KeepScratchDirs(bool keep) { keep_scratch = keep; }

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  if (keep_scratch) {
    Note("kept " + path_);
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ------------------------------------------------------------------- Daemon

namespace {

// Appends the blank-separated words of environment variable `name`, if set.
void AppendWordsOf(const char* name, std::vector<std::string>& argv) {
  const char* value = std::getenv(name);
  if (value == nullptr) return;
  std::istringstream words(value);
  for (std::string w; words >> w;) argv.push_back(w);
}

}  // namespace

Daemon::Daemon(const Setup& setup, std::string dir,
               std::vector<std::string> extra_flags)
    : setup_(setup),
      dir_(std::move(dir)),
      extra_flags_(std::move(extra_flags)) {}

Daemon::~Daemon() = default;

Status Daemon::Start(bool wait_ready) {
  // For profiling: DROVER_BENCH_DROVERD_PREFIX="valgrind --tool=callgrind"
  // runs droverd under that command.
  std::vector<std::string> argv;
  AppendWordsOf("DROVER_BENCH_DROVERD_PREFIX", argv);
  argv.insert(argv.end(),
              {setup_.build_dir + "/droverd", "--data-dir", data_dir(), "--api",
               api(), "--tasks", tasks(), "--heartbeat", heartbeat()});
  argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
  process_ = std::make_unique<Process>(
      argv, dir_ + "/droverd-" + std::to_string(++starts_) + ".log");
  if (!process_->started()) return Status::Internal("cannot start droverd");
  if (!wait_ready) return Status::Ok();
  return WaitReady(30s);
}

Status Daemon::EnableAuth() {
  const std::string auth = dir_ + "/auth";
  for (const char* folder : {"clients", "readers", "workers"}) {
    std::filesystem::create_directories(auth + "/" + folder);
  }
  auto server = NewKeyPair();
  auto client = NewKeyPair();
  auto worker = NewKeyPair();
  if (!server.ok() || !client.ok() || !worker.ok()) {
    return Status::Internal("cannot make key pairs");
  }
  for (const auto& [path, pair] :
       {std::pair<std::string, const KeyPair&>{auth + "/server.key", *server},
        {auth + "/clients/bench.key", *client},
        {auth + "/workers/bench.key", *worker}}) {
    if (Status s = WriteKeyPair(path, pair); !s.ok()) return s;
  }
  // The secret halves are not keys to list.
  std::filesystem::remove(auth + "/clients/bench.key");
  std::filesystem::remove(auth + "/workers/bench.key");
  client_keys_ = ClientKeys{*client, server->public_key};
  worker_keys_ = ClientKeys{*worker, server->public_key};
  extra_flags_.push_back("--auth");
  extra_flags_.push_back(auth);
  return Status::Ok();
}

Status Daemon::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Client client(api(), 200ms, client_keys_);
  while (Clock::now() < deadline) {
    if (client.Call<WorkersReply>(WorkersRequest{}).ok()) return Status::Ok();
    if (!process_->Running()) {
      return Status::Unavailable("droverd exited; see " + dir_);
    }
  }
  return Status::Timeout("droverd did not answer; see " + dir_);
}

void Daemon::Kill(int sig) {
  if (!process_) return;
  process_->Kill(sig);
  if (sig == SIGKILL) process_->Wait(10s);
}

std::unique_ptr<Process> Daemon::StartWorker(const std::string& name,
                                             std::vector<std::string> flags) {
  std::vector<std::string> argv = {setup_.build_dir + "/drover-worker",
                                   "--name",
                                   name,
                                   "--tasks",
                                   tasks(),
                                   "--heartbeat",
                                   heartbeat(),
                                   "--work-dir",
                                   dir_ + "/work-" + name};
  argv.insert(argv.end(), flags.begin(), flags.end());
  // For experiments: DROVER_BENCH_WORKER_FLAGS="--prefetch 4" adds flags
  // to every drover-worker the bench starts.
  AppendWordsOf("DROVER_BENCH_WORKER_FLAGS", argv);
  return std::make_unique<Process>(argv, dir_ + "/worker-" + name + ".log");
}

Status Daemon::WaitWorkerReady(const std::string& name,
                               std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Client client(api(), 2s, client_keys_);
  while (Clock::now() < deadline) {
    auto reply = client.Call<WorkersReply>(WorkersRequest{});
    if (reply.ok()) {
      for (const WorkerView& w : reply->workers) {
        if (w.name == name && w.state == "ready") return Status::Ok();
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  return Status::Timeout("worker " + name + " never became ready; see " + dir_);
}

// ---------------------------------------------------------------- Submitter

Submitter::Submitter(zmq::context_t& ctx, const std::string& api,
                     const std::optional<ClientKeys>& keys)
    : socket_(ctx, zmq::socket_type::dealer) {
  if (keys) UseClientKeys(socket_, *keys);
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::sndhwm, 0);
  socket_.set(zmq::sockopt::rcvhwm, 0);
  socket_.connect(api);
}

Result<std::vector<std::string>> Submitter::SubmitAll(
    const std::vector<std::string>& sources, size_t window,
    std::chrono::milliseconds timeout) {
  std::vector<std::string> ids(sources.size());
  std::map<uint64_t, size_t> in_flight;  // request id -> index
  size_t next = 0, done = 0;
  const auto deadline = Clock::now() + timeout;
  try {
    while (done < sources.size()) {
      while (next < sources.size() && in_flight.size() < window) {
        SubmitRequest req;
        req.id = ++next_id_;
        req.source = sources[next];
        req.file_name = "bench.toml";
        socket_.send(zmq::buffer(Encode(req)), zmq::send_flags::none);
        in_flight[req.id] = next++;
      }
      zmq_pollitem_t in[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq_poll(in, 1, 100);
      if (Clock::now() > deadline) {
        return Status::Timeout("submissions not answered in time");
      }
      zmq::message_t msg;
      while (socket_.recv(msg, zmq::recv_flags::dontwait)) {
        auto frame = Frame::Parse(msg.to_string());
        if (!frame.ok()) return frame.status();
        if (frame->type() == ErrorReply::kType) {
          auto e = frame->As<ErrorReply>();
          std::string why = e.ok() ? e->message : "error";
          if (e.ok() && !e->details.empty()) why += ": " + e->details[0];
          return Status::Internal("submit refused: " + why);
        }
        auto reply = frame->As<SubmitReply>();
        if (!reply.ok()) return reply.status();
        auto it = in_flight.find(reply->id);
        if (it == in_flight.end()) continue;
        ids[it->second] = reply->job_id;
        in_flight.erase(it);
        ++done;
      }
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("submit: ") + e.what());
  }
  return ids;
}

// --------------------------------------------------------------- job files

std::string ShellJob(const std::string& name, size_t tasks,
                     const std::string& run) {
  std::string s = "name = \"" + name + "\"\n";
  s.reserve(tasks * 48 + 32);
  for (size_t i = 0; i < tasks; ++i) {
    s += "[[tasks]]\nname = \"t" + std::to_string(i) + "\"\nrun = \"" + run +
         "\"\ndepends_on = []\n";
  }
  return s;
}

std::string DockerJob(const std::string& name, size_t tasks,
                      const std::string& image, const std::string& run) {
  std::string s = "name = \"" + name + "\"\n";
  for (size_t i = 0; i < tasks; ++i) {
    s += "[[tasks]]\nname = \"t" + std::to_string(i) + "\"\nimage = \"" +
         image + "\"\nrun = \"" + run + "\"\ndepends_on = []\n";
  }
  return s;
}

// ------------------------------------------------------------------ figures

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 50); }

void Figure(const std::string& name, double value, const std::string& unit) {
  if (value >= 100 || value == std::floor(value)) {
    std::printf("%s %.0f %s\n", name.c_str(), value, unit.c_str());
  } else {
    std::printf("%s %.3g %s\n", name.c_str(), value, unit.c_str());
  }
  std::fflush(stdout);
}

void Note(const std::string& text) {
  std::printf("# %s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace drover::bench
