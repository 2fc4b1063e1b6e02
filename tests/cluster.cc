#include "cluster.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace drover::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string BuildPath(const std::string& exe) {
  return std::string(DROVER_BUILD_DIR) + "/" + exe;
}

std::string SourcePath(const std::string& rel) {
  return std::string(DROVER_SOURCE_DIR) + "/" + rel;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

namespace {

pid_t Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd,
            const std::map<std::string, std::string>& env) {
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

Process::Process(std::vector<std::string> argv, std::string log_path,
                 std::map<std::string, std::string> env)
    : log_path_(std::move(log_path)) {
  int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  REQUIRE(fd >= 0);
  pid_ = Spawn(argv, fd, fd, env);
  close(fd);
  REQUIRE(pid_ > 0);
}

Process::~Process() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait(5s);
  }
}

void Process::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

bool Process::Running() {
  if (status_ != -1) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return r == 0;
}

int Process::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(5ms);
  }
  return status_;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::map<std::string, std::string> env,
                         std::chrono::milliseconds timeout) {
  char out_tmpl[] = "/tmp/drover-cmd-out-XXXXXX";
  char err_tmpl[] = "/tmp/drover-cmd-err-XXXXXX";
  int out_fd = mkstemp(out_tmpl);
  int err_fd = mkstemp(err_tmpl);
  pid_t pid = Spawn(argv, out_fd, err_fd, env);
  close(out_fd);
  close(err_fd);
  CommandResult r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = ReadFile(out_tmpl);
  r.err = ReadFile(err_tmpl);
  unlink(out_tmpl);
  unlink(err_tmpl);
  return r;
}

Cluster::Cluster(std::string heartbeat_interval, int liveness)
    : interval_(std::move(heartbeat_interval)), liveness_(liveness) {
  char tmpl[] = "/tmp/drover-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  dir_ = tmpl;
  api_ = "ipc://" + dir_ + "/api";
  tasks_ = "ipc://" + dir_ + "/tasks";
  heartbeat_ = "ipc://" + dir_ + "/heartbeat";
  client_ = std::make_unique<Client>(api_, 5s);
}

Cluster::~Cluster() {
  workers_.clear();
  scheduler_.reset();
  dropped_.clear();
  // A REQUIRE that failed is unwinding: show what the daemons said.
  if (std::uncaught_exceptions() > 0 || std::getenv("DROVER_KEEP_TEST_DIRS")) {
    for (const auto& entry : fs::directory_iterator(dir_)) {
      if (entry.path().extension() != ".log") continue;
      std::string text = ReadFile(entry.path());
      if (text.size() > 6000) text = "..." + text.substr(text.size() - 6000);
      std::cerr << "==== " << entry.path().string() << "\n" << text << "\n";
    }
    std::cerr << "cluster files kept in " << dir_ << "\n";
    return;
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

Process& Cluster::StartScheduler(std::vector<std::string> extra,
                                 bool wait_ready) {
  std::vector<std::string> argv = {
      BuildPath("droverd"),       "--data-dir",  dir_ + "/data",
      "--api",                    api_,          "--tasks",
      tasks_,                     "--heartbeat", heartbeat_,
      "--heartbeat-interval",     interval_,     "--heartbeat-liveness",
      std::to_string(liveness_),  "--log-level", "debug"};
  if (!auth_dir_.empty()) {
    argv.push_back("--auth");
    argv.push_back(auth_dir_);
  }
  // A flag in `extra` replaces the default one (each takes a value).
  for (size_t i = 1; i + 1 < argv.size();) {
    if (std::find(extra.begin(), extra.end(), argv[i]) != extra.end()) {
      argv.erase(argv.begin() + i, argv.begin() + i + 2);
    } else {
      i += 2;
    }
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.insert(argv.begin(), scheduler_prefix_.begin(), scheduler_prefix_.end());
  scheduler_ = std::make_unique<Process>(argv, dir_ + "/droverd.log");
  ++scheduler_starts_;
  if (!wait_ready) return *scheduler_;
  // Serving once a request is answered.
  REQUIRE(Eventually([&] { return client_->Call<WorkersReply>(WorkersRequest{}).ok(); },
                     10s));
  return *scheduler_;
}

void Cluster::DropScheduler() {
  if (scheduler_) dropped_.push_back(std::move(scheduler_));
}

Process& Cluster::StartWorker(const std::string& name,
                              std::vector<std::string> extra) {
  std::vector<std::string> argv = {
      BuildPath("drover-worker"), "--name",     name,
      "--tasks",                  tasks_,       "--heartbeat",
      heartbeat_,                 "--heartbeat-interval", interval_,
      "--work-dir",               dir_ + "/work-" + name,
      "--log-level",              "debug"};
  bool has_runtime = false;
  for (const auto& e : extra) has_runtime |= e == "--runtime";
  if (!has_runtime) {
    argv.push_back("--runtime");
    argv.push_back("shell");
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto& slot = workers_[name];
  if (slot) dropped_.push_back(std::move(slot));
  slot = std::make_unique<Process>(argv, dir_ + "/worker-" + name + ".log");
  return *slot;
}

void Cluster::EnableAuth() {
  auth_dir_ = dir_ + "/auth";
  fs::create_directories(auth_dir_);
  for (const char* folder : {"clients", "readers", "workers"}) {
    fs::create_directories(auth_dir_ + "/" + folder);
  }
  auto server = NewKeyPair();
  REQUIRE(server.ok());
  REQUIRE(WriteKeyPair(auth_dir_ + "/server.key", *server).ok());
  NewKey("test-client", "clients");
  client_ = std::make_unique<Client>(api_, 5s, ClientKeysFor("test-client"));
}

std::string Cluster::NewKey(const std::string& name,
                            const std::string& folder) {
  fs::create_directories(dir_ + "/keys");
  const std::string path = dir_ + "/keys/" + name + ".key";
  auto pair = NewKeyPair();
  REQUIRE(pair.ok());
  REQUIRE(WriteKeyPair(path, *pair).ok());
  if (!folder.empty()) {
    // Written aside and renamed in, as an operator's tools would.
    const std::string listed = auth_dir_ + "/" + folder + "/" + name + ".pub";
    fs::copy_file(path + ".pub", listed + ".tmp");
    fs::rename(listed + ".tmp", listed);
  }
  return path;
}

std::vector<std::string> Cluster::KeyFlags(const std::string& name) const {
  return {"--key", dir_ + "/keys/" + name + ".key", "--server-key",
          auth_dir_ + "/server.key.pub"};
}

ClientKeys Cluster::ClientKeysFor(const std::string& name) const {
  auto keys = LoadClientKeys(dir_ + "/keys/" + name + ".key",
                             auth_dir_ + "/server.key.pub");
  REQUIRE_MESSAGE(keys.ok(), keys.status().ToString());
  REQUIRE(keys->has_value());
  return **keys;
}

CommandResult Cluster::Drover(std::vector<std::string> args,
                              const std::string& as) {
  std::vector<std::string> argv = {BuildPath("drover"), "--api", api_};
  if (!as.empty()) {
    for (const std::string& f : KeyFlags(as)) argv.push_back(f);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

void Cluster::DropWorker(const std::string& name) {
  auto it = workers_.find(name);
  if (it == workers_.end()) return;
  dropped_.push_back(std::move(it->second));
  workers_.erase(it);
}

std::string Cluster::Submit(const std::string& toml,
                            std::map<std::string, std::string> inputs) {
  SubmitRequest req;
  req.source = toml;
  req.file_name = "test.toml";
  req.inputs = std::move(inputs);
  auto reply = client_->Call<SubmitReply>(req);
  if (!reply.ok()) {
    for (const auto& d : client_->last_details()) MESSAGE(d);
  }
  REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
  return reply->job_id;
}

JobView Cluster::Status(const std::string& job_id) {
  StatusRequest req;
  req.job_id = job_id;
  auto reply = client_->Call<StatusReply>(req);
  REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
  return reply->job;
}

JobView Cluster::Wait(const std::string& job_id,
                      std::chrono::milliseconds timeout) {
  JobView last;
  const bool ended = Eventually(
      [&] {
        StatusRequest req;
        req.job_id = job_id;
        auto reply = client_->Call<StatusReply>(req);
        if (!reply.ok()) return false;
        last = reply->job;
        return last.state == "COMPLETED" || last.state == "FAILED" ||
               last.state == "CANCELLED";
      },
      timeout);
  REQUIRE_MESSAGE(ended, "job " << job_id << " still " << last.state);
  return last;
}

std::vector<WorkerView> Cluster::Workers() {
  auto reply = client_->Call<WorkersReply>(WorkersRequest{});
  REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
  return reply->workers;
}

bool Cluster::Eventually(const std::function<bool()>& pred,
                         std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

std::string Cluster::Logs(const std::string& job_id, const std::string& task) {
  std::string out;
  uint64_t after = 0;
  while (true) {
    LogsRequest req;
    req.job_id = job_id;
    req.task = task;
    req.after = after;
    auto reply = client_->Call<LogsReply>(req);
    REQUIRE_MESSAGE(reply.ok(), reply.status().ToString());
    for (const auto& c : reply->chunks) {
      if (c.stream != "drover") out += c.data;
    }
    if (reply->last == after) break;
    after = reply->last;
  }
  return out;
}

std::string Cluster::SchedulerLog() const {
  return ReadFile(dir_ + "/droverd.log");
}

}  // namespace drover::testing
