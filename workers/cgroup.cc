#include "cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace drover {
namespace {

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  off_t at = 0;
  while ((n = pread(fd, buf, sizeof buf, at)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Where cgroup v2 is mounted: /sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified on a hybrid one.
std::string Cgroup2Mount() {
  std::istringstream in(ReadFile("/proc/self/mountinfo"));
  for (std::string line; std::getline(in, line);) {
    // ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ...
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, dev, root, mount;
    head >> id >> parent >> dev >> root >> mount;
    if (root == "/") return mount;
  }
  return "";
}

// This process's cgroup v2 path ("0::/path" in /proc/self/cgroup).
std::string OwnCgroup() {
  std::istringstream in(ReadFile("/proc/self/cgroup"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return "";
}

void KillProcs(const std::string& dir) {
  std::istringstream procs(ReadFile(dir + "/cgroup.procs"));
  for (pid_t pid; procs >> pid;) kill(pid, SIGKILL);
}

// Removes drover-PID-... cgroups whose worker process is gone.
void RemoveStale(const std::string& root) {
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return;
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("drover-", 0) != 0) continue;
    const pid_t pid = static_cast<pid_t>(atol(name.c_str() + 7));
    if (pid <= 0 || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) {
      continue;
    }
    const std::string dir = root + "/" + name;
    for (int i = 0; i < 100 && rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i) {
      KillProcs(dir);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  closedir(d);
}

}  // namespace

Cgroup::Cgroup(std::string path, int procs_fd, int events_fd, int kill_fd)
    : path_(std::move(path)),
      procs_fd_(procs_fd),
      events_fd_(events_fd),
      kill_fd_(kill_fd) {}

Cgroup::~Cgroup() {
  KillAll(std::chrono::seconds(1));
  for (int fd : {procs_fd_, events_fd_, kill_fd_}) {
    if (fd >= 0) close(fd);
  }
  rmdir(path_.c_str());
}

bool Cgroup::Populated() const {
  return ReadAll(events_fd_).find("populated 1") != std::string::npos;
}

bool Cgroup::KillAll(std::chrono::milliseconds wait) {
  if (!Populated()) return true;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    // cgroup.kill takes every process at once, new ones forked meanwhile
    // included; without it, each is killed from the list, again and again.
    if (kill_fd_ < 0 || pwrite(kill_fd_, "1", 1, 0) != 1) KillProcs(path_);
    if (!Populated()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Result<CgroupRoot> CgroupRoot::Open() {
  const std::string mount = Cgroup2Mount();
  if (mount.empty()) {
    return Status::Unavailable("no cgroup v2 hierarchy is mounted");
  }
  const std::string own = OwnCgroup();
  if (own.empty()) {
    return Status::Unavailable("this process is in no cgroup v2 cgroup");
  }
  std::string root = mount + (own == "/" ? "" : own);
  // Can it make one there?
  const std::string probe = root + "/drover-" + std::to_string(getpid()) +
                            "-probe";
  if (mkdir(probe.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::PermissionDenied("cannot make cgroups in " + root + ": " +
                                    strerror(errno));
  }
  rmdir(probe.c_str());
  RemoveStale(root);
  return CgroupRoot(std::move(root));
}

Result<std::unique_ptr<Cgroup>> CgroupRoot::Make(int r, int n) const {
  const std::string path = path_ + "/drover-" + std::to_string(getpid()) +
                           "-" + std::to_string(r) + "-" + std::to_string(n);
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::IOError("cannot make the cgroup " + path + ": " +
                           strerror(errno));
  }
  const int procs =
      open((path + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
  const int events =
      open((path + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC);
  const int kill_fd =
      open((path + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC);
  if (procs < 0 || events < 0) {
    const std::string why = strerror(errno);
    for (int fd : {procs, events, kill_fd}) {
      if (fd >= 0) close(fd);
    }
    rmdir(path.c_str());
    return Status::IOError("cannot open the cgroup " + path + ": " + why);
  }
  return std::unique_ptr<Cgroup>(new Cgroup(path, procs, events, kill_fd));
}

}  // namespace drover
